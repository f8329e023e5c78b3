//! Plain TCP echo: whatever arrives goes back, no framing, no parsing. The ceiling for a
//! server on this runtime; `duplex bench --raw-tcp` drives it with the same message sizes and
//! the same number of messages in flight as the WebSocket runs.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = duplex_bench_peers::listen("tcp").await?;
    loop {
        let (mut tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tcp.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
