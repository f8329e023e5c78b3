//! `/echo`: every text and binary message goes back unchanged (what the Autobahn|TestSuite
//! tests the server with).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use duplex::{CloseCode, CloseFrame, MaybeTlsStream, Message, WebSocket};
use futures_util::Sink;
use tokio::sync::watch;
use tokio::time::Sleep;
use tracing::info;

use crate::close::CLOSE_SHUTDOWN;
use crate::metrics::Metrics;
use crate::parking::{EchoConnection, Parking};
use crate::shutdown::stopping;

/// Echoes until the client closes or the hub shuts down, then logs how it ended; or, with
/// `parking`, until the connection has been quiet long enough to be parked (the lot starts a
/// new session for it when it has something to read).
///
/// A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// keeps a second copy of its by-value arguments in its state (rust-lang/rust#62958), which
/// for the WebSocket alone is a few hundred bytes more per connection.
// The point is the shape clippy would undo (see above).
#[allow(clippy::manual_async_fn)]
pub(crate) fn run(
    mut session: EchoConnection,
    mut shutdown: watch::Receiver<bool>,
    parking: Option<Parking>,
) -> impl Future<Output = ()> + Send {
    async move {
        let park_after = parking.as_ref().map(|p| p.after);
        let reason = loop {
            let outcome = tokio::select! {
                biased;
                result = echo(&mut session.ws, session.open.metrics(), park_after) => Some(result),
                () = stopping(&mut shutdown) => None,
            };
            break match outcome {
                Some(Ok(Ended::Quiet)) => {
                    let Some(parking) = &parking else { continue };
                    match parking.park(session) {
                        Ok(()) => return,
                        // Busy again, or the hub is shutting down (the next round sees it).
                        Err(back) => {
                            session = back;
                            continue;
                        }
                    }
                }
                Some(Ok(Ended::Closed)) => "closed by peer".to_owned(),
                Some(Err(e)) => format!("ended: {e}"),
                None => close_for_shutdown(&mut session.ws).await,
            };
        };
        info!(
            peer = %session.peer,
            secs = session.opened.elapsed().as_secs_f32(),
            %reason,
            "echo connection closed"
        );
    }
}

async fn close_for_shutdown(ws: &mut WebSocket<MaybeTlsStream>) -> String {
    let frame = CloseFrame::new(CloseCode(CLOSE_SHUTDOWN), "server shutting down");
    // Boxed: the closing handshake's state need not be room in every session.
    let _ = Box::pin(ws.close(Some(frame))).await;
    "closed by server (server shutting down)".to_owned()
}

/// How an echo loop ended without an error.
enum Ended {
    /// The peer closed.
    Closed,
    /// Quiet for the parking time, and idle: the connection is parked.
    Quiet,
}

async fn echo(
    ws: &mut WebSocket<MaybeTlsStream>,
    metrics: &Metrics,
    park_after: Option<Duration>,
) -> duplex::Result<Ended> {
    // Only plain TCP is parked (see parking.rs).
    let plain = matches!(ws.get_ref(), MaybeTlsStream::Plain(_));
    let mut quiet = park_after.filter(|_| plain).map(Quiet::new);
    loop {
        let msg = match &mut quiet {
            None => ws.recv().await,
            Some(quiet) => tokio::select! {
                biased;
                msg = ws.recv() => msg,
                () = poll_fn(|cx| quiet.poll_elapsed(cx)) => {
                    if ws.is_idle() {
                        return Ok(Ended::Quiet);
                    }
                    // Something is in progress (a keepalive ping awaits its pong, say).
                    quiet.touch();
                    continue;
                }
            },
        };
        let Some(msg) = msg else {
            return Ok(Ended::Closed);
        };
        if let Some(quiet) = &mut quiet {
            quiet.touch();
        }
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
        // (`SinkExt::feed` would add its size to every session).
        poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx)).await?;
        Pin::new(&mut *ws).start_send(msg)?;
        metrics.sent(len);
    }
}

/// Tells when a connection has received nothing for a while, at the cost of a flag per
/// message: the timer runs in periods of `after`, and a period in which nothing arrived ends
/// the wait (so a connection is parked after between one and two periods of quiet). While
/// the timer is set for this task, a poll only asks it whether it fired (no clock read, no
/// timer-wheel update: this runs once per message on a busy connection).
struct Quiet {
    after: Duration,
    /// Something arrived in this period.
    busy: bool,
    /// The waker the timer will wake (`None` until polled).
    armed: Option<Waker>,
    timer: Pin<Box<Sleep>>,
}

impl Quiet {
    fn new(after: Duration) -> Self {
        Quiet {
            after,
            busy: false,
            armed: None,
            timer: Box::pin(tokio::time::sleep(after)),
        }
    }

    /// Something arrived.
    fn touch(&mut self) {
        self.busy = true;
    }

    /// Completes at the end of a period in which nothing arrived.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(waker) = &self.armed {
            if !self.timer.is_elapsed() && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                self.armed = Some(cx.waker().clone());
                return Poll::Pending;
            }
            self.armed = None;
            if !std::mem::take(&mut self.busy) {
                return Poll::Ready(());
            }
            let next = tokio::time::Instant::now() + self.after;
            self.timer.as_mut().reset(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::metrics::Metrics;
    use crate::open::test_connection;
    use crate::parking::{EchoConnection, Parking};

    /// A connection that is quiet but not yet parked costs this future (boxed by the
    /// connection's task, docs/BENCHMARKS.md), which must not hold a second copy of the
    /// WebSocket (an `async fn` argument is kept twice) or a `Feed` future with a message slot.
    #[tokio::test]
    async fn an_idle_echo_session_stays_small() {
        let (ws, open) = test_connection(&Arc::new(Metrics::default())).await;
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let (lot, _entrance) = crate::parking::lot();
        let parked = EchoConnection {
            ws,
            peer: "127.0.0.1:1".parse().unwrap(),
            open,
            opened: std::time::Instant::now(),
        };
        let parking = Parking {
            lot,
            after: std::time::Duration::from_secs(1),
        };
        let session = super::run(parked, shutdown, Some(parking));
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1024, "echo session future is {size} bytes");
    }
}
