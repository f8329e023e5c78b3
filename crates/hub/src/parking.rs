//! Parking of idle echo connections. A `/echo` connection quiet for
//! [`HubConfig::park_after`](crate::HubConfig::park_after) gives up its task and its session
//! state: it goes to the lot, one task for the whole hub that waits for any parked socket to
//! become readable (or for its keepalive ping to fall due) and then starts a new session for
//! it. An idle connection then costs its socket and its `WebSocket` (a few hundred bytes)
//! instead of also a task and a session future (docs/BENCHMARKS.md, memory per idle
//! connection).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use duplex::{MaybeTlsStream, ParkedWebSocket, WebSocket};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::ReadBuf;
use tokio::sync::{mpsc, watch};

use crate::open::OpenSession;
use crate::shutdown::stopping;

/// Where and when an idle echo connection is parked.
#[derive(Debug, Clone)]
pub(crate) struct Parking {
    pub(crate) lot: Lot,
    /// Quiet time after which a connection is parked.
    pub(crate) after: Duration,
}

impl Parking {
    /// Hands an idle connection to the lot; gives it back when it is busy after all or the
    /// lot takes no more (the hub is shutting down, which its session then sees).
    // The connection comes back unchanged (see `EchoConnection::park`).
    #[allow(clippy::result_large_err)]
    pub(crate) fn park(&self, conn: EchoConnection) -> Result<(), EchoConnection> {
        let parked = conn.park()?;
        self.lot.park(parked).map_err(|back| back.resume())
    }
}

/// An echo connection with what its session needs.
#[derive(Debug)]
pub(crate) struct EchoConnection {
    pub(crate) ws: WebSocket<MaybeTlsStream>,
    pub(crate) peer: SocketAddr,
    pub(crate) open: OpenSession,
    /// When the connection was opened (for the log line when it ends).
    pub(crate) opened: Instant,
}

impl EchoConnection {
    /// The connection in its parked form; `Err(self)` when it is not idle, or not over plain
    /// TCP (TLS may hold decrypted bytes the socket does not show).
    // The connection comes back unchanged when it cannot be parked (see `into_parked`).
    #[allow(clippy::result_large_err)]
    pub(crate) fn park(self) -> Result<ParkedEcho, EchoConnection> {
        if !matches!(self.ws.get_ref(), MaybeTlsStream::Plain(_)) {
            return Err(self);
        }
        let EchoConnection {
            ws,
            peer,
            open,
            opened,
        } = self;
        match ws.into_parked() {
            Ok(ws) => Ok(ParkedEcho {
                ws,
                peer,
                open,
                opened,
            }),
            Err(ws) => Err(EchoConnection {
                ws,
                peer,
                open,
                opened,
            }),
        }
    }
}

/// A parked echo connection: its `WebSocket` in its smallest form.
#[derive(Debug)]
pub(crate) struct ParkedEcho {
    ws: ParkedWebSocket<MaybeTlsStream>,
    peer: SocketAddr,
    open: OpenSession,
    opened: Instant,
}

impl ParkedEcho {
    /// The connection again, for a new session.
    pub(crate) fn resume(self) -> EchoConnection {
        EchoConnection {
            ws: self.ws.resume(),
            peer: self.peer,
            open: self.open,
            opened: self.opened,
        }
    }
}

/// Where sessions park their connections.
#[derive(Debug, Clone)]
pub(crate) struct Lot(mpsc::UnboundedSender<ParkedEcho>);

/// The lot's receiving end, until [`run`] takes it.
#[derive(Debug)]
pub(crate) struct Entrance(mpsc::UnboundedReceiver<ParkedEcho>);

/// A lot and its entrance.
pub(crate) fn lot() -> (Lot, Entrance) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Lot(tx), Entrance(rx))
}

impl Lot {
    /// Parks a connection; gives it back when the lot takes no more (the hub is shutting
    /// down).
    // The connection comes back unchanged (see `EchoConnection::park`).
    #[allow(clippy::result_large_err)]
    pub(crate) fn park(&self, conn: ParkedEcho) -> Result<(), ParkedEcho> {
        self.0.send(conn).map_err(|e| e.0)
    }
}

/// Runs the lot until the hub shuts down: `resume` is called for every connection that
/// becomes readable or, every `sweep` (when keepalive is on), has its keepalive ping due; and
/// at shutdown for every connection still parked (its session then closes it with 1001, as for
/// a connection that was not parked).
pub(crate) async fn run(
    Entrance(mut entering): Entrance,
    mut shutdown: watch::Receiver<bool>,
    sweep: Option<Duration>,
    resume: impl Fn(EchoConnection),
) {
    let leave = |conn: ParkedEcho| {
        conn.open.metrics().connections_parked.fetch_sub(1, Relaxed);
        resume(conn.resume());
    };
    let mut waiting: FuturesUnordered<Readable> = FuturesUnordered::new();
    // Parked connections do not run their keepalive timers: a sweep resumes those whose next
    // ping is due. Only connections quiet for a whole ping interval are concerned, so a coarse
    // period is enough, and the sweep walks the lot without moving anything.
    let mut ticks = sweep.map(|period| {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        tokio::select! {
            entered = entering.recv() => match entered {
                Some(conn) => {
                    conn.open.metrics().connections_parked.fetch_add(1, Relaxed);
                    waiting.push(Readable { conn: Some(conn), waker: None });
                }
                None => break,
            },
            Some(ready) = waiting.next(), if !waiting.is_empty() => {
                if let Some(conn) = ready {
                    leave(conn);
                }
            }
            _ = tick(&mut ticks) => {
                let soon = Instant::now() + sweep.unwrap_or_default();
                for readable in waiting.iter_mut() {
                    let due = readable.conn.as_ref().and_then(|c| c.ws.next_keepalive_ping());
                    if due.is_some_and(|due| due <= soon) {
                        if let Some(conn) = readable.take() {
                            leave(conn);
                        }
                    }
                }
            }
            () = stopping(&mut shutdown) => break,
        }
    }
    entering.close();
    for mut readable in waiting {
        if let Some(conn) = readable.take() {
            leave(conn);
        }
    }
    while let Ok(conn) = entering.try_recv() {
        resume(conn.resume());
    }
}

/// The next sweep; never without one.
async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Waits until a parked connection's socket is readable (data, end of stream or an error:
/// the resumed session finds out which). Completes with `None` once its connection was taken
/// out by a sweep.
struct Readable {
    conn: Option<ParkedEcho>,
    /// The waker of the last poll: a sweep that takes the connection out wakes it, so that the
    /// emptied future completes and leaves the lot.
    waker: Option<Waker>,
}

impl Readable {
    fn take(&mut self) -> Option<ParkedEcho> {
        let conn = self.conn.take();
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        conn
    }
}

impl Future for Readable {
    type Output = Option<ParkedEcho>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ParkedEcho>> {
        let Some(conn) = &self.conn else {
            return Poll::Ready(None);
        };
        // Only plain TCP is parked (see `EchoConnection::park`); anything else goes straight
        // back.
        if let MaybeTlsStream::Plain(tcp) = conn.ws.get_ref() {
            // A peek rather than `poll_read_ready`: readiness can be left over from the
            // handshake's reads, while a peek that finds nothing clears it and waits.
            let mut byte = [0u8; 1];
            if tcp.poll_peek(cx, &mut ReadBuf::new(&mut byte)).is_pending() {
                if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    self.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        Poll::Ready(self.conn.take())
    }
}
