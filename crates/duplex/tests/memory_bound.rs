//! A client that sends 100 MiB without reading what the server sends back cannot make the
//! server's memory grow, and another client is served promptly meanwhile.
//!
//! Memory is measured exactly, with the testkit's counting global allocator in this test
//! binary: the peak of live heap bytes above what was live before the flood starts. The flooding client is
//! written by hand and reuses one pre-encoded frame, so what grows is the server's.
//!
//! Two floods of 100 MiB each, in 64 KiB binary messages:
//! - answered with a small acknowledgement per message, which the client never reads: the
//!   acknowledgements fit in the socket buffers, the server keeps reading, all 100 MiB go
//!   through and the server holds about one message at a time;
//! - echoed, which the client never reads: the server's writes stop, `send` waits at
//!   `write_buffer_size` (back-pressure, so the server stops reading too and the kernel stops
//!   the client), and after `write_timeout` without a byte written the server drops the
//!   connection.

use std::time::{Duration, Instant};

use duplex::{Config, Error, Message};
use duplex_testkit::alloc::{peak_bytes, reset_peak, Counting};
use duplex_testkit::frame::{encode, BINARY, FIN};
use duplex_testkit::http::upgrade_request;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;
const OFFERED: usize = 100 * MIB;
const MESSAGE: usize = 64 * 1024;
/// The stated bound: the server may hold at most this much more heap than before a flood,
/// whatever the flood's size (its limits are 128 KiB of write buffer, one 64 KiB message in
/// assembly, and a read buffer of at most 1 MiB).
const BOUND: usize = 4 * MIB;

/// One masked 64 KiB binary frame, as a client sends it (mask key 0: the payload is
/// unchanged, which is valid; what matters is the mask bit).
fn frame() -> Vec<u8> {
    encode(FIN | BINARY, MESSAGE as u64, &[b'x'; MESSAGE], Some([0; 4]))
}

/// Connects, upgrades by hand, then writes `OFFERED` bytes of frames without ever reading.
/// Returns how many bytes went out and how it ended.
async fn flood(addr: std::net::SocketAddr, frame: &[u8]) -> (usize, std::io::Result<()>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(upgrade_request("/").as_bytes())
        .await
        .unwrap();
    let mut sent = 0;
    while sent < OFFERED {
        if let Err(e) = tcp.write_all(frame).await {
            return (sent, Err(e));
        }
        sent += frame.len();
    }
    (sent, Ok(()))
}

/// Round trips of a small message by a library client while the flood runs; returns the
/// slowest.
async fn probe(
    addr: std::net::SocketAddr,
    until: impl std::future::Future<Output = ()>,
) -> Duration {
    let (mut ws, _) = duplex::connect(&format!("ws://{addr}/")).await.unwrap();
    let mut slowest = Duration::ZERO;
    let probing = async {
        loop {
            let started = Instant::now();
            ws.send(Message::text("ping?")).await.unwrap();
            let reply = ws.recv().await.unwrap().unwrap();
            assert!(reply.is_text());
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = probing => unreachable!(),
        () = until => {}
    }
    slowest
}

/// A server that answers each data message with `answer(msg)`, reporting how each
/// connection ended.
async fn server(
    config: Config,
    answer: fn(Message) -> Message,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Option<Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ended_tx, ended) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let result = async {
                    let mut ws = duplex::accept_with(tcp, config, |_| Ok(())).await?;
                    while let Some(msg) = ws.recv().await {
                        let msg = msg?;
                        if msg.is_text() || msg.is_binary() {
                            ws.send(answer(msg)).await?;
                        }
                    }
                    Ok::<_, Error>(())
                }
                .await;
                let _ = ended_tx.send(result.err());
            });
        }
    });
    (addr, ended)
}

fn ack(msg: Message) -> Message {
    if msg.is_binary() {
        Message::text("ok")
    } else {
        msg
    }
}

fn echo(msg: Message) -> Message {
    msg
}

/// What one flood came to.
struct Flooded {
    /// Bytes the flooding client wrote, and how its writing ended.
    sent: usize,
    result: std::io::Result<()>,
    /// The server's heap peak above the baseline taken before the flood.
    growth: usize,
    /// The slowest probe round trip meanwhile.
    slowest: Duration,
    took: Duration,
    /// How each of the server's connections ended.
    ended: tokio::sync::mpsc::UnboundedReceiver<Option<Error>>,
}

/// Floods a fresh server that answers with `answer`, probing it meanwhile, and measures.
async fn measure(config: Config, answer: fn(Message) -> Message, frame: &[u8]) -> Flooded {
    let (addr, ended) = server(config, answer).await;
    let baseline = reset_peak();
    let started = Instant::now();
    let flooding = flood(addr, frame);
    let mut done = None;
    let slowest = probe(addr, async {
        done = Some(flooding.await);
    })
    .await;
    let (sent, result) = done.unwrap();
    Flooded {
        sent,
        result,
        growth: peak_bytes() - baseline,
        slowest,
        took: started.elapsed(),
        ended,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_from_a_client_that_never_reads_stays_bounded() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let frame = frame();
        let config = Config::default().write_timeout(Some(Duration::from_secs(1)));

        // 1. Small answers, never read: everything goes through.
        let mut acked = measure(config, ack, &frame).await;
        eprintln!(
            "acknowledged flood: {} MiB sent in {:?}, server heap peak +{} KiB, slowest probe {:?}",
            acked.sent / MIB,
            acked.took,
            acked.growth / 1024,
            acked.slowest
        );
        acked.result.unwrap();
        assert!(acked.sent >= OFFERED);
        assert!(acked.growth < BOUND, "heap grew by {} bytes", acked.growth);
        assert!(
            acked.slowest < Duration::from_millis(500),
            "{:?}",
            acked.slowest
        );
        // Both connections (flood and probe) end before the next measurement, so that memory
        // they free does not hide memory the next flood takes.
        for _ in 0..2 {
            acked.ended.recv().await.unwrap();
        }

        // 2. Echoes, never read: back-pressure, then the connection is dropped.
        let mut echoed = measure(config, echo, &frame).await;
        eprintln!(
            "echoed flood: {} MiB accepted before the server dropped the connection after {:?}, \
             server heap peak +{} KiB, slowest probe {:?}",
            echoed.sent / MIB,
            echoed.took,
            echoed.growth / 1024,
            echoed.slowest
        );
        // The kernel's socket buffers take some MiB; the server takes no more than its limits.
        assert!(echoed.result.is_err(), "the flood was never stopped");
        assert!(echoed.sent < OFFERED / 2, "{} bytes went in", echoed.sent);
        assert!(
            echoed.growth < BOUND,
            "heap grew by {} bytes",
            echoed.growth
        );
        assert!(
            echoed.slowest < Duration::from_millis(500),
            "{:?}",
            echoed.slowest
        );
        let first = echoed.ended.recv().await.unwrap();
        assert!(
            matches!(first, Some(Error::Timeout("write"))),
            "the flooding connection ended with {first:?}"
        );
    })
    .await
    .expect("did not finish in time");
}
