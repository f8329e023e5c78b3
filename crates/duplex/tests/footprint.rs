//! The memory a connection holds while idle (what ten thousand of them cost a server), and
//! parking: setting an idle connection aside without its buffers and timers.

use std::time::Duration;

use duplex::{MaybeTlsStream, Message, Role, WebSocket};
use duplex_proto::frame::OpCode;

/// Rarely used parts (compression state, a fragmented message in progress, a message held
/// behind its pong, keepalive state) are boxed and the configuration is shared, so the
/// connection itself stays a few hundred bytes.
#[test]
fn a_websocket_is_a_few_hundred_bytes() {
    let size = std::mem::size_of::<WebSocket<MaybeTlsStream>>();
    assert!(size <= 384, "WebSocket<MaybeTlsStream> is {size} bytes");
}

/// A fan-out queues one prepared message per subscriber, and every subscriber's queue reserves
/// room for a block of them up front: a pointer each keeps an idle subscriber's queue small.
#[test]
fn a_prepared_message_is_a_pointer() {
    assert_eq!(
        std::mem::size_of::<duplex::PreparedMessage>(),
        std::mem::size_of::<usize>()
    );
}

fn pair() -> (
    WebSocket<tokio::io::DuplexStream>,
    WebSocket<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let config = duplex::Config::default().keepalive(None, None);
    (
        WebSocket::from_raw(a, Role::Client, config, Default::default()),
        WebSocket::from_raw(b, Role::Server, config, Default::default()),
    )
}

/// A parked connection (no buffers, no timers, no decoder state) is a third of a connection
/// and reads on exactly where it stopped.
#[tokio::test]
async fn a_parked_connection_reads_on_where_it_stopped() {
    let (mut client, mut server) = pair();
    client.send(Message::text("before")).await.unwrap();
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got, Message::text("before"));
    server.send(Message::text("answer")).await.unwrap();
    assert!(server.is_idle());
    let parked = server.into_parked().unwrap();
    let size = std::mem::size_of_val(&parked);
    assert!(size <= 160, "ParkedWebSocket is {size} bytes");
    client.send(Message::text("after")).await.unwrap();
    let mut server = parked.resume();
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got, Message::text("after"));
    let got = client.recv().await.unwrap().unwrap();
    assert_eq!(got, Message::text("answer"));
}

/// Half a fragmented message, or a keepalive ping awaiting its pong, is work in progress: such
/// a connection is not idle and is not parked.
#[tokio::test]
async fn work_in_progress_is_not_idle() {
    let (mut client, mut server) = pair();
    client
        .send_fragment(OpCode::Text, "first half, ".into(), false)
        .await
        .unwrap();
    let pending = tokio::time::timeout(Duration::from_millis(50), server.recv()).await;
    assert!(pending.is_err(), "a message from half of it");
    assert!(!server.is_idle());
    let mut server = server.into_parked().unwrap_err();
    client
        .send_fragment(OpCode::Continuation, "second half".into(), true)
        .await
        .unwrap();
    let whole = server.recv().await.unwrap().unwrap();
    assert_eq!(whole, Message::text("first half, second half"));
    assert!(server.is_idle());

    let config = duplex::Config::default().keepalive(
        Some(Duration::from_millis(20)),
        Some(Duration::from_secs(10)),
    );
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut pinging = WebSocket::from_raw(a, Role::Server, config, Default::default());
    let _peer = WebSocket::from_raw(b, Role::Client, config, Default::default());
    assert!(pinging.is_idle());
    // Reading drives the keepalive: after 20 ms quiet it sends a ping, then awaits the pong
    // (the peer here never reads, so it never answers).
    let _ = tokio::time::timeout(Duration::from_millis(100), pinging.recv()).await;
    assert!(!pinging.is_idle());
    assert!(pinging.next_keepalive_ping().is_none());
}
