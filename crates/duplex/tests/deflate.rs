//! permessage-deflate between the library's client and server.

mod common;

use common::{bounded, listen};
use duplex::{CloseCode, Config, DeflateConfig, Error, MaybeTlsStream, Message, WebSocket};
use tokio::net::TcpStream;

async fn pair(client: Config, server: Config) -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    let (listener, url) = listen().await;
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        duplex::server::accept_with(tcp, server, |_| Ok(()))
            .await
            .unwrap()
    };
    let connect = async {
        duplex::ClientBuilder::new(&format!("{url}/"))
            .unwrap()
            .config(client)
            .connect()
            .await
            .unwrap()
            .0
    };
    tokio::join!(connect, accept)
}

fn with_deflate(d: DeflateConfig) -> Config {
    Config::default().deflate(Some(d))
}

#[tokio::test]
async fn negotiated_and_messages_roundtrip_both_ways() {
    bounded(async {
        let on = with_deflate(DeflateConfig::default());
        let (mut client, mut server) = pair(on, on).await;
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
                let s = with_deflate(DeflateConfig::default().peer_no_context_takeover(!reset));
                let (mut client, mut server) = pair(c, s).await;
                let p = client.deflate().copied().unwrap();
                assert_eq!(p.compress_window_bits, bits);
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
        let (mut client, mut server) = pair(on, Config::default()).await;
        assert!(client.deflate().is_none() && server.deflate().is_none());
        client.send(Message::text("x".repeat(1000))).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("x".repeat(1000))
        );
        let (client, server) = pair(Config::default(), on).await;
        assert!(client.deflate().is_none() && server.deflate().is_none());
    })
    .await;
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_deflate_bomb_is_closed_with_1009_without_inflating_it() {
    bounded(async {
        // The client may send anything; the server allows 1 MiB messages.
        let client = with_deflate(DeflateConfig::default())
            .max_message_size(1 << 30)
            .max_frame_size(1 << 30);
        let server = with_deflate(DeflateConfig::default()).max_message_size(1 << 20);
        let (mut client, mut server) = pair(client, server).await;
        // 64 MiB of zeros compress to about 64 KiB on the wire.
        let bomb = Message::binary(vec![0u8; 64 << 20]);
        let before = rss_kib();
        client.send(bomb).await.unwrap();
        let err = server.recv().await.unwrap().unwrap_err();
        assert_eq!(err.close_code(), Some(CloseCode::TOO_BIG), "{err}");
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::MessageTooLarge { .. })
        ));
        // The server never held the inflated 64 MiB (the client's own copy is freed by now).
        if let (Some(before), Some(after)) = (before, rss_kib()) {
            assert!(
                after < before + 16 * 1024,
                "RSS grew from {before} KiB to {after} KiB"
            );
        }
        match client.recv().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::TOO_BIG),
            other => panic!("expected a close frame, got {other:?}"),
        }
    })
    .await;
}
