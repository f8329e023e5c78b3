//! What `duplex bench` is asked to run: its options, the workload they name, and the message
//! every connection sends.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use duplex::{Message, Utf8Bytes};

use super::wire::Protocol;
use crate::deflate_args::DeflateArgs;

/// Options of `duplex bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Echo endpoint (ws://host:port/echo), a chat room with --fanout
    /// (ws://host:port/rooms/bench), or with --crossnode the nodes as a comma list
    /// (ws://127.0.0.1:8081,ws://127.0.0.1:8082).
    pub(super) url: String,
    /// Connections (subscribers with --fanout).
    #[arg(short = 'c', long, default_value_t = 1)]
    pub(super) connections: usize,
    /// Payload size in bytes.
    #[arg(short = 's', long, default_value_t = 20)]
    pub(super) size: usize,
    /// Messages outstanding per connection (with --fanout: messages the publisher may be
    /// ahead of the slowest deliveries).
    #[arg(long, default_value_t = 1)]
    pub(super) in_flight: usize,
    /// Measured time, after the warm-up: 10, 10s, 500ms, 2m.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// Warm-up time before measuring (same units).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(super) warmup: Duration,
    /// Send binary messages (text by default).
    #[arg(long)]
    pub(super) binary: bool,
    #[command(flatten)]
    pub(super) deflate: DeflateArgs,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub(super) json: bool,
    /// The server's process id: report its CPU time during the measurement (and its memory
    /// with --idle). Repeatable: the CPU time is the sum over every process given (the nodes
    /// of --crossnode, and what they share, such as Redis); --idle reads the first.
    #[arg(long, value_name = "PID")]
    pub(super) server_pid: Vec<u32>,
    /// Echo over plain TCP, without WebSocket framing (the URL's host and port are used): the
    /// ceiling of a server that only copies bytes back.
    #[arg(long, conflicts_with_all = ["fanout", "idle", "crossnode"])]
    pub(super) raw_tcp: bool,
    /// One publisher and -c subscribers in the chat room of the URL.
    #[arg(long, conflicts_with_all = ["idle", "crossnode"])]
    pub(super) fanout: bool,
    /// One chat room spread over the nodes of the URL list: -c subscribers split evenly over
    /// them, --publishers publishers on the first, each at most --in-flight messages ahead of
    /// its slowest delivery (and at most --rate messages per second in all).
    #[arg(long, conflicts_with = "idle")]
    pub(super) crossnode: bool,
    /// The nodes' chat protocol with --crossnode: duplex serve's JSON or Socket.IO 4.
    #[arg(long, value_enum, default_value = "duplex", requires = "crossnode")]
    pub(super) protocol: Protocol,
    /// Publishers with --crossnode, all on the first node.
    #[arg(long, default_value_t = 1, requires = "crossnode")]
    pub(super) publishers: usize,
    /// Messages per second the --crossnode publishers send in all (0: as many as --in-flight
    /// allows).
    #[arg(long, default_value_t = 0.0, requires = "crossnode", value_parser = parse_rate)]
    pub(super) rate: f64,
    /// The --crossnode room.
    #[arg(long, default_value = "bench", requires = "crossnode")]
    pub(super) room: String,
    /// Open -c connections, keep them idle and report the server's memory per connection.
    #[arg(long, requires = "server_pid")]
    pub(super) idle: bool,
    /// Connection attempts in progress at once while connecting.
    #[arg(long, default_value_t = 200)]
    pub(super) connect_concurrency: usize,
}

/// The workload the options name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Echo,
    RawTcp,
    Fanout,
    Crossnode,
    Idle,
}

impl Mode {
    pub(super) fn of(args: &BenchArgs) -> Mode {
        if args.idle {
            Mode::Idle
        } else if args.crossnode {
            Mode::Crossnode
        } else if args.fanout {
            Mode::Fanout
        } else if args.raw_tcp {
            Mode::RawTcp
        } else {
            Mode::Echo
        }
    }

    /// The name in the report (`"mode"`), which bench/report.py reads.
    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::RawTcp => "raw-tcp",
            Mode::Fanout => "fanout",
            Mode::Crossnode => "crossnode",
            Mode::Idle => "idle",
        }
    }
}

/// Parses `10`, `10s`, `500ms`, `2m`.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses a rate in messages per second: finite, not negative.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "expected messages per second (0 or more), got {s:?}"
        )),
    }
}

pub(super) fn make_payload(size: usize, binary: bool) -> Message {
    // Printable ASCII, so text and binary carry the same bytes.
    let data: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    if binary {
        Message::Binary(Bytes::from(data))
    } else {
        Message::Text(Utf8Bytes::try_from(data).expect("ASCII is UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("250.5"), Ok(250.5));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("inf").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
