//! Raw-socket peers: a WebSocket handshake written by hand, HTTP heads read byte by byte,
//! frames read from a stream, and the checks a test makes at the end of a connection. (The
//! heads themselves are written and parsed by [`crate::http`].)
//!
//! Readers take any `AsyncRead`: a `TcpStream` (reads exactly what they need, so nothing after a
//! head or frame is consumed) or a `tokio::io::BufReader` around one (fewer reads, for floods).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::frame::{self, Frame, CLOSE, PONG};
use crate::http::{header, parse_response, switching_protocols, upgrade_request, RawResponse};
use crate::ACCEPT;

/// How long [`expect_eof`] waits for the peer to end the connection.
pub const EOF_WAIT: Duration = Duration::from_secs(6);

/// Reads an HTTP head, up to and including the blank line, one byte at a time so that
/// nothing after it is consumed. Panics if the connection ends inside it.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = r.read_u8().await.unwrap_or_else(|e| {
            panic!(
                "connection ended inside the head ({e}): {:?}",
                String::from_utf8_lossy(&head)
            )
        });
        head.push(b);
    }
    String::from_utf8(head).expect("an ASCII head")
}

/// Sends `request` on a fresh connection to `addr` and reads the response until the server
/// ends the connection.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("send the request");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read the response");
    parse_response(&raw)
}

/// Connects to `addr` and performs the opening handshake for `path` by hand (checking the 101
/// and its accept key); returns the socket, ready for raw frames.
pub async fn raw_client(addr: SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.write_all(upgrade_request(path).as_bytes())
        .await
        .expect("send the request");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some(ACCEPT),
        "{head}"
    );
    tcp
}

/// The server's half of the handshake by hand: reads the request head from `io` and answers
/// `101` with the right accept key. Returns the request head.
pub async fn raw_accept<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> String {
    let head = read_head(io).await;
    let key = header(&head, "sec-websocket-key").expect("a Sec-WebSocket-Key");
    let response = switching_protocols(&crate::accept_key(key), "");
    io.write_all(response.as_bytes())
        .await
        .expect("send the 101");
    head
}

/// Reads one frame of any kind (its payload unmasked, [`Frame::masked`] telling whether it was).
pub async fn read_any_frame<R: AsyncRead + Unpin>(r: &mut R) -> Frame {
    let mut head = vec![0u8; 2];
    r.read_exact(&mut head).await.expect("a frame header");
    let extra = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    } + if head[1] & 0x80 != 0 { 4 } else { 0 };
    head.resize(2 + extra, 0);
    r.read_exact(&mut head[2..]).await.expect("a frame header");
    let (b0, key, len, _) = frame::decode_header(&head).expect("a whole header");
    let mut payload = vec![0; usize::try_from(len).expect("a length that fits")];
    r.read_exact(&mut payload).await.expect("a frame payload");
    if let Some(key) = key {
        frame::unmask(&mut payload, key);
    }
    frame::frame(b0, key.is_some(), payload)
}

/// Reads one frame a server sent; panics if it is masked (servers never mask).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Frame {
    let frame = read_any_frame(r).await;
    assert!(
        !frame.masked,
        "a server must not mask its frames: {frame:?}"
    );
    frame
}

/// Reads one frame a client sent; panics if it is not masked (clients always mask).
pub async fn read_client_frame<R: AsyncRead + Unpin>(r: &mut R) -> Frame {
    let frame = read_any_frame(r).await;
    assert!(frame.masked, "a client must mask its frames: {frame:?}");
    frame
}

/// Checks that the server fails the connection with `code`: a close frame carrying it (pongs
/// for earlier pings may come first), final, with a UTF-8 reason, and then the end of the
/// connection with nothing after it ([`expect_eof`]). `what` names the case in failures.
pub async fn expect_close<R: AsyncRead + Unpin>(r: &mut R, what: &str, code: u16) -> Frame {
    let mut frame = read_frame(r).await;
    while frame.opcode == PONG {
        frame = read_frame(r).await;
    }
    assert_eq!(
        frame.opcode, CLOSE,
        "{what}: expected a close frame, got {frame:?}"
    );
    assert!(frame.fin, "{what}: a fragmented close frame");
    assert!(
        frame.payload.len() <= 125,
        "{what}: a close frame over 125 bytes"
    );
    assert_eq!(
        frame.close_code(),
        Some(code),
        "{what}: expected close code {code}"
    );
    std::str::from_utf8(frame.close_reason()).expect("the reason is UTF-8");
    expect_eof(r, what).await;
    frame
}

/// Checks that the peer ends the connection within [`EOF_WAIT`] and sends nothing more.
pub async fn expect_eof<R: AsyncRead + Unpin>(r: &mut R, what: &str) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(EOF_WAIT, r.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "{what}: the peer kept the connection open");
    assert!(
        rest.is_empty(),
        "{what}: bytes after the close frame: {rest:?}"
    );
}
