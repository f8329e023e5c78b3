//! Echo server on tokio-tungstenite, as its own echo example writes it: the read half
//! forwarded into the write half (which batches writes while more messages are ready).

use futures_util::{StreamExt, TryStreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = duplex_bench_peers::listen("tokio-tungstenite").await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let (write, read) = ws.split();
            let _ = read
                .try_filter(|m| {
                    std::future::ready(matches!(m, Message::Text(_) | Message::Binary(_)))
                })
                .forward(write)
                .await;
        });
    }
}
