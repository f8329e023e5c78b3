//! Steady-state allocations: echoing small messages (ones that fit the read buffer) allocates
//! nothing per message once the connection has warmed up. Counted with the testkit's global
//! allocator, which counts the allocations made on the test's own thread (the counter's own
//! test is in `crates/testkit/tests/alloc.rs`).

use bytes::BytesMut;
use duplex::{Config, Message, Role, WebSocket};
use duplex_testkit::alloc::{count_allocations_async as count, Counting};
use futures_util::SinkExt;
use tokio::io::DuplexStream;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn pair() -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let client = WebSocket::from_raw(a, Role::Client, Config::default(), BytesMut::new());
    let server = WebSocket::from_raw(b, Role::Server, Config::default(), BytesMut::new());
    (client, server)
}

/// The client sends `batch` messages in one write, the server echoes each (one write per
/// batch), the client reads the echoes and checks them.
async fn round(
    client: &mut WebSocket<DuplexStream>,
    server: &mut WebSocket<DuplexStream>,
    msg: &Message,
    batch: usize,
) {
    for _ in 0..batch {
        client.feed(msg.clone()).await.expect("client send");
    }
    client.flush().await.expect("client flush");
    for _ in 0..batch {
        let got = server.recv().await.expect("open").expect("server receive");
        server.feed(got).await.expect("server send");
    }
    server.flush().await.expect("server flush");
    for _ in 0..batch {
        let echo = client.recv().await.expect("open").expect("client receive");
        assert_eq!(echo.len(), msg.len());
    }
}

/// Allocations per message echoed in steady state.
fn allocations_per_message(msg: Message, batch: usize) -> f64 {
    const WARMUP: usize = 200;
    const ROUNDS: usize = 2000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, mut server) = pair();
        for _ in 0..WARMUP {
            round(&mut client, &mut server, &msg, batch).await;
        }
        let allocs = count(async {
            for _ in 0..ROUNDS {
                round(&mut client, &mut server, &msg, batch).await;
            }
        })
        .await;
        allocs as f64 / (ROUNDS * batch) as f64
    })
}

#[test]
fn echoing_small_text_messages_does_not_allocate() {
    let per_message = allocations_per_message(Message::text("0123456789abcdefghij"), 1);
    assert!(per_message < 0.01, "{per_message} allocations per message");
}

#[test]
fn echoing_batches_of_binary_messages_does_not_allocate() {
    let msg = Message::Binary(bytes::Bytes::from(vec![7u8; 1024]));
    let per_message = allocations_per_message(msg, 16);
    assert!(per_message < 0.01, "{per_message} allocations per message");
}

/// The shape of a chat server: the connection split into halves, each message received
/// answered with a frame encoded once ([`duplex::PreparedMessage`]), as fan-out sends it.
#[test]
fn split_halves_and_prepared_frames_do_not_allocate() {
    const WARMUP: usize = 200;
    const ROUNDS: usize = 2000;
    const BATCH: usize = 8;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let allocs = rt.block_on(async {
        let (mut client, server) = pair();
        let (mut reader, mut writer) = server.split();
        let msg = Message::text("0123456789abcdefghij");
        let prepared = duplex::PreparedMessage::text("someone: 0123456789abcdefghij");
        for _ in 0..WARMUP {
            split_round(
                &mut client,
                &mut reader,
                &mut writer,
                &msg,
                &prepared,
                BATCH,
            )
            .await;
        }
        count(async {
            for _ in 0..ROUNDS {
                split_round(
                    &mut client,
                    &mut reader,
                    &mut writer,
                    &msg,
                    &prepared,
                    BATCH,
                )
                .await;
            }
        })
        .await
    });
    let per_message = allocs as f64 / (ROUNDS * BATCH) as f64;
    assert!(per_message < 0.01, "{per_message} allocations per message");
}

async fn split_round(
    client: &mut WebSocket<DuplexStream>,
    reader: &mut duplex::WebSocketReader<DuplexStream>,
    writer: &mut duplex::WebSocketWriter<DuplexStream>,
    msg: &Message,
    prepared: &duplex::PreparedMessage,
    batch: usize,
) {
    for _ in 0..batch {
        client.feed(msg.clone()).await.expect("client send");
    }
    client.flush().await.expect("client flush");
    for _ in 0..batch {
        reader.recv().await.expect("open").expect("server receive");
        writer.send_prepared(prepared).await.expect("server send");
    }
    for _ in 0..batch {
        let got = client.recv().await.expect("open").expect("client receive");
        assert_eq!(got.len(), prepared.message().len());
    }
}
