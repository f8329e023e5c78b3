//! The floor for memory per idle connection of any tokio server with a task per connection:
//! answers the WebSocket handshake with the least possible code, then keeps nothing but the
//! socket and a task waiting for it to become readable (and discards what arrives). Not a
//! WebSocket implementation (it never parses a frame): `bench/compare.sh` uses it only in the
//! idle-memory run, to show how much of a real server's figure the runtime itself costs.

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = duplex_bench_peers::listen("tokio-floor").await?;
    loop {
        let (mut tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            // The handshake, boxed so that the task keeps only the waiting state below.
            let answered = Box::pin(async {
                let mut head = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tcp.read(&mut chunk).await?;
                    if n == 0 || head.len() > 8192 {
                        return Err(std::io::ErrorKind::InvalidData.into());
                    }
                    head.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&head);
                let key = text
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| value.trim().to_owned())
                    })
                    .ok_or(std::io::ErrorKind::InvalidData)?;
                let accept = base64::engine::general_purpose::STANDARD
                    .encode(Sha1::digest(format!("{key}{GUID}").as_bytes()));
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                tcp.write_all(response.as_bytes()).await
            })
            .await;
            if answered.is_err() {
                return;
            }
            loop {
                if tcp.readable().await.is_err() {
                    return;
                }
                let mut discard = [0u8; 64];
                match tcp.try_read(&mut discard) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        });
    }
}
