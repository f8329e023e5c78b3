//! `/echo`: every text and binary message goes back unchanged (what the Autobahn|TestSuite
//! tests the server with).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use duplex::{CloseCode, CloseFrame, MaybeTlsStream, Message, WebSocket};
use futures_util::SinkExt;
use tokio::sync::watch;
use tracing::info;

use crate::close::CLOSE_SHUTDOWN;
use crate::metrics::Metrics;

/// Echoes until the client closes or the hub shuts down, then logs how it ended.
pub(crate) async fn run(
    mut ws: WebSocket<MaybeTlsStream>,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let outcome = tokio::select! {
        result = echo(&mut ws, &metrics) => Some(result),
        _ = shutdown.wait_for(|stopping| *stopping) => None,
    };
    let reason = match outcome {
        Some(Ok(())) => "closed by peer".to_owned(),
        Some(Err(e)) => format!("ended: {e}"),
        None => {
            let frame = CloseFrame::new(CloseCode(CLOSE_SHUTDOWN), "server shutting down");
            let _ = ws.close(Some(frame)).await;
            "closed by server (server shutting down)".to_owned()
        }
    };
    info!(
        %peer,
        secs = started.elapsed().as_secs_f32(),
        %reason,
        "echo connection closed"
    );
}

async fn echo(ws: &mut WebSocket<MaybeTlsStream>, metrics: &Metrics) -> duplex::Result<()> {
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            let len = match &msg {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
                _ => 0,
            };
            metrics.received(len);
            // Queued, not flushed: `recv` writes the queue before it next waits for the
            // socket, so a burst of messages read at once is echoed with one write.
            ws.feed(msg).await?;
            metrics.sent(len);
        }
    }
    Ok(())
}
