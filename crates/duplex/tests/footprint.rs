//! The memory a connection holds while idle: what ten thousand of them cost a server.

use duplex::{MaybeTlsStream, WebSocket};

/// Rarely used parts (compression state, a fragmented message in progress, a message held
/// behind its pong, keepalive state) are boxed and the configuration is shared, so the
/// connection itself stays a few hundred bytes (it was 1,040 before they were).
#[test]
fn a_websocket_is_a_few_hundred_bytes() {
    let size = std::mem::size_of::<WebSocket<MaybeTlsStream>>();
    assert!(size <= 384, "WebSocket<MaybeTlsStream> is {size} bytes");
}
