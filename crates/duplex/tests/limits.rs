//! The hard limit on queued outgoing bytes (`max_write_buffer_size`): code that queues without
//! waiting for the peer (a fan-out loop using `queue_prepared`) gets an error and the
//! connection is dropped, instead of memory growing while the peer does not read. (Size limits
//! on what is received are in `protocol_errors.rs`; back-pressure and the write timeout in
//! `loopback.rs` and `memory_bound.rs`.)

mod common;

use common::{bounded, serve_one};
use duplex::{Config, Error, Message, PreparedMessage};
use duplex_testkit::net::raw_client;

#[tokio::test]
async fn queueing_past_max_write_buffer_size_drops_the_connection() {
    bounded(async {
        let config = Config::default().max_write_buffer_size(1024 * 1024);
        let (addr, server) = serve_one(config, |mut ws| async move {
            let msg = PreparedMessage::binary(vec![0u8; 64 * 1024]);
            let mut queued = 0;
            let err = loop {
                match ws.queue_prepared(&msg) {
                    Ok(()) => queued += 1,
                    Err(e) => break e,
                }
            };
            (
                queued,
                err,
                ws.buffered(),
                ws.send(Message::text("more")).await,
            )
        });
        // A client that connects and never reads.
        let _client = raw_client(addr, "/").await;
        let (queued, err, buffered, after) = server.await.unwrap();
        // 16 frames of 64 KiB and a 4-byte header take the queue just past 1 MiB; the next
        // one is refused.
        assert_eq!(queued, 16);
        assert!(matches!(err, Error::WriteBufferFull), "{err:?}");
        assert!(!err.is_timeout(), "a full queue is not a timeout");
        assert_eq!(buffered, 0, "the queue was not freed");
        assert!(matches!(after, Err(Error::Closed)), "{after:?}");
    })
    .await
}

#[tokio::test]
async fn split_writer_has_the_same_limit() {
    bounded(async {
        let config = Config::default().max_write_buffer_size(256 * 1024);
        let (addr, server) = serve_one(config, |ws| async move {
            let (_reader, mut writer) = ws.split();
            // `start_send` without waiting in `poll_ready`, as code ignoring the Sink
            // contract would: the queue grows until the limit stops it.
            use futures_util::Sink;
            let msg = Message::binary(vec![0u8; 64 * 1024]);
            let mut result = Ok(());
            for _ in 0..10 {
                result = std::pin::Pin::new(&mut writer).start_send(msg.clone());
                if result.is_err() {
                    break;
                }
            }
            result
        });
        let _client = raw_client(addr, "/").await;
        let result = server.await.unwrap();
        assert!(matches!(result, Err(Error::WriteBufferFull)), "{result:?}");
    })
    .await
}
