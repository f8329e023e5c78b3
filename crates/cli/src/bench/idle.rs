//! The idle workload: open the connections, let them sit, and report the server's memory per
//! connection.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use duplex::ClientBuilder;
use tokio::sync::{Notify, Semaphore};

use super::measure::Totals;
use super::plans::BenchArgs;
use super::report::print_idle;
use super::server_usage::server_rss;

/// Opens the connections, waits, and reports the server's memory per connection.
pub(super) async fn run_idle(
    args: &BenchArgs,
    config: duplex::Config,
    totals: &Arc<Totals>,
    started: Instant,
) -> anyhow::Result<()> {
    let pid = *args
        .server_pid
        .first()
        .context("--idle needs --server-pid")?;
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
    print_idle(&report, args.json);
    Ok(())
}
