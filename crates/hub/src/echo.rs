//! `/echo`: every text and binary message goes back unchanged (what the Autobahn|TestSuite
//! tests the server with).

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use duplex::{CloseCode, CloseFrame, MaybeTlsStream, Message, WebSocket};
use futures_util::Sink;
use tokio::sync::watch;
use tracing::info;

use crate::close::CLOSE_SHUTDOWN;
use crate::metrics::Metrics;
use crate::routes::OpenSession;

/// Echoes until the client closes or the hub shuts down, then logs how it ended.
///
/// A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// keeps a second copy of its by-value arguments in its state (rust-lang/rust#62958), which
/// for the WebSocket alone is a kilobyte more per idle connection.
// The point is the shape clippy would undo (see above).
#[allow(clippy::manual_async_fn)]
pub(crate) fn run(
    mut ws: WebSocket<MaybeTlsStream>,
    peer: SocketAddr,
    open: OpenSession,
    mut shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send {
    async move {
        let started = Instant::now();
        let outcome = tokio::select! {
            result = echo(&mut ws, open.metrics()) => Some(result),
            _ = shutdown.wait_for(|stopping| *stopping) => None,
        };
        let reason = match outcome {
            Some(Ok(())) => "closed by peer".to_owned(),
            Some(Err(e)) => format!("ended: {e}"),
            None => {
                let frame = CloseFrame::new(CloseCode(CLOSE_SHUTDOWN), "server shutting down");
                // Boxed: the closing handshake's state need not be room in every session.
                let _ = Box::pin(ws.close(Some(frame))).await;
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
}

async fn echo(ws: &mut WebSocket<MaybeTlsStream>, metrics: &Metrics) -> duplex::Result<()> {
    while let Some(msg) = ws.recv().await {
        let msg = msg?;
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => continue,
        };
        metrics.received(len);
        // Queued, not flushed: `recv` writes the queue before it next waits for the socket, so
        // a burst of messages read at once is echoed with one write. `poll_ready` waits only
        // while the peer leaves too much unread; no future holding the message is kept
        // (`SinkExt::feed` would add its size to every idle connection).
        poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx)).await?;
        Pin::new(&mut *ws).start_send(msg)?;
        metrics.sent(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use duplex::{MaybeTlsStream, Role, WebSocket};

    use crate::metrics::Metrics;
    use crate::routes::OpenSession;

    /// What an idle echo connection costs beyond its socket and task is this future (boxed by
    /// the connection's task, docs/BENCHMARKS.md): it once held two copies of the WebSocket
    /// (an `async fn` argument is kept twice) and a `Feed` future with a message slot.
    #[tokio::test]
    async fn an_idle_echo_session_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let ws = WebSocket::from_raw(
            MaybeTlsStream::Plain(tcp),
            Role::Server,
            Default::default(),
            Default::default(),
        );
        let open = OpenSession::new(&Arc::new(Metrics::default()));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let session = super::run(ws, "127.0.0.1:1".parse().unwrap(), open, shutdown);
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1024, "echo session future is {size} bytes");
    }
}
