//! A message prepared once reaches many connections unchanged.

mod common;

use common::{bounded, pair};
use duplex::{Error, Message, PreparedMessage};

#[tokio::test]
async fn one_prepared_message_reaches_every_client() {
    bounded(async {
        let (mut c1, mut s1) = pair().await;
        let (mut c2, mut s2) = pair().await;
        let text = PreparedMessage::text("to everyone");
        let binary = PreparedMessage::binary(vec![0u8; 70_000]);
        for server in [&mut s1, &mut s2] {
            server.send_prepared(&text).await.unwrap();
            server.queue_prepared(&binary).unwrap();
            server.send(Message::text("flushes both")).await.unwrap();
        }
        for client in [&mut c1, &mut c2] {
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text("to everyone")
            );
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::binary(vec![0u8; 70_000])
            );
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text("flushes both")
            );
        }
    })
    .await;
}

#[tokio::test]
async fn clients_cannot_send_prepared_frames() {
    bounded(async {
        let (mut client, _server) = pair().await;
        let err = client
            .send_prepared(&PreparedMessage::text("unmasked"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
    })
    .await;
}

#[tokio::test]
async fn compressed_broadcasts_decode_between_connection_own_messages() {
    use duplex::{Config, DeflateConfig};
    bounded(async {
        let client = Config::default().deflate(Some(DeflateConfig::default()));
        // A server that resets its compressor after every message shares one compressed copy
        // of a broadcast; one with context takeover sends it uncompressed.
        let shared =
            Config::default().deflate(Some(DeflateConfig::default().no_context_takeover(true)));
        let own = Config::default().deflate(Some(DeflateConfig::default()));
        let (mut c1, mut s1) = common::pair_configs(client, shared).await;
        let (mut c2, mut s2) = common::pair_configs(client, own).await;
        let text = "the same news for every member of the room; ".repeat(8);
        let broadcast = PreparedMessage::text(text.clone());
        for server in [&mut s1, &mut s2] {
            server.send(Message::text(text.clone())).await.unwrap();
            server.send_prepared(&broadcast).await.unwrap();
            server
                .send(Message::text(format!("{text} and one more")))
                .await
                .unwrap();
        }
        for client in [&mut c1, &mut c2] {
            assert!(client.deflate().is_some());
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text(text.clone())
            );
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text(text.clone())
            );
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text(format!("{text} and one more"))
            );
        }
    })
    .await;
}
