//! The fan-out workload: one publisher and many subscribers in one chat room, the publisher
//! kept at most `--in-flight` messages ahead of the slowest delivery.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex::{Message, WebSocket};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::connections::{close, Ctx};
use super::measure::{histogram, record, Latencies};

/// Slots of the fan-out delivery counts: more than any sensible `--in-flight`.
const RING: usize = 4096;

/// Fan-out bookkeeping shared by the publisher and the subscribers.
#[derive(Debug)]
pub(super) struct Fanout {
    /// Subscribers connected and still receiving.
    pub(super) open: AtomicU64,
    /// Deliveries of message `seq`, in slot `seq % RING`.
    counts: Vec<AtomicU64>,
    /// The message the publisher waits to see delivered to every open subscriber.
    wait_seq: AtomicU64,
    wake: Notify,
    /// The instant timestamps in messages count from.
    epoch: Instant,
    /// Subscribers that received at least one message.
    pub(super) joined: AtomicU64,
    /// Told once every subscriber received a message.
    pub(super) primed: Notify,
    /// The number of the last probe, and how many subscribers received it.
    final_probe: AtomicU64,
    final_seen: AtomicU64,
}

/// The longest wait for every subscriber to be in the room.
pub(super) const PRIMING: Duration = Duration::from_secs(120);

impl Fanout {
    pub(super) fn new() -> Self {
        Fanout {
            open: AtomicU64::new(0),
            counts: (0..RING).map(|_| AtomicU64::new(0)).collect(),
            wait_seq: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
            epoch: Instant::now(),
            joined: AtomicU64::new(0),
            primed: Notify::new(),
            final_probe: AtomicU64::new(u64::MAX),
            final_seen: AtomicU64::new(0),
        }
    }

    fn delivered(&self, seq: u64) {
        let n = self.counts[seq as usize % RING].fetch_add(1, Relaxed) + 1;
        if seq == self.wait_seq.load(Relaxed) && n >= self.open.load(Relaxed) {
            self.wake.notify_one();
        }
    }

    fn left(&self) {
        self.open.fetch_sub(1, Relaxed);
        self.wake.notify_one();
    }
}

/// The publisher of the fan-out workload: sends stamped messages, waiting before message
/// `seq` until message `seq - in_flight` reached every subscriber.
pub(super) async fn publish<S>(
    mut ws: WebSocket<S>,
    ctx: Ctx,
    fanout: Arc<Fanout>,
    size: usize,
    in_flight: usize,
) -> Latencies
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ctx.ready.wait().await;
    // Probes (sequence number 0) until every subscriber has received one, then a last probe
    // that every subscriber must receive: messages arrive in order, so the probes' backlog
    // is then delivered, and the measured messages do not queue behind it.
    let priming = Instant::now();
    let mut probe = 0u64;
    let mut last = false;
    while priming.elapsed() < PRIMING {
        let everyone = fanout.open.load(Relaxed);
        if last && fanout.final_seen.load(Relaxed) >= everyone {
            break;
        }
        if !last && fanout.joined.load(Relaxed) >= everyone {
            last = true;
            fanout.final_probe.store(probe + 1, Relaxed);
        } else if last {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        probe += 1;
        if let Err(e) = ws.send(Message::text(format!("0 {probe} probe"))).await {
            ctx.totals.error(format!("publish: {e}"));
            fanout.primed.notify_one();
            return histogram();
        }
        if !last {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    fanout.primed.notify_one();
    let window = ctx.measured().await;
    let in_flight = in_flight.min(RING / 2) as u64;
    let mut seq: u64 = 0;
    let pad: String = "x".repeat(size);
    while Instant::now() < window.end && !ctx.stopped() {
        if seq >= in_flight {
            // Message `seq + 1` goes next: wait for `seq + 1 - in_flight` (seqs start at 1).
            let wait = seq + 1 - in_flight;
            fanout.wait_seq.store(wait, Relaxed);
            let slot = &fanout.counts[wait as usize % RING];
            while slot.load(Relaxed) < fanout.open.load(Relaxed) && Instant::now() < window.end {
                let notified = fanout.wake.notified();
                // A subscriber that joined the room after the message was sent never gets
                // it: the timeout lets the warm-up move past such messages.
                if tokio::time::timeout(Duration::from_secs(1), notified)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        if Instant::now() >= window.end {
            break;
        }
        seq += 1;
        fanout.counts[seq as usize % RING].store(0, Relaxed);
        let stamp = fanout.epoch.elapsed().as_nanos();
        let mut text = format!("{seq} {stamp} ");
        if text.len() < size {
            text.push_str(&pad[..size - text.len()]);
        }
        if let Err(e) = ws.send(Message::text(text)).await {
            ctx.totals.error(format!("publish: {e}"));
            break;
        }
        // A plain chat client never gets its own messages back, but the server may talk
        // (pings, a close): read whatever is there.
        while let Some(msg) = ws.recv().now_or_never() {
            match msg {
                Some(Ok(Message::Close(frame))) => {
                    ctx.totals
                        .error(format!("the server closed the publisher: {frame:?}"));
                    return histogram();
                }
                None | Some(Err(_)) => {
                    ctx.totals.error("the publisher's connection ended");
                    return histogram();
                }
                Some(Ok(_)) => {}
            }
        }
    }
    close(ws).await;
    histogram()
}

/// A subscriber of the fan-out workload: measures each delivery's latency from its stamp.
pub(super) async fn subscribe<S>(mut ws: WebSocket<S>, ctx: Ctx, fanout: Arc<Fanout>) -> Latencies
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hist = histogram();
    fanout.open.fetch_add(1, Relaxed);
    ctx.ready.wait().await;
    let mut joined = false;
    let why = loop {
        let window = ctx.window.get();
        if window.is_some_and(|w| Instant::now() > w.end + Duration::from_millis(200))
            || ctx.stopped()
        {
            break None;
        }
        // Until the window is known, look up every 100 ms; then wait until it ends.
        let until = match window {
            Some(w) => w.end + Duration::from_millis(200),
            None => Instant::now() + Duration::from_millis(100),
        };
        let msg = match tokio::time::timeout_at(until.into(), ws.recv()).await {
            Err(_) => continue,
            Ok(msg) => msg,
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                let now = Instant::now();
                if !joined {
                    joined = true;
                    fanout.joined.fetch_add(1, Relaxed);
                }
                let mut fields = text.split(' ');
                let seq = fields.next().and_then(|s| s.parse::<u64>().ok());
                let stamp = fields.next().and_then(|s| s.parse::<u64>().ok());
                let (Some(seq), Some(stamp)) = (seq, stamp) else {
                    // Another client's message in the room: not ours to measure.
                    continue;
                };
                if seq == 0 {
                    if stamp == fanout.final_probe.load(Relaxed) {
                        fanout.final_seen.fetch_add(1, Relaxed);
                    }
                    continue;
                }
                fanout.delivered(seq);
                let at = fanout.epoch + Duration::from_nanos(stamp);
                ctx.totals.seen.fetch_add(1, Relaxed);
                let Some(window) = window else { continue };
                if window.contains(now) {
                    ctx.totals.messages.fetch_add(1, Relaxed);
                    ctx.totals.bytes.fetch_add(text.len() as u64, Relaxed);
                    if at >= window.start {
                        record(&mut hist, now.saturating_duration_since(at));
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                break Some(format!("the server closed a subscriber: {frame:?}"))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break Some(format!("subscriber: {e}")),
            None => break Some("the server ended a subscriber".to_owned()),
        }
    };
    fanout.left();
    match why {
        Some(why) => ctx.totals.error(why),
        None => close(ws).await,
    }
    hist
}
