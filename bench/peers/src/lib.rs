//! What the peer echo servers share: the listening socket and the command line.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds `127.0.0.1:PORT` (the first argument; 0 or none: any free port) and prints
/// `listening on ws://127.0.0.1:PORT/` on the first line of stdout, which the compare script
/// reads.
pub async fn listen(name: &str) -> std::io::Result<TcpListener> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    println!("{name} listening on ws://{addr}/");
    Ok(listener)
}
