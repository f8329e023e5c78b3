//! Helpers shared by the integration tests: bounded tests, connected pairs over loopback TCP,
//! and a hand-written client for talking raw HTTP and raw frames to a duplex server.
#![allow(dead_code)]

pub mod certs;

use std::future::Future;
use std::time::Duration;

use duplex::{Config, MaybeTlsStream, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single test.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Runs `fut`, failing the test if it takes longer than [`LIMIT`].
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("test did not finish in time")
}

/// A listener on an ephemeral loopback port, and the `ws://` URL of its root.
pub async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("ws://{addr}"))
}

/// A connected (client, server) pair made with `duplex::connect` and `duplex::accept`.
pub async fn pair() -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    let (listener, url) = listen().await;
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        duplex::accept(tcp).await.unwrap()
    };
    let client = async { duplex::connect(&format!("{url}/")).await.unwrap().0 };
    tokio::join!(client, server)
}

/// A connected (client, server) pair where both ends use `config`.
pub async fn pair_with(config: Config) -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    let (listener, url) = listen().await;
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        duplex::accept_with(tcp, config, |_| Ok(())).await.unwrap()
    };
    let client = async {
        duplex::ClientBuilder::new(&format!("{url}/"))
            .unwrap()
            .config(config)
            .connect()
            .await
            .unwrap()
            .0
    };
    tokio::join!(client, server)
}

/// The RFC 6455 section 1.3 sample key and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A valid upgrade request for `/`.
pub fn upgrade_request() -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads an HTTP head (up to and including the blank line), one byte at a time so that
/// nothing after it is consumed.
pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tcp
            .read_u8()
            .await
            .expect("connection ended inside the head");
        head.push(b);
    }
    String::from_utf8(head).unwrap()
}

/// A parsed HTTP response: status, headers (names lowercased) and body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole HTTP response.
pub fn parse_response(raw: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status = parts.next().unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Sends `request` on a fresh connection to `addr` and reads the response until the server
/// closes the connection.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    parse_response(&raw)
}

/// Connects to `addr` and performs the opening handshake by hand; returns the socket, ready
/// for raw frames.
pub async fn raw_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(upgrade_request().as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    let resp = parse_response(head.as_bytes());
    assert_eq!(resp.status, 101, "{head}");
    assert_eq!(resp.header("sec-websocket-accept"), Some(ACCEPT));
    tcp
}

/// Encodes a frame as a client would (masked), with any opcode and FIN bit.
pub fn masked_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(opcode, fin, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// Encodes a frame with an optional mask.
pub fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// An unmasked frame read from a server: FIN bit, opcode, payload.
#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Reads one frame a server sent (servers never mask).
pub async fn read_frame(tcp: &mut TcpStream) -> RawFrame {
    let b0 = tcp.read_u8().await.unwrap();
    let b1 = tcp.read_u8().await.unwrap();
    assert_eq!(b1 & 0x80, 0, "a server must not mask its frames");
    let len = match b1 & 0x7f {
        126 => tcp.read_u16().await.unwrap() as usize,
        127 => tcp.read_u64().await.unwrap() as usize,
        n => n as usize,
    };
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload).await.unwrap();
    RawFrame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload,
    }
}

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// The payload of message `i` of a stream, `len` bytes of printable ASCII that depend on `i`,
/// so a message that is truncated, shifted or swapped with another is caught.
pub fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| b'!' + ((i * 7 + j) % 90) as u8).collect()
}

/// A connected (client, server) pair, each end with its own config.
pub async fn pair_configs(
    client: Config,
    server: Config,
) -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    let (listener, url) = listen().await;
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        duplex::accept_with(tcp, server, |_| Ok(())).await.unwrap()
    };
    let connect = async {
        duplex::ClientBuilder::new(&format!("{url}/"))
            .unwrap()
            .config(client)
            .connect()
            .await
            .unwrap()
            .0
    };
    tokio::join!(connect, accept)
}
