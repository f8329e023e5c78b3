//! Timers of an open connection, driven from the read and write paths: keepalive pings with
//! round-trip-time measurement ([`Keepalive`]), and the cut-off for a peer that stops reading
//! ([`WriteStall`]). Neither spawns a task: they run while the application reads or writes,
//! like the close timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::Config;

/// What the keepalive wants done.
#[derive(Debug)]
pub(crate) enum Due {
    /// Send a ping with this payload, then call [`Keepalive::mark_sent`] once it is queued.
    Ping(u64, Bytes),
    /// The last ping went unanswered for this long: fail the connection.
    TimedOut(Duration),
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// No ping outstanding: one is due `interval` after the last byte received.
    Idle,
    /// Ping `id` asked for at `asked`; its pong is awaited.
    Waiting { id: u64, asked: Instant },
}

/// Keepalive of one connection: pings after [`Config::ping_interval`] without receiving
/// anything, fails it when the pong takes longer than [`Config::ping_timeout`], and measures
/// the round-trip time on the way. Without an interval it holds nothing: its state is boxed,
/// so that the many connections that do not ping carry one pointer.
#[derive(Debug)]
pub(crate) struct Keepalive(Option<Box<Pinger>>);

#[derive(Debug)]
struct Pinger {
    interval: Duration,
    timeout: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// While idle: the deadline `timer` was last polled at, and the waker it will wake. Until
    /// then a poll from the same task only reads the clock; `timer` lives in an allocation of
    /// its own, and not touching it per message spares a busy server a cache miss each time.
    armed: Option<(Instant, Waker)>,
    /// Bytes arrived since the last poll (see [`Keepalive::activity`]).
    active: bool,
    last_activity: Instant,
    state: State,
    next_id: u64,
    rtt: Option<Duration>,
    stamp: Stamp,
}

/// When the outstanding ping was queued (a split writer may queue it later than it was asked
/// for): the pong deadline runs from then.
#[derive(Debug, Default)]
struct Stamp(Option<(u64, Instant)>);

impl Stamp {
    fn mark(&mut self, id: u64) {
        self.0 = Some((id, Instant::now()));
    }

    fn sent_at(&self, id: u64) -> Option<Instant> {
        match self.0 {
            Some((sent, at)) if sent == id => Some(at),
            _ => None,
        }
    }
}

/// Keepalive pings carry this prefix and an 8-byte id, so that their pongs are told apart from
/// the pongs of the application's own pings and from unsolicited ones.
const PING_PREFIX: &[u8] = b"duplex-keepalive:";

impl Keepalive {
    pub(crate) fn new(config: &Config) -> Self {
        Keepalive(config.ping_interval.map(|interval| {
            let now = Instant::now();
            Box::new(Pinger {
                interval,
                timeout: config.ping_timeout,
                timer: None,
                armed: None,
                active: false,
                last_activity: now,
                state: State::Idle,
                next_id: 0,
                rtt: None,
                stamp: Stamp::default(),
            })
        }))
    }

    /// Whether no ping awaits its pong (always, when keepalive is off).
    pub(crate) fn is_quiet(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|p| matches!(p.state, State::Idle))
    }

    /// When the next ping is due if nothing arrives before (`None` when keepalive is off or
    /// a ping is outstanding).
    pub(crate) fn next_ping(&self) -> Option<Instant> {
        let p = self.0.as_ref()?;
        let last = if p.active {
            Instant::now()
        } else {
            p.last_activity
        };
        matches!(p.state, State::Idle).then(|| last + p.interval)
    }

    /// Frees the timer (polling sets it again).
    pub(crate) fn release_timer(&mut self) {
        if let Some(p) = &mut self.0 {
            p.timer = None;
            p.armed = None;
        }
    }

    /// Records that the outstanding ping, if one was asked for and not queued yet, was queued
    /// now (by a writer half, when it next flushed).
    pub(crate) fn queued(&mut self) {
        if let Some(p) = &mut self.0 {
            if let State::Waiting { id, .. } = p.state {
                if p.stamp.sent_at(id).is_none() {
                    p.stamp.mark(id);
                }
            }
        }
    }

    /// Records that ping `id` was queued now.
    pub(crate) fn mark_sent(&mut self, id: u64) {
        if let Some(p) = &mut self.0 {
            p.stamp.mark(id);
        }
    }

    /// The round-trip time measured by the last answered keepalive ping.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        self.0.as_ref().and_then(|p| p.rtt)
    }

    /// Bytes arrived: the connection is not idle. Dated by the next poll, which comes as soon
    /// as the connection has nothing more to read: one clock read per wait, not per message.
    pub(crate) fn activity(&mut self) {
        if let Some(p) = &mut self.0 {
            p.active = true;
        }
    }

    /// A pong arrived; if it answers the outstanding keepalive ping, the wait is over.
    pub(crate) fn pong(&mut self, payload: &[u8]) {
        let Some(p) = &mut self.0 else {
            return;
        };
        let State::Waiting { id, asked } = p.state else {
            return;
        };
        if payload.strip_prefix(PING_PREFIX) != Some(&id.to_be_bytes()[..]) {
            return;
        }
        let now = Instant::now();
        let sent = p.stamp.sent_at(id).unwrap_or(asked);
        p.rtt = Some(now.saturating_duration_since(sent));
        p.state = State::Idle;
        p.armed = None;
        p.last_activity = now;
    }

    /// Polls the timer; `Pending` registers the waker for the next deadline (never ready when
    /// keepalive is off).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        match &mut self.0 {
            Some(p) => p.poll(cx),
            None => Poll::Pending,
        }
    }
}

impl Pinger {
    /// Polls the timer; `Pending` registers the waker for the next deadline.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        let mut now = Instant::now();
        if std::mem::take(&mut self.active) {
            self.last_activity = now;
        }
        if let Some((deadline, waker)) = &self.armed {
            // Idle since the timer was set (any other state clears `armed`), and a later
            // activity only moves the real deadline later: the timer wakes this task in time.
            if now < *deadline && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        self.armed = None;
        let interval = self.interval;
        loop {
            // When the timer should fire, and what firing means.
            let (deadline, fires) = match self.state {
                State::Idle => {
                    let due = self.last_activity + interval;
                    (due, Fire::Ping)
                }
                State::Waiting { id, asked } => match (self.timeout, self.stamp.sent_at(id)) {
                    // Measuring only: forget a ping that was never answered, ping again.
                    (None, _) => (asked + interval, Fire::Forget),
                    (Some(timeout), Some(sent)) => (sent + timeout, Fire::Fail(timeout)),
                    // Not written yet (a split writer not in use): look again later.
                    (Some(timeout), None) => (asked + timeout, Fire::Recheck),
                },
            };
            if deadline > now {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                // Traffic moves the deadline later with every message; resetting the timer
                // each time would cost a timer-wheel update per message. A timer left at an
                // earlier deadline just fires early, and the loop sets it again from the
                // clock; only a deadline that moved earlier, or a timer that already fired,
                // needs a reset now.
                if timer.deadline() > deadline || timer.deadline() <= now {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    if matches!(self.state, State::Idle) {
                        self.armed = Some((timer.deadline(), cx.waker().clone()));
                    }
                    return Poll::Pending;
                }
                // Fired: look at the clock again.
                now = Instant::now();
                continue;
            }
            match fires {
                Fire::Ping => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.state = State::Waiting { id, asked: now };
                    let mut payload = Vec::with_capacity(PING_PREFIX.len() + 8);
                    payload.extend_from_slice(PING_PREFIX);
                    payload.extend_from_slice(&id.to_be_bytes());
                    return Poll::Ready(Due::Ping(id, payload.into()));
                }
                Fire::Fail(timeout) => return Poll::Ready(Due::TimedOut(timeout)),
                Fire::Forget => {
                    self.state = State::Idle;
                    self.last_activity = now;
                }
                Fire::Recheck => {
                    if let State::Waiting { id, .. } = self.state {
                        self.state = State::Waiting { id, asked: now };
                    }
                }
            }
        }
    }
}

enum Fire {
    Ping,
    Fail(Duration),
    Forget,
    Recheck,
}

/// Cuts off a peer that stops reading: armed when a write cannot proceed, restarted by any
/// progress, fires after [`Config::write_timeout`] without a byte written.
#[derive(Debug, Default)]
pub(crate) struct WriteStall {
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl WriteStall {
    /// A write attempt returned `Pending`; `progressed` says whether it wrote anything first.
    /// Returns whether the peer has now failed to read for the whole `timeout` (the
    /// connection's [`Config::write_timeout`]; never with `None`).
    pub(crate) fn stalled(
        &mut self,
        progressed: bool,
        timeout: Option<Duration>,
        cx: &mut Context<'_>,
    ) -> bool {
        let Some(timeout) = timeout else {
            return false;
        };
        if !self.armed || progressed {
            let deadline = Instant::now() + timeout;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        match &mut self.timer {
            Some(t) => t.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    /// Everything asked for was written.
    pub(crate) fn clear(&mut self) {
        self.armed = false;
    }
}

/// A transport seen through a window that records whether bytes went through: reads feed the
/// keepalive's idle detection, writes the stall detection.
pub(crate) struct Tracked<'a, S> {
    io: &'a mut S,
    pub(crate) read: bool,
    pub(crate) wrote: bool,
}

impl<'a, S> Tracked<'a, S> {
    pub(crate) fn new(io: &'a mut S) -> Self {
        Tracked {
            io,
            read: false,
            wrote: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut *this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.read = true;
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.io).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote = true;
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut *this.io).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote = true;
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}
