//! permessage-deflate between the library's client and server.

mod common;

use common::{bounded, pair_configs};
use duplex::{Config, DeflateConfig, Message};

fn with_deflate(d: DeflateConfig) -> Config {
    Config::default().deflate(Some(d))
}

#[tokio::test]
async fn negotiated_and_messages_roundtrip_both_ways() {
    bounded(async {
        let on = with_deflate(DeflateConfig::default());
        let (mut client, mut server) = pair_configs(on, on).await;
        assert!(client.deflate().is_some() && server.deflate().is_some());
        let json = r#"{"type":"message","room":"general","text":"hello"}"#.repeat(50);
        let messages = [
            Message::text("tiny"), // below the threshold: sent uncompressed
            Message::text(json.clone()),
            Message::text(json), // context takeover: compresses to almost nothing
            Message::binary(vec![7u8; 300_000]),
            Message::text(""),
            Message::text("κόσμε ".repeat(1000)),
        ];
        for m in &messages {
            client.send(m.clone()).await.unwrap();
            assert_eq!(&server.recv().await.unwrap().unwrap(), m);
            server.send(m.clone()).await.unwrap();
            assert_eq!(&client.recv().await.unwrap().unwrap(), m);
        }
        let (closed, end) = tokio::join!(client.close(None), server.recv());
        closed.unwrap();
        assert!(matches!(end, Some(Ok(Message::Close(None)))), "{end:?}");
    })
    .await;
}

#[tokio::test]
async fn every_window_and_context_setting_interoperates() {
    bounded(async {
        for bits in [9, 12, 15] {
            for reset in [false, true] {
                let c = with_deflate(
                    DeflateConfig::default()
                        .window_bits(bits)
                        .no_context_takeover(reset),
                );
                // The server allows any window, so the client's choice is what counts.
                let s = with_deflate(
                    DeflateConfig::default()
                        .window_bits(15)
                        .peer_no_context_takeover(!reset),
                );
                let (mut client, mut server) = pair_configs(c, s).await;
                let p = client.deflate().copied().unwrap();
                assert_eq!(p.compress_window_bits, bits);
                assert_eq!(server.deflate().unwrap().decompress_window_bits, bits);
                for i in 0..20 {
                    let m = Message::text(format!("message {i} ").repeat(40));
                    client.send(m.clone()).await.unwrap();
                    assert_eq!(server.recv().await.unwrap().unwrap(), m);
                    server.send(m.clone()).await.unwrap();
                    assert_eq!(client.recv().await.unwrap().unwrap(), m);
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn not_negotiated_unless_both_want_it() {
    bounded(async {
        let on = with_deflate(DeflateConfig::default());
        let (mut client, mut server) = pair_configs(on, Config::default()).await;
        assert!(client.deflate().is_none() && server.deflate().is_none());
        client.send(Message::text("x".repeat(1000))).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("x".repeat(1000))
        );
        let (client, server) = pair_configs(Config::default(), on).await;
        assert!(client.deflate().is_none() && server.deflate().is_none());
    })
    .await;
}
