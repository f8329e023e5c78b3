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
//!
//! This module opens the connections and runs the measurement window; [`plans`] holds the
//! options, [`connections`] the echo workloads, [`fanout`] and [`idle`] the other two,
//! [`measure`] the window, counters and histograms they fill, [`report`] the printed result,
//! [`server_usage`] the `/proc` readings.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use duplex::ClientBuilder;
use tokio::sync::Semaphore;

mod connections;
mod fanout;
mod idle;
mod measure;
mod plans;
mod report;
mod server_usage;

use connections::{raw_echo, ws_echo, Ctx};
use fanout::{publish, subscribe, Fanout, PRIMING};
use measure::{histogram, Totals, Window};
pub use plans::BenchArgs;
use plans::{make_payload, Mode};
use report::{print_report, Summary};
use server_usage::server_cpu;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.in_flight == 0 {
        bail!("--connections and --in-flight must be at least 1");
    }
    let mode = Mode::of(&args);
    let url = url::Url::parse(&args.url).with_context(|| format!("bad URL {}", args.url))?;
    let host = url.host_str().context("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().context("the URL has no port")?;
    let config = duplex::Config::default()
        .keepalive(None, None)
        .deflate(args.deflate.config());
    let totals = Arc::new(Totals::default());
    let payload = make_payload(args.size, args.binary);

    let connect_started = Instant::now();
    if mode == Mode::Idle {
        return idle::run_idle(&args, config, &totals, connect_started).await;
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

    let server_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let report = Summary {
        mode,
        args: &args,
        connect_failed: failed,
        connected_in,
        latencies: &latencies,
        totals: &totals,
        server_cpu,
    }
    .to_json();
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(())
}
