//! A deflate bomb: a few KiB that would inflate to 64 MiB. In a test binary of its own, so
//! that the process's memory measures this test alone.

mod common;

use common::{bounded, pair_configs};
use duplex::{CloseCode, Config, DeflateConfig, Error, Message};

fn with_deflate(d: DeflateConfig) -> Config {
    Config::default().deflate(Some(d))
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
        let (mut client, mut server) = pair_configs(client, server).await;
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
