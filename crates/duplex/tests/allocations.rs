//! Steady-state allocations: echoing small messages (ones that fit the read buffer) allocates
//! nothing per message once the connection has warmed up. Counted with a global allocator that
//! counts the allocations made on the test's own thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use duplex::{Config, Message, Role, WebSocket};
use futures_util::SinkExt;
use tokio::io::DuplexStream;

struct Counting;

thread_local! {
    /// Allocations seen on this thread while counting is on; `None` while off.
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

fn bump() {
    // `try_with`: the allocator may run while the thread's locals are being torn down.
    let _ = COUNT.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the only addition is a counter in a const-initialised thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning the allocations it made on this thread.
async fn count<F: std::future::Future<Output = ()>>(f: F) -> u64 {
    COUNT.with(|c| c.set(Some(0)));
    f.await;
    COUNT.with(|c| c.take()).unwrap_or(0)
}

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
fn the_counter_sees_allocations() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let n = rt.block_on(count(async {
        std::hint::black_box(Vec::<u8>::with_capacity(100));
        std::hint::black_box(Bytes::from(vec![1u8; 10]));
    }));
    assert_eq!(n, 2);
}

#[test]
fn echoing_small_text_messages_does_not_allocate() {
    let per_message = allocations_per_message(Message::text("0123456789abcdefghij"), 1);
    assert!(per_message < 0.01, "{per_message} allocations per message");
}

#[test]
fn echoing_batches_of_binary_messages_does_not_allocate() {
    let msg = Message::Binary(Bytes::from(vec![7u8; 1024]));
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
