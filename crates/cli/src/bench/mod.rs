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
//! - `--crossnode`: one chat room over several server nodes (a comma list of URLs), `-c`
//!   subscribers split evenly over them and `--publishers` on the first, speaking duplex's
//!   JSON or Socket.IO 4 (`--protocol`): the delivery rate and latency of a room shared
//!   between nodes (through Redis, for `duplex serve --redis` and Socket.IO's Redis adapter).
//! - `--idle`: opens `-c` connections, lets them sit, and reports the server's resident memory
//!   per connection (`--server-pid` required).
//!
//! `--raw-tcp` runs the echo workload over plain TCP (no WebSocket framing): the ceiling a
//! server that only copies bytes back reaches, for comparison.
//!
//! The generator's own cost is kept small: one task per connection on a multi-thread runtime,
//! one payload `Bytes` shared by every send, a batch of echoes answered with one write.
//! Measurements cover the interval after `--warmup`; with `--server-pid` the server's CPU time
//! in that interval (from `/proc/PID/stat`, summed over every `--server-pid`) gives messages
//! per server CPU-second, the figure that ranks servers fairly when the generator, not the
//! server, is the bottleneck.
//!
//! This module opens the connections and runs the measurement window; [`plans`] holds the
//! options, [`connections`] the echo workloads, [`fanout`], [`crossnode`] and [`idle`] the
//! others ([`wire`] the chat protocols `crossnode` speaks), [`measure`] the window, counters
//! and histograms they fill, [`report`] the printed result, [`server_usage`] the `/proc`
//! readings.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use duplex::ClientBuilder;
use tokio::sync::Semaphore;

mod connections;
mod crossnode;
mod fanout;
mod idle;
mod measure;
mod plans;
mod report;
mod server_usage;
mod wire;

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
    let config = duplex::Config::default()
        .keepalive(None, None)
        .deflate(args.deflate.config());
    let totals = Arc::new(Totals::default());
    if mode == Mode::Crossnode {
        return crossnode::run_crossnode(&args, config, &totals).await;
    }
    let url = url::Url::parse(&args.url).with_context(|| format!("bad URL {}", args.url))?;
    let host = url.host_str().context("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().context("the URL has no port")?;
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

    let cpu = watch(&args, &totals, start, end).await;
    stop.store(true, Relaxed);
    let cpu = cpu?;

    let mut latencies = histogram();
    for task in tasks {
        // Every task ends by itself shortly after the window (its close is bounded).
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(hist)) => latencies.add(&hist).expect("same histogram bounds"),
            Ok(Err(e)) => totals.error(format!("task failed: {e}")),
            Err(_) => totals.error("a connection did not finish within 10 s"),
        }
    }

    let server_cpu = cpu.map(|each| each.iter().sum());
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

/// Waits out the warm-up and the measurement window (`start` to `end`), showing progress on a
/// terminal, and returns each `--server-pid`'s CPU seconds within the window (`None` without
/// any).
async fn watch(
    args: &BenchArgs,
    totals: &Totals,
    start: Instant,
    end: Instant,
) -> anyhow::Result<Option<Vec<f64>>> {
    let cpu_of = |pids: &[u32]| -> anyhow::Result<Option<Vec<f64>>> {
        if pids.is_empty() {
            return Ok(None);
        }
        pids.iter()
            .map(|&pid| server_cpu(pid))
            .collect::<anyhow::Result<_>>()
            .map(Some)
    };
    let progress = std::io::stderr().is_terminal() && !args.json;
    let total_time = args.warmup + args.duration;
    let begun = Instant::now();
    let mut last = (begun, 0u64);
    let mut cpu_before = None;
    while Instant::now() < end {
        let next = (Instant::now() + Duration::from_millis(250)).min(end);
        if cpu_before.is_none() && next >= start {
            tokio::time::sleep_until(start.into()).await;
            cpu_before = Some(cpu_of(&args.server_pid)?);
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
    let cpu_after = cpu_of(&args.server_pid)?;
    if progress {
        eprintln!();
    }
    Ok(match (cpu_before.flatten(), cpu_after) {
        (Some(before), Some(after)) => {
            Some(after.iter().zip(&before).map(|(a, b)| a - b).collect())
        }
        _ => None,
    })
}
