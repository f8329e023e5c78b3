//! Helpers shared by the integration tests: bounded tests and connected pairs over loopback
//! TCP. Raw peers (hand-written frames, handshakes, responses) and test certificates are in
//! `duplex-testkit`.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use duplex::{Config, MaybeTlsStream, WebSocket};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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

/// Accepts one TCP connection on an ephemeral loopback port and runs `serve` on it. Returns
/// the address to connect to and the task.
pub fn accept_one<F, Fut>(serve: F) -> (SocketAddr, JoinHandle<Fut::Output>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = TcpListener::from_std(listener).unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        serve(tcp).await
    });
    (addr, task)
}

/// A duplex server for one connection on an ephemeral loopback port: accepts it with
/// `config` (and no callback), then runs `serve` on the WebSocket. Returns the address to
/// connect to and the task.
pub fn serve_one<F, Fut>(config: Config, serve: F) -> (SocketAddr, JoinHandle<Fut::Output>)
where
    F: FnOnce(WebSocket<TcpStream>) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    accept_one(move |tcp| async move {
        let ws = duplex::accept_with(tcp, config, |_| Ok(())).await.unwrap();
        serve(ws).await
    })
}

/// A connected (client, server) pair where both ends use `config`.
pub async fn pair_with(config: Config) -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    pair_configs(config, config).await
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
