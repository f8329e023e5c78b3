//! `recv()` is cancel safe: dropping it in a `tokio::select!` loses no bytes and no partial
//! frame, even when frames arrive spread over many reads.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{bounded, pair, Rng};
use duplex::{Message, Role, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

const KIB: usize = 1024;

/// Message sizes from 1 byte to `max`, mostly small with a share of large ones, so that
/// frames of every size arrive cut at arbitrary points across reads.
fn sizes(n: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| match i {
            0 => 1,
            1 => max,
            _ => match rng.next() % 10 {
                0 => rng.range((64 * KIB).min(max / 2), max),
                1..=3 => rng.range(2 * KIB, (64 * KIB).min(max)),
                _ => rng.range(1, 2 * KIB),
            },
        })
        .collect()
}

/// The messages to send: even ones text with multi-byte characters (so UTF-8 validation is
/// also interrupted mid-character), odd ones binary; every one has distinct content.
fn messages(sizes: &[usize]) -> Vec<Message> {
    let max = sizes.iter().copied().max().unwrap_or(0);
    let binary: Bytes = (0..max + 4096).map(|i| (i * 31 % 251) as u8).collect();
    // "a" "é" "✓" "🦀": 1 + 2 + 3 + 4 bytes, boundaries at 0, 1, 3, 6 in each cycle of 10.
    let text = "aé✓🦀".repeat((max + 4096) / 10 + 1);
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let start = 10 * (i % 300) + [0, 1, 3, 6][i % 4];
            if i % 2 == 0 {
                let mut end = start + len;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                Message::text(&text[start..end])
            } else {
                Message::Binary(binary.slice(start..start + len))
            }
        })
        .collect()
}

/// What the receiver expects: every message, preceded every `ping_every` messages by a ping.
fn with_pings(msgs: &[Message], ping_every: Option<usize>) -> Vec<Message> {
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if ping_every.is_some_and(|k| i % k == 0) {
            out.push(Message::Ping(Bytes::from(format!("ping {i}"))));
        }
        out.push(m.clone());
    }
    out
}

async fn send_all<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, msgs: &[Message]) {
    for m in msgs {
        ws.send(m.clone()).await.unwrap();
    }
}

fn check(i: usize, got: Message, want: &Message) {
    if &got != want {
        panic!(
            "message {i} differs: got {} bytes ({:?}...), want {} bytes ({:?}...)",
            got.len(),
            &got.clone().into_payload()[..got.len().min(16)],
            want.len(),
            &want.clone().into_payload()[..want.len().min(16)],
        );
    }
}

/// Receives `want.len()` messages with `recv()` racing a 1 ms interval; returns how many
/// times the interval won (and so how many `recv()` calls were dropped, some mid-frame).
async fn recv_racing_interval<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    want: &[Message],
) -> usize {
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut ticks = 0;
    let mut i = 0;
    while i < want.len() {
        tokio::select! {
            got = ws.recv() => {
                check(i, got.expect("stream ended early").unwrap(), &want[i]);
                i += 1;
            }
            _ = ticker.tick() => ticks += 1,
        }
    }
    ticks
}

/// Receives `want.len()` messages, dropping `recv()` every second time it is polled: each
/// call gets one poll after the one that returned `Pending`, then is cancelled.
async fn recv_racing_yield<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    want: &[Message],
) -> usize {
    let mut cancelled = 0;
    let mut i = 0;
    while i < want.len() {
        tokio::select! {
            biased;
            got = ws.recv() => {
                check(i, got.expect("stream ended early").unwrap(), &want[i]);
                i += 1;
            }
            () = tokio::task::yield_now() => cancelled += 1,
        }
    }
    cancelled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recv_racing_an_interval_loses_nothing() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let msgs = messages(&sizes(2000, 200 * KIB, 1));
        let want = with_pings(&msgs, Some(100));
        let sender = tokio::spawn({
            let msgs = msgs.clone();
            async move {
                for (i, m) in msgs.into_iter().enumerate() {
                    if i % 100 == 0 {
                        let ping = Message::Ping(Bytes::from(format!("ping {i}")));
                        server.send(ping).await.unwrap();
                    }
                    server.send(m).await.unwrap();
                }
                server
            }
        });
        let ticks = recv_racing_interval(&mut client, &want).await;
        let mut server = sender.await.unwrap();
        assert!(ticks > 0, "the interval never fired, nothing was cancelled");
        // Every ping was answered exactly once, in order, despite the cancellations.
        for i in (0..msgs.len()).step_by(100) {
            assert_eq!(
                server.recv().await.unwrap().unwrap(),
                Message::Pong(Bytes::from(format!("ping {i}")))
            );
        }
        // Nothing else is on the wire.
        client.send(Message::text("end")).await.unwrap();
        assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("end"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_recv_racing_an_interval_loses_nothing() {
    // Client to server: masked frames, unmasked piece by piece as they arrive.
    bounded(async {
        let (mut client, mut server) = pair().await;
        let msgs = messages(&sizes(2000, 200 * KIB, 2));
        let sender = tokio::spawn({
            let msgs = msgs.clone();
            async move {
                send_all(&mut client, &msgs).await;
                client
            }
        });
        let ticks = recv_racing_interval(&mut server, &msgs).await;
        let _client = sender.await.unwrap();
        assert!(ticks > 0, "the interval never fired, nothing was cancelled");
    })
    .await
}

#[tokio::test]
async fn tiny_pipe_forces_partial_reads_and_cancellation_every_poll() {
    bounded(async {
        // A 64-byte in-memory pipe: every frame header and payload arrives in pieces.
        let (a, b) = tokio::io::duplex(64);
        let mut client =
            WebSocket::from_raw(a, Role::Client, Default::default(), Default::default());
        let mut server =
            WebSocket::from_raw(b, Role::Server, Default::default(), Default::default());
        let to_server = messages(&sizes(300, 16 * KIB, 3));
        let to_client = messages(&sizes(300, 16 * KIB, 4));

        // Client to server: the server's recv() is dropped every other poll.
        let sender = tokio::spawn({
            let msgs = to_server.clone();
            async move {
                send_all(&mut client, &msgs).await;
                client
            }
        });
        let cancelled = recv_racing_yield(&mut server, &to_server).await;
        let mut client = sender.await.unwrap();
        assert!(cancelled > 0);

        // Server to client.
        let sender = tokio::spawn({
            let msgs = to_client.clone();
            async move {
                send_all(&mut server, &msgs).await;
                server
            }
        });
        recv_racing_yield(&mut client, &to_client).await;
        let mut server = sender.await.unwrap();

        // The connection is still in a clean state: a close handshake completes.
        let server_side = async {
            assert!(server.recv().await.unwrap().unwrap().is_close());
            assert!(server.recv().await.is_none());
        };
        let (closed, ()) = tokio::join!(client.close(None), server_side);
        closed.unwrap();
    })
    .await
}

#[tokio::test]
async fn tiny_pipe_with_interval() {
    bounded(async {
        let (a, b) = tokio::io::duplex(64);
        let mut client =
            WebSocket::from_raw(a, Role::Client, Default::default(), Default::default());
        let mut server =
            WebSocket::from_raw(b, Role::Server, Default::default(), Default::default());
        let msgs = messages(&sizes(200, 32 * KIB, 5));
        let sender = tokio::spawn({
            let msgs = msgs.clone();
            async move {
                send_all(&mut client, &msgs).await;
                client
            }
        });
        recv_racing_interval(&mut server, &msgs).await;
        sender.await.unwrap();
    })
    .await
}
