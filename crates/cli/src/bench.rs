//! `duplex bench`: a WebSocket load generator.
//!
//! Three workloads:
//! - echo (the default): `-c` connections each keep `--in-flight` messages of `-s` bytes
//!   outstanding against an echo endpoint; every echoed message is answered with the next one.
//!   Latency is the time from queueing a message to reading its echo (echoes come back in
//!   order, so each connection matches them with a FIFO of send times).
//! - `--fanout`: one publisher and `-c` subscribers in one chat room (a `duplex serve` room
//!   URL); the publisher stamps each message with its send time, subscribers measure the
//!   delivery latency. The publisher keeps at most `--in-flight` messages ahead of the
//!   deliveries, so a fast server is never made to drop slow subscribers.
//! - `--idle`: opens `-c` connections, lets them sit, and reports the server's resident memory
//!   per connection (`--server-pid` required).
//!
//! `--raw-tcp` runs the echo workload over plain TCP (no WebSocket framing): the ceiling a
//! server that only copies bytes back reaches, for comparison.
//!
//! The generator's own cost is kept small: one task per connection on a multi-thread runtime,
//! one payload `Bytes` shared by every send, a batch of echoes answered with one write.
//! Measurements cover the interval after `--warmup`; with `--server-pid` the server's CPU time
//! in that interval (from `/proc/PID/stat`) gives messages per server CPU-second, the figure
//! that ranks servers fairly when the generator, not the server, is the bottleneck.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use duplex::{ClientBuilder, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

use crate::deflate_args::DeflateArgs;

/// Options of `duplex bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Echo endpoint (ws://host:port/echo), or a chat room with --fanout
    /// (ws://host:port/rooms/bench).
    url: String,
    /// Connections (subscribers with --fanout).
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Payload size in bytes.
    #[arg(short = 's', long, default_value_t = 20)]
    size: usize,
    /// Messages outstanding per connection (with --fanout: messages the publisher may be
    /// ahead of the slowest deliveries).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Measured time, after the warm-up: 10, 10s, 500ms, 2m.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up time before measuring (same units).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Send binary messages (text by default).
    #[arg(long)]
    binary: bool,
    #[command(flatten)]
    deflate: DeflateArgs,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// The server's process id: report its CPU time during the measurement (and its memory
    /// with --idle).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Echo over plain TCP, without WebSocket framing (the URL's host and port are used): the
    /// ceiling of a server that only copies bytes back.
    #[arg(long, conflicts_with_all = ["fanout", "idle"])]
    raw_tcp: bool,
    /// One publisher and -c subscribers in the chat room of the URL.
    #[arg(long, conflicts_with = "idle")]
    fanout: bool,
    /// Open -c connections, keep them idle and report the server's memory per connection.
    #[arg(long, requires = "server_pid")]
    idle: bool,
    /// Connection attempts in progress at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
}

/// Parses `10`, `10s`, `500ms`, `2m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
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

/// The measurement window, shared by every task.
#[derive(Debug)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t <= self.end
    }
}

/// Counters every task adds to.
#[derive(Debug, Default)]
struct Totals {
    /// Messages received in the window.
    messages: AtomicU64,
    /// Payload bytes received in the window.
    bytes: AtomicU64,
    /// Messages received since the start (for the progress line).
    seen: AtomicU64,
    errors: AtomicU64,
    connect_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Totals {
    fn error(&self, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        self.note(what);
    }

    fn note(&self, what: impl std::fmt::Display) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| what.to_string());
        }
    }
}

/// What one connection measured.
type Latencies = Histogram<u64>;

fn histogram() -> Latencies {
    // Nanoseconds, 1 ns to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn record(hist: &mut Latencies, d: Duration) {
    hist.saturating_record(d.as_nanos().clamp(1, u128::from(u64::MAX)) as u64);
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.in_flight == 0 {
        bail!("--connections and --in-flight must be at least 1");
    }
    let mode = if args.idle {
        "idle"
    } else if args.fanout {
        "fanout"
    } else if args.raw_tcp {
        "raw-tcp"
    } else {
        "echo"
    };
    let url = url::Url::parse(&args.url).with_context(|| format!("bad URL {}", args.url))?;
    let host = url.host_str().context("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().context("the URL has no port")?;
    let config = duplex::Config::default()
        .keepalive(None, None)
        .deflate(args.deflate.config());
    let totals = Arc::new(Totals::default());
    let payload = make_payload(args.size, args.binary);

    let connect_started = Instant::now();
    if args.idle {
        return run_idle(&args, config, &totals, connect_started).await;
    }
    // Everyone starts sending once every connection is open; the window is fixed then.
    let ready = Arc::new(tokio::sync::Barrier::new(
        args.connections + 1 + usize::from(args.fanout),
    ));
    let window: Arc<tokio::sync::OnceCell<Window>> = Arc::new(tokio::sync::OnceCell::new());
    let stop = Arc::new(AtomicBool::new(false));
    let limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.connections + 1);
    let fanout = args.fanout.then(|| Arc::new(Fanout::new()));
    for _ in 0..args.connections {
        let ctx = Ctx {
            totals: totals.clone(),
            window: window.clone(),
            ready: ready.clone(),
            stop: stop.clone(),
        };
        let limit = limit.clone();
        let payload = payload.clone();
        let url = args.url.clone();
        let addr = (host.clone(), port);
        let in_flight = args.in_flight;
        let raw = args.raw_tcp;
        let fanout = fanout.clone();
        tasks.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await;
            if raw {
                let tcp = tokio::net::TcpStream::connect(addr).await;
                drop(permit);
                match tcp {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        raw_echo(tcp, ctx, payload.into_payload(), in_flight).await
                    }
                    Err(e) => ctx.connect_failed(e).await,
                }
            } else {
                let connected = match ClientBuilder::new(&url) {
                    Ok(b) => b.config(config).connect().await,
                    Err(e) => Err(e),
                };
                drop(permit);
                match (connected, fanout) {
                    (Ok((ws, _)), None) => ws_echo(ws, ctx, payload, in_flight).await,
                    (Ok((ws, _)), Some(f)) => subscribe(ws, ctx, f).await,
                    (Err(e), _) => ctx.connect_failed(e).await,
                }
            }
        }));
    }
    if let Some(f) = &fanout {
        let (ws, _) = ClientBuilder::new(&args.url)?
            .config(config)
            .connect()
            .await
            .context("the publisher cannot connect")?;
        let ctx = Ctx {
            totals: totals.clone(),
            window: window.clone(),
            ready: ready.clone(),
            stop: stop.clone(),
        };
        let f = f.clone();
        let size = args.size;
        let in_flight = args.in_flight;
        tasks.push(tokio::spawn(async move {
            publish(ws, ctx, f, size, in_flight).await
        }));
    } else {
        tasks.push(tokio::spawn(async { histogram() }));
    }

    ready.wait().await;
    let connected_in = connect_started.elapsed();
    let failed = totals.connect_errors.load(Relaxed);
    if failed as usize == args.connections {
        let why = totals
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        stop.store(true, Relaxed);
        bail!("no connection could be opened: {why}");
    }
    if let Some(f) = &fanout {
        // Subscribers are in the room only once the server has processed their joins: the
        // warm-up starts when every one of them has received a message.
        if tokio::time::timeout(PRIMING, f.primed.notified())
            .await
            .is_err()
        {
            totals.error(format!(
                "only {} of {} subscribers received anything within {} s",
                f.joined.load(Relaxed),
                f.open.load(Relaxed),
                PRIMING.as_secs()
            ));
        }
    }
    let start = Instant::now() + args.warmup;
    let end = start + args.duration;
    let _ = window.set(Window { start, end });

    let progress = std::io::stderr().is_terminal() && !args.json;
    let total_time = args.warmup + args.duration;
    let begun = Instant::now();
    let mut last = (begun, 0u64);
    let mut cpu_before = None;
    while Instant::now() < end {
        let next = (Instant::now() + Duration::from_millis(250)).min(end);
        if cpu_before.is_none() && next >= start {
            tokio::time::sleep_until(start.into()).await;
            cpu_before = args.server_pid.map(server_cpu).transpose()?;
            continue;
        }
        tokio::time::sleep_until(next.into()).await;
        if progress {
            let now = Instant::now();
            let seen = totals.seen.load(Relaxed);
            let rate = (seen - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
            last = (now, seen);
            let phase = if now < start { "warm-up" } else { "measuring" };
            eprint!(
                "\r{phase:>9} {:>5.1}/{:.0}s  {:>10.0} msg/s  errors {}   ",
                (now - begun).as_secs_f64(),
                total_time.as_secs_f64(),
                rate,
                totals.errors.load(Relaxed)
            );
        }
    }
    let cpu_after = args.server_pid.map(server_cpu).transpose()?;
    if progress {
        eprintln!();
    }
    stop.store(true, Relaxed);

    let mut latencies = histogram();
    for task in tasks {
        // Every task ends by itself shortly after the window (its close is bounded).
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(hist)) => latencies.add(&hist).expect("same histogram bounds"),
            Ok(Err(e)) => totals.error(format!("task failed: {e}")),
            Err(_) => totals.error("a connection did not finish within 10 s"),
        }
    }

    let secs = args.duration.as_secs_f64();
    let messages = totals.messages.load(Relaxed);
    let bytes = totals.bytes.load(Relaxed);
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let report = serde_json::json!({
        "mode": mode,
        "url": args.url,
        "connections": args.connections,
        "connected": args.connections as u64 - failed,
        "connect_secs": connected_in.as_secs_f64(),
        "size": args.size,
        "in_flight": args.in_flight,
        "binary": args.binary,
        "deflate": args.deflate.deflate,
        "duration_secs": secs,
        "messages": messages,
        "messages_per_sec": messages as f64 / secs,
        "mb_per_sec": bytes as f64 / secs / 1e6,
        "latency_us": {
            "p50": quantile_us(&latencies, 0.50),
            "p90": quantile_us(&latencies, 0.90),
            "p99": quantile_us(&latencies, 0.99),
            "p99_9": quantile_us(&latencies, 0.999),
            "max": latencies.max() as f64 / 1e3,
            "mean": latencies.mean() / 1e3,
            "samples": latencies.len(),
        },
        "errors": totals.errors.load(Relaxed),
        "connect_errors": failed,
        "first_error": totals.first_error.lock().ok().and_then(|e| e.clone()),
        "server_cpu_secs": server_cpu,
        "messages_per_server_cpu_sec": server_cpu.map(|cpu| messages as f64 / cpu.max(1e-9)),
    });
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}

fn quantile_us(h: &Latencies, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

fn print_report(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let mode = r["mode"].as_str().unwrap_or_default();
    println!(
        "{mode} {}: {} connections ({} open), {} B {}, {} in flight, {:.1} s measured",
        r["url"].as_str().unwrap_or_default(),
        r["connections"],
        r["connected"],
        r["size"],
        if r["binary"].as_bool() == Some(true) {
            "binary"
        } else {
            "text"
        },
        r["in_flight"],
        f(&r["duration_secs"]),
    );
    let what = if mode == "fanout" {
        "deliveries"
    } else {
        "messages"
    };
    println!(
        "  {what}: {} ({:.0}/s, {:.2} MB/s)",
        r["messages"],
        f(&r["messages_per_sec"]),
        f(&r["mb_per_sec"]),
    );
    let l = &r["latency_us"];
    println!(
        "  latency: p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us",
        f(&l["p50"]),
        f(&l["p90"]),
        f(&l["p99"]),
        f(&l["p99_9"]),
        f(&l["max"]),
    );
    if let Some(cpu) = r["server_cpu_secs"].as_f64() {
        println!(
            "  server CPU: {cpu:.2} s, {:.0} {what} per server CPU-second",
            f(&r["messages_per_server_cpu_sec"])
        );
    }
    println!(
        "  errors: {} (connect: {}){}",
        r["errors"],
        r["connect_errors"],
        r["first_error"]
            .as_str()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );
}

/// The server's user + system CPU time in seconds, from `/proc/PID/stat`.
fn server_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (is the server running?)"))?;
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/PID/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse()
            .context("bad /proc/PID/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(total as f64 / clock_ticks() as f64)
}

/// Clock ticks per second (`getconf CLK_TCK`): 100 on every Linux architecture in use.
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// The server's resident memory in bytes (`VmRSS` of `/proc/PID/status`).
fn server_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (is the server running?)"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib * 1024)
}

fn make_payload(size: usize, binary: bool) -> Message {
    // Printable ASCII, so text and binary carry the same bytes.
    let data: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    if binary {
        Message::Binary(Bytes::from(data))
    } else {
        Message::Text(Utf8Bytes::try_from(data).expect("ASCII is UTF-8"))
    }
}

/// What a connection task needs.
struct Ctx {
    totals: Arc<Totals>,
    window: Arc<tokio::sync::OnceCell<Window>>,
    ready: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
}

impl Ctx {
    async fn connect_failed(self, e: impl std::fmt::Display) -> Latencies {
        self.totals.connect_errors.fetch_add(1, Relaxed);
        self.totals.note(format!("connect: {e}"));
        self.ready.wait().await;
        histogram()
    }

    /// Waits until every connection is open; then the window is known.
    async fn start(&self) -> &Window {
        self.ready.wait().await;
        self.measured().await
    }

    /// Waits until the measurement window is set.
    async fn measured(&self) -> &Window {
        loop {
            if let Some(w) = self.window.get() {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }
}

/// Closes politely, but does not wait long for a server that does not answer.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// The echo workload on one WebSocket connection.
async fn ws_echo<S>(mut ws: WebSocket<S>, ctx: Ctx, payload: Message, in_flight: usize) -> Latencies
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hist = histogram();
    let window = ctx.start().await;
    let expect = payload.len();
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut answer = in_flight;
    'run: loop {
        if ctx.stopped() || Instant::now() > window.end {
            break;
        }
        for _ in 0..answer {
            sent.push_back(Instant::now());
            if let Err(e) = ws.feed(payload.clone()).await {
                ctx.totals.error(format!("send: {e}"));
                break 'run;
            }
        }
        if let Err(e) = ws.flush().await {
            ctx.totals.error(format!("send: {e}"));
            break;
        }
        // Wait for one echo, then take every other one already read, and answer them all
        // with one write.
        answer = 0;
        let mut next = ws.recv().await;
        loop {
            let msg = match next {
                None => {
                    ctx.totals.error("the server closed the connection");
                    break 'run;
                }
                Some(Err(e)) => {
                    ctx.totals.error(format!("receive: {e}"));
                    break 'run;
                }
                Some(Ok(msg)) => msg,
            };
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    let now = Instant::now();
                    let Some(at) = sent.pop_front() else {
                        ctx.totals.error("an echo nobody asked for");
                        break 'run;
                    };
                    if msg.len() != expect {
                        ctx.totals.error("an echo of the wrong length");
                    }
                    ctx.totals.seen.fetch_add(1, Relaxed);
                    if window.contains(now) {
                        ctx.totals.messages.fetch_add(1, Relaxed);
                        ctx.totals.bytes.fetch_add(msg.len() as u64, Relaxed);
                        if at >= window.start {
                            record(&mut hist, now - at);
                        }
                    }
                    answer += 1;
                }
                Message::Close(frame) => {
                    ctx.totals.error(format!("the server closed: {frame:?}"));
                    break 'run;
                }
                Message::Ping(_) | Message::Pong(_) => {}
            }
            match ws.recv().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
    }
    close(ws).await;
    hist
}

/// The echo workload over plain TCP: `in_flight` messages of the payload's size outstanding,
/// one echoed message counted per `size` bytes read back.
async fn raw_echo(
    mut tcp: tokio::net::TcpStream,
    ctx: Ctx,
    payload: Bytes,
    in_flight: usize,
) -> Latencies {
    let mut hist = histogram();
    let window = ctx.start().await;
    let size = payload.len().max(1);
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut out = Vec::with_capacity(size * in_flight);
    let mut buf = vec![0u8; (size * in_flight).max(64 * 1024)];
    let mut partial = 0usize;
    let mut answer = in_flight;
    'run: loop {
        if ctx.stopped() || Instant::now() > window.end {
            break;
        }
        out.clear();
        for _ in 0..answer {
            sent.push_back(Instant::now());
            out.extend_from_slice(&payload);
            if payload.is_empty() {
                out.push(0);
            }
        }
        if let Err(e) = tcp.write_all(&out).await {
            ctx.totals.error(format!("send: {e}"));
            break;
        }
        answer = 0;
        while answer == 0 {
            let n = match tcp.read(&mut buf).await {
                Ok(0) => {
                    ctx.totals.error("the server closed the connection");
                    break 'run;
                }
                Ok(n) => n,
                Err(e) => {
                    ctx.totals.error(format!("receive: {e}"));
                    break 'run;
                }
            };
            partial += n;
            let now = Instant::now();
            while partial >= size {
                partial -= size;
                let Some(at) = sent.pop_front() else {
                    ctx.totals.error("more bytes than were sent");
                    break 'run;
                };
                ctx.totals.seen.fetch_add(1, Relaxed);
                if window.contains(now) {
                    ctx.totals.messages.fetch_add(1, Relaxed);
                    ctx.totals.bytes.fetch_add(payload.len() as u64, Relaxed);
                    if at >= window.start {
                        record(&mut hist, now - at);
                    }
                }
                answer += 1;
            }
        }
    }
    hist
}

/// Slots of the fan-out delivery counts: more than any sensible `--in-flight`.
const RING: usize = 4096;

/// Fan-out bookkeeping shared by the publisher and the subscribers.
#[derive(Debug)]
struct Fanout {
    /// Subscribers connected and still receiving.
    open: AtomicU64,
    /// Deliveries of message `seq`, in slot `seq % RING`.
    counts: Vec<AtomicU64>,
    /// The message the publisher waits to see delivered to every open subscriber.
    wait_seq: AtomicU64,
    wake: Notify,
    /// The instant timestamps in messages count from.
    epoch: Instant,
    /// Subscribers that received at least one message.
    joined: AtomicU64,
    /// Told once every subscriber received a message.
    primed: Notify,
    /// The number of the last probe, and how many subscribers received it.
    final_probe: AtomicU64,
    final_seen: AtomicU64,
}

/// The longest wait for every subscriber to be in the room.
const PRIMING: Duration = Duration::from_secs(120);

impl Fanout {
    fn new() -> Self {
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
async fn publish<S>(
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
async fn subscribe<S>(mut ws: WebSocket<S>, ctx: Ctx, fanout: Arc<Fanout>) -> Latencies
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

/// Opens the connections, waits, and reports the server's memory per connection.
async fn run_idle(
    args: &BenchArgs,
    config: duplex::Config,
    totals: &Arc<Totals>,
    started: Instant,
) -> anyhow::Result<()> {
    let pid = args.server_pid.context("--idle needs --server-pid")?;
    let before = server_rss(pid)?;
    let limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let release = Arc::new(Notify::new());
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let limit = limit.clone();
        let url = args.url.clone();
        let totals = totals.clone();
        let release = release.clone();
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await;
            let connected = match ClientBuilder::new(&url) {
                Ok(b) => b.config(config).connect().await,
                Err(e) => Err(e),
            };
            drop(permit);
            match connected {
                Ok((ws, _)) => {
                    let released = release.notified();
                    opened.fetch_add(1, Relaxed);
                    released.await;
                    drop(ws);
                }
                Err(e) => {
                    totals.connect_errors.fetch_add(1, Relaxed);
                    totals.note(format!("connect: {e}"));
                }
            }
        }));
    }
    while tasks.iter().any(|t| !t.is_finished())
        && opened.load(Relaxed) + totals.connect_errors.load(Relaxed) < args.connections as u64
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected_in = started.elapsed();
    // Let the server finish its part of every handshake and settle.
    tokio::time::sleep(args.warmup).await;
    let after = server_rss(pid)?;
    let open = opened.load(Relaxed);
    release.notify_waiters();
    for t in tasks {
        let _ = t.await;
    }
    let per_conn = after.saturating_sub(before) as f64 / open.max(1) as f64;
    let report = serde_json::json!({
        "mode": "idle",
        "url": args.url,
        "connections": args.connections,
        "connected": open,
        "connect_secs": connected_in.as_secs_f64(),
        "connect_errors": totals.connect_errors.load(Relaxed),
        "first_error": totals.first_error.lock().ok().and_then(|e| e.clone()),
        "server_rss_before": before,
        "server_rss_after": after,
        "rss_per_connection": per_conn,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "idle {}: {open} of {} connections open in {:.1} s",
            args.url,
            args.connections,
            connected_in.as_secs_f64()
        );
        println!(
            "  server RSS {:.1} MiB -> {:.1} MiB: {:.2} KiB per connection",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            per_conn / 1024.0
        );
        if let Some(e) = report["first_error"].as_str() {
            println!("  connect errors: {}, first: {e}", report["connect_errors"]);
        }
    }
    Ok(())
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
