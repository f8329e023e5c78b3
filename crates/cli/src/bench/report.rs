//! What `duplex bench` reports: the result as JSON (`--json`) or as lines for people
//! (bench/compare.sh and bench/report.py read the JSON).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::measure::{Latencies, Totals};
use super::plans::{BenchArgs, Mode};

fn quantile_us(h: &Latencies, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

pub(super) fn print_report(r: &serde_json::Value) {
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
    let what = if mode == "fanout" || mode == "crossnode" {
        "deliveries"
    } else {
        "messages"
    };
    if mode == "crossnode" {
        println!(
            "  {} over {} nodes, {} publisher(s) on the first: {} sent ({:.0}/s{}), deliveries by node {}",
            r["protocol"].as_str().unwrap_or_default(),
            r["nodes"].as_array().map_or(0, Vec::len),
            r["publishers"],
            r["sent"],
            f(&r["sent_per_sec"]),
            match f(&r["rate"]) {
                0.0 => String::new(),
                rate => format!(", asked {rate:.0}/s"),
            },
            r["deliveries_by_node"],
        );
    }
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
        let each = match r["server_cpu_secs_each"].as_array() {
            Some(each) if each.len() > 1 => {
                let each: Vec<String> = each.iter().map(|c| format!("{:.2}", f(c))).collect();
                format!(" ({} by pid)", each.join(" + "))
            }
            _ => String::new(),
        };
        println!(
            "  server CPU: {cpu:.2} s{each}, {:.0} {what} per server CPU-second",
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

/// The result of a measured workload (echo, raw TCP, fan-out).
#[derive(Debug)]
pub(super) struct Summary<'a> {
    pub(super) mode: Mode,
    pub(super) args: &'a BenchArgs,
    /// Connections that could not be opened.
    pub(super) connect_failed: u64,
    pub(super) connected_in: Duration,
    pub(super) latencies: &'a Latencies,
    pub(super) totals: &'a Totals,
    /// The server's CPU seconds in the window (`--server-pid`).
    pub(super) server_cpu: Option<f64>,
}

impl Summary<'_> {
    /// The report's JSON, the form `--json` prints and bench/report.py reads.
    pub(super) fn to_json(&self) -> serde_json::Value {
        let Summary {
            mode,
            args,
            connect_failed: failed,
            connected_in,
            latencies,
            totals,
            server_cpu,
        } = *self;
        let secs = args.duration.as_secs_f64();
        let messages = totals.messages.load(Relaxed);
        let bytes = totals.bytes.load(Relaxed);
        serde_json::json!({
            "mode": mode.name(),
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
                "p50": quantile_us(latencies, 0.50),
                "p90": quantile_us(latencies, 0.90),
                "p99": quantile_us(latencies, 0.99),
                "p99_9": quantile_us(latencies, 0.999),
                "max": latencies.max() as f64 / 1e3,
                "mean": latencies.mean() / 1e3,
                "samples": latencies.len(),
            },
            "errors": totals.errors.load(Relaxed),
            "connect_errors": failed,
            "first_error": totals.first_error.lock().ok().and_then(|e| e.clone()),
            "server_cpu_secs": server_cpu,
            "messages_per_server_cpu_sec": server_cpu.map(|cpu| messages as f64 / cpu.max(1e-9)),
        })
    }
}

/// Prints the idle workload's result: one JSON object, or lines for people.
pub(super) fn print_idle(report: &serde_json::Value, json: bool) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    if json {
        println!("{report}");
    } else {
        println!(
            "idle {}: {} of {} connections open in {:.1} s",
            report["url"].as_str().unwrap_or_default(),
            report["connected"],
            report["connections"],
            f(&report["connect_secs"]),
        );
        println!(
            "  server RSS {:.1} MiB -> {:.1} MiB: {:.2} KiB per connection",
            f(&report["server_rss_before"]) / 1048576.0,
            f(&report["server_rss_after"]) / 1048576.0,
            f(&report["rss_per_connection"]) / 1024.0
        );
        if let Some(e) = report["first_error"].as_str() {
            println!("  connect errors: {}, first: {e}", report["connect_errors"]);
        }
    }
}
