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

const WARMUP: usize = 200;
const ROUNDS: usize = 2000;

/// `rounds` times: the client sends `batch` messages in one write, the server echoes each (one
/// write per batch), the client reads the echoes and checks them.
async fn echo_rounds(
    rounds: usize,
    client: &mut WebSocket<DuplexStream>,
    server: &mut WebSocket<DuplexStream>,
    msg: &Message,
    batch: usize,
) {
    for _ in 0..rounds {
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
}

/// Allocations per message echoed in steady state.
fn allocations_per_message(msg: Message, batch: usize) -> f64 {
    let allocs = runtime().block_on(async {
        let (mut client, mut server) = pair();
        echo_rounds(WARMUP, &mut client, &mut server, &msg, batch).await;
        count(echo_rounds(ROUNDS, &mut client, &mut server, &msg, batch)).await
    });
    allocs as f64 / (ROUNDS * batch) as f64
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
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
    const BATCH: usize = 8;
    let allocs = runtime().block_on(async {
        let (mut client, server) = pair();
        let (mut reader, mut writer) = server.split();
        let mut halves = Halves {
            client: &mut client,
            reader: &mut reader,
            writer: &mut writer,
            msg: Message::text("0123456789abcdefghij"),
            prepared: duplex::PreparedMessage::text("someone: 0123456789abcdefghij"),
        };
        halves.rounds(WARMUP, BATCH).await;
        count(halves.rounds(ROUNDS, BATCH)).await
    });
    let per_message = allocs as f64 / (ROUNDS * BATCH) as f64;
    assert!(per_message < 0.01, "{per_message} allocations per message");
}

/// A client and a server's split halves answering each message with a prepared one.
struct Halves<'a> {
    client: &'a mut WebSocket<DuplexStream>,
    reader: &'a mut duplex::WebSocketReader<DuplexStream>,
    writer: &'a mut duplex::WebSocketWriter<DuplexStream>,
    msg: Message,
    prepared: duplex::PreparedMessage,
}

impl Halves<'_> {
    async fn rounds(&mut self, rounds: usize, batch: usize) {
        for _ in 0..rounds {
            for _ in 0..batch {
                self.client
                    .feed(self.msg.clone())
                    .await
                    .expect("client send");
            }
            self.client.flush().await.expect("client flush");
            for _ in 0..batch {
                self.reader
                    .recv()
                    .await
                    .expect("open")
                    .expect("server receive");
                self.writer
                    .send_prepared(&self.prepared)
                    .await
                    .expect("server send");
            }
            for _ in 0..batch {
                let got = self
                    .client
                    .recv()
                    .await
                    .expect("open")
                    .expect("client receive");
                assert_eq!(got.len(), self.prepared.message().len());
            }
        }
    }
}
