//! Counters the hub keeps and their rendering in the Prometheus text format (`GET /metrics`).
//!
//! Plain atomics: every update is one relaxed add, cheap enough for the per-message path,
//! and no metrics library is needed for a dozen series. The per-message counts are sharded by
//! thread ([`Traffic`]), so that worker threads do not pass one cache line back and forth.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Why a request was refused before any WebSocket existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 401: missing or wrong token.
    Unauthorized,
    /// 403: `Origin` not allowed.
    Origin,
    /// 403: a token that does not allow the room of the URL.
    Forbidden,
    /// 503: too many connections.
    Capacity,
    /// 404: unknown path or invalid room name.
    NotFound,
    /// 400/405/426/431 and the like: not a valid request or handshake.
    BadRequest,
}

impl Rejection {
    const ALL: [Rejection; 6] = [
        Rejection::Unauthorized,
        Rejection::Origin,
        Rejection::Forbidden,
        Rejection::Capacity,
        Rejection::NotFound,
        Rejection::BadRequest,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::Origin => "origin",
            Rejection::Forbidden => "forbidden",
            Rejection::Capacity => "capacity",
            Rejection::NotFound => "not_found",
            Rejection::BadRequest => "bad_request",
        }
    }
}

/// Upper bounds of the fan-out latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Every counter of a hub.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) connections_open: AtomicI64,
    pub(crate) connections_parked: AtomicI64,
    pub(crate) chat_connections_total: AtomicU64,
    pub(crate) echo_connections_total: AtomicU64,
    pub(crate) http_requests_total: AtomicU64,
    /// WebSockets opened over HTTP/1.1 and over HTTP/2.
    websockets_by_version: [AtomicU64; 2],
    traffic: Traffic,
    pub(crate) stored_messages: AtomicU64,
    pub(crate) rooms: AtomicI64,
    pub(crate) slow_disconnects: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
    fanout: Histogram,
    pub(crate) redis: RedisMetrics,
}

/// How a multi-node hub's link to Redis fares (rendered only when the hub uses Redis).
#[derive(Debug, Default)]
pub(crate) struct RedisMetrics {
    pub(crate) enabled: AtomicBool,
    /// 1 while the subscription connection is up and caught up.
    pub(crate) up: AtomicI64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) round_trip: Histogram,
}

/// A latency histogram: per-bucket counts, summed into cumulative ones on render, so that the
/// hot path is a single increment.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(latency.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
}

impl Metrics {
    pub(crate) fn reject(&self, why: Rejection) {
        let i = Rejection::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.rejections[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn websocket_opened(&self, over_http2: bool) {
        self.websockets_by_version[usize::from(over_http2)].fetch_add(1, Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        let (shard, owned) = self.traffic.mine();
        add(&shard.messages_in, 1, owned);
        add(&shard.bytes_in, bytes as u64, owned);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        let (shard, owned) = self.traffic.mine();
        add(&shard.messages_out, 1, owned);
        add(&shard.bytes_out, bytes as u64, owned);
    }

    /// Records the time from a message's arrival to its last recipient's queue.
    pub(crate) fn fanout(&self, latency: Duration) {
        self.fanout.record(latency);
    }

    /// The Prometheus text exposition of every counter.
    ///
    /// ```
    /// let metrics = duplex_hub::Metrics::default();
    /// let text = metrics.render();
    /// assert!(text.contains("# TYPE duplex_connections_open gauge"));
    /// assert!(text.contains("duplex_fanout_latency_seconds_bucket{le=\"+Inf\"} 0"));
    /// ```
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            series(&mut out, name, kind, help, &value);
        };
        one(
            "duplex_connections_open",
            "gauge",
            "Open WebSocket connections.",
            self.connections_open.load(Relaxed).to_string(),
        );
        one(
            "duplex_connections_parked",
            "gauge",
            "Idle echo connections parked without a task of their own.",
            self.connections_parked.load(Relaxed).to_string(),
        );
        one(
            "duplex_rooms",
            "gauge",
            "Rooms with at least one member.",
            self.rooms.load(Relaxed).to_string(),
        );
        one(
            "duplex_http_requests_total",
            "counter",
            "Plain HTTP requests answered (pages, health, metrics).",
            self.http_requests_total.load(Relaxed).to_string(),
        );
        one(
            "duplex_messages_received_total",
            "counter",
            "Data messages received from clients.",
            self.traffic.sum(|s| &s.messages_in).to_string(),
        );
        one(
            "duplex_received_bytes_total",
            "counter",
            "Payload bytes of the data messages received.",
            self.traffic.sum(|s| &s.bytes_in).to_string(),
        );
        one(
            "duplex_messages_sent_total",
            "counter",
            "Data messages written to clients.",
            self.traffic.sum(|s| &s.messages_out).to_string(),
        );
        one(
            "duplex_sent_bytes_total",
            "counter",
            "Frame bytes of the data messages written.",
            self.traffic.sum(|s| &s.bytes_out).to_string(),
        );
        one(
            "duplex_stored_messages_total",
            "counter",
            "Chat messages stored in the history.",
            self.stored_messages.load(Relaxed).to_string(),
        );
        one(
            "duplex_slow_disconnects_total",
            "counter",
            "Recipients disconnected because their send queue was full (close code 4000).",
            self.slow_disconnects.load(Relaxed).to_string(),
        );
        one(
            "duplex_rate_limited_total",
            "counter",
            "Connections closed for sending too fast (close code 1008).",
            self.rate_limited.load(Relaxed).to_string(),
        );

        let _ = writeln!(
            out,
            "# HELP duplex_connections_total WebSocket connections accepted, by endpoint.\n\
             # TYPE duplex_connections_total counter\n\
             duplex_connections_total{{endpoint=\"chat\"}} {}\n\
             duplex_connections_total{{endpoint=\"echo\"}} {}",
            self.chat_connections_total.load(Relaxed),
            self.echo_connections_total.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP duplex_websockets_total WebSockets opened, by HTTP version.\n\
             # TYPE duplex_websockets_total counter\n\
             duplex_websockets_total{{version=\"1.1\"}} {}\n\
             duplex_websockets_total{{version=\"2\"}} {}",
            self.websockets_by_version[0].load(Relaxed),
            self.websockets_by_version[1].load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP duplex_rejections_total Requests refused before the upgrade, by reason.\n\
             # TYPE duplex_rejections_total counter"
        );
        for (reason, count) in Rejection::ALL.iter().zip(&self.rejections) {
            let _ = writeln!(
                out,
                "duplex_rejections_total{{reason=\"{}\"}} {}",
                reason.label(),
                count.load(Relaxed)
            );
        }

        self.fanout.render(
            &mut out,
            "duplex_fanout_latency_seconds",
            "Time from a chat message's arrival to its last recipient's queue (storage included).",
        );
        if self.redis.enabled.load(Relaxed) {
            self.render_redis(&mut out);
        }
        out
    }
}

/// One series of one value, with its help and type lines.
fn series(out: &mut String, name: &str, kind: &str, help: &str, value: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

impl Metrics {
    fn render_redis(&self, out: &mut String) {
        let redis = &self.redis;
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            series(out, name, kind, help, &value);
        };
        one(
            "duplex_redis_up",
            "gauge",
            "1 while the node is subscribed to Redis and caught up; 0 while it reconnects.",
            redis.up.load(Relaxed).to_string(),
        );
        one(
            "duplex_redis_requests_total",
            "counter",
            "Round trips to Redis (a pipeline of several commands counts once).",
            redis.requests.load(Relaxed).to_string(),
        );
        one(
            "duplex_redis_errors_total",
            "counter",
            "Redis round trips that failed (connection lost, timeout, script error).",
            redis.errors.load(Relaxed).to_string(),
        );
        one(
            "duplex_redis_reconnects_total",
            "counter",
            "Times the subscription connection to Redis was lost and made again.",
            redis.reconnects.load(Relaxed).to_string(),
        );
        redis.round_trip.render(
            out,
            "duplex_redis_round_trip_seconds",
            "Time of one round trip to Redis.",
        );
    }
}

/// Messages and bytes in and out, in one shard per thread: a worker's four increments per
/// echoed message land in a cache line that worker alone writes, instead of one line that
/// every worker takes from the others each time; and as no other thread writes it, they need
/// no atomic read-modify-write (a locked instruction each).
#[derive(Debug, Default)]
struct Traffic {
    shards: [Shard; SHARDS],
}

/// Shards of [`Traffic`]: one for each of the first `SHARDS - 1` threads that count (more than
/// the worker threads of most machines), and the last one shared by any thread after those.
const SHARDS: usize = 16;

/// One thread's counts, alone in its cache line (128 bytes: two lines are fetched together on
/// x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Traffic {
    /// This thread's shard, and whether this thread is the only one that writes it.
    fn mine(&self) -> (&Shard, bool) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            // Numbers are never reused, so no two threads ever own the same shard (of any
            // `Metrics`: the number is per thread, not per instance).
            static INDEX: usize = NEXT.fetch_add(1, Relaxed).min(SHARDS - 1);
        }
        let i = INDEX.try_with(|i| *i).unwrap_or(SHARDS - 1);
        (&self.shards[i], i < SHARDS - 1)
    }

    /// One count over every shard.
    fn sum(&self, count: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| count(s).load(Relaxed)).sum()
    }
}

/// Adds `n` to a count; `owned`: only this thread writes it, so a plain load and store are
/// exact (and a reader sees the value before or after, never a torn one).
fn add(count: &AtomicU64, n: u64, owned: bool) {
    if owned {
        count.store(count.load(Relaxed).wrapping_add(n), Relaxed);
    } else {
        count.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.fanout(Duration::from_micros(50));
        m.fanout(Duration::from_millis(3));
        m.fanout(Duration::from_secs(5));
        let text = m.render();
        assert!(text.contains("duplex_fanout_latency_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("duplex_fanout_latency_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("duplex_fanout_latency_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("duplex_fanout_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("duplex_fanout_latency_seconds_count 3\n"));
    }

    #[test]
    fn rejections_are_counted_by_reason() {
        let m = Metrics::default();
        m.reject(Rejection::Unauthorized);
        m.reject(Rejection::Unauthorized);
        m.reject(Rejection::Capacity);
        let text = m.render();
        assert!(text.contains("duplex_rejections_total{reason=\"unauthorized\"} 2\n"));
        assert!(text.contains("duplex_rejections_total{reason=\"capacity\"} 1\n"));
        assert!(text.contains("duplex_rejections_total{reason=\"origin\"} 0\n"));
    }

    /// Counts from many threads (more than there are shards) add up exactly.
    #[test]
    fn traffic_from_every_thread_adds_up() {
        let m = Metrics::default();
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        m.received(10);
                        m.sent(12);
                    }
                });
            }
        });
        let n = (SHARDS as u64 + 4) * 1000;
        let text = m.render();
        assert!(text.contains(&format!("duplex_messages_received_total {n}\n")));
        assert!(text.contains(&format!("duplex_received_bytes_total {}\n", n * 10)));
        assert!(text.contains(&format!("duplex_messages_sent_total {n}\n")));
        assert!(text.contains(&format!("duplex_sent_bytes_total {}\n", n * 12)));
    }
}
