//! What `duplex bench` is asked to run: its options, the workload they name, and the message
//! every connection sends.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use duplex::{Message, Utf8Bytes};

use crate::deflate_args::DeflateArgs;

/// Options of `duplex bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Echo endpoint (ws://host:port/echo), or a chat room with --fanout
    /// (ws://host:port/rooms/bench).
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
    /// with --idle).
    #[arg(long, value_name = "PID")]
    pub(super) server_pid: Option<u32>,
    /// Echo over plain TCP, without WebSocket framing (the URL's host and port are used): the
    /// ceiling of a server that only copies bytes back.
    #[arg(long, conflicts_with_all = ["fanout", "idle"])]
    pub(super) raw_tcp: bool,
    /// One publisher and -c subscribers in the chat room of the URL.
    #[arg(long, conflicts_with = "idle")]
    pub(super) fanout: bool,
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
    Idle,
}

impl Mode {
    pub(super) fn of(args: &BenchArgs) -> Mode {
        if args.idle {
            Mode::Idle
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
}
