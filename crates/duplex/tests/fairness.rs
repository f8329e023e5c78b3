//! A peer that floods a connection does not keep its thread from the runtime's other tasks:
//! one read can bring thousands of small frames, and handing them out counts against the
//! task's cooperative budget like reading a socket does, so the reading task yields every so
//! often (tokio's `coop`) instead of only when the flood is over.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use common::bounded;
use duplex::{Config, Role, WebSocket};
use duplex_testkit::frame::{masked, FIN, TEXT};
use tokio::io::AsyncWriteExt;

const MESSAGES: usize = 50_000;

#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_small_messages_yields_to_other_tasks() {
    bounded(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut flood = Vec::new();
        for i in 0..MESSAGES {
            flood.extend(masked(FIN | TEXT, format!("{i}").as_bytes()));
        }
        // Written up front: every read of the server finds thousands of frames.
        client.write_all(&flood).await.unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let (ticks, done) = (ticks.clone(), done.clone());
            async move {
                while !done.load(Relaxed) {
                    ticks.fetch_add(1, Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut ws =
            WebSocket::from_raw(server, Role::Server, Config::default(), Default::default());
        let (mut run, mut longest, mut seen) = (0, 0, ticks.load(Relaxed));
        for i in 0..MESSAGES {
            let msg = ws.recv().await.expect("open").expect("a message");
            assert_eq!(msg.as_text(), Some(format!("{i}").as_str()));
            let now = ticks.load(Relaxed);
            if now == seen {
                run += 1;
                longest = longest.max(run);
            } else {
                (run, seen) = (0, now);
            }
        }
        done.store(true, Relaxed);
        ticker.await.unwrap();
        assert!(
            longest <= 1_000,
            "{longest} messages in a row without letting another task run"
        );
    })
    .await
}
