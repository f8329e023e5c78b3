//! What permessage-deflate costs and saves: memory per compressed connection, echo throughput
//! with and without compression, and the bytes on the wire.
//!
//! ```text
//! cargo run --release -p duplex --example deflate_cost [CONNECTIONS] [MESSAGES]
//! ```
//! Client and server run in this one process over loopback; memory is the growth of this
//! process's RSS, so a connection pair (client end + server end) is measured together.

use std::time::Instant;

use duplex::proto::deflate::codec::Deflater;
use duplex::proto::deflate::negotiate::params_for_test;
use duplex::{Config, DeflateConfig, Message, WebSocket};
use tokio::net::TcpListener;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// A chat-like JSON message of about 1 KiB that varies from one message to the next.
fn message(i: usize) -> String {
    let mut s = format!(
        r#"{{"type":"message","room":"general","seq":{i},"from":"user{}","time":"2026-11-23T12:{:02}:{:02}Z","text":""#,
        i % 17,
        (i / 60) % 60,
        i % 60
    );
    while s.len() < 1000 {
        s.push_str(
            [
                "hello ", "world ", "duplex ", "is ", "fast ", "and ", "small ",
            ][(s.len() * 7 + i) % 7],
        );
    }
    s.push_str("\"}");
    s
}

async fn server(listener: TcpListener, config: Config) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let Ok(mut ws) = duplex::accept_with(tcp, config, |_| Ok(())).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.recv().await {
                if msg.is_text() && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn connect(url: &str, config: Config) -> WebSocket<duplex::MaybeTlsStream> {
    duplex::ClientBuilder::new(url)
        .expect("url")
        .config(config)
        .connect()
        .await
        .expect("connect")
        .0
}

/// RSS growth per connection pair once each has exchanged one message.
async fn memory(n: usize, config: Config) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(server(listener, config));
    let before = rss_kib();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut ws = connect(&url, config).await;
        // Several different messages, so the compressor's tables are as warm as in use.
        for j in 0..10 {
            ws.send(Message::text(message(i * 10 + j)))
                .await
                .expect("send");
            ws.recv().await.expect("reply").expect("reply");
        }
        clients.push(ws);
    }
    let grown = rss_kib().saturating_sub(before);
    drop(clients);
    grown as f64 / n as f64
}

async fn throughput(messages: usize, config: Config) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(server(listener, config));
    let mut ws = connect(&url, config).await;
    let texts: Vec<String> = (0..messages).map(message).collect();
    let start = Instant::now();
    // Keep 16 messages in flight, as a real echo load would.
    let window = 16;
    for t in texts.iter().take(window) {
        ws.send(Message::text(t.clone())).await.expect("send");
    }
    for i in 0..messages {
        ws.recv().await.expect("reply").expect("reply");
        if let Some(t) = texts.get(i + window) {
            ws.send(Message::text(t.clone())).await.expect("send");
        }
    }
    messages as f64 / start.elapsed().as_secs_f64()
}

/// `None` is uncompressed.
type Setting = (&'static str, Option<DeflateConfig>);

fn settings() -> [Setting; 5] {
    let d = DeflateConfig::default;
    [
        ("uncompressed", None),
        (
            "15 window bits, level 6",
            Some(d().window_bits(15).level(6)),
        ),
        (
            "12 window bits, level 6",
            Some(d().window_bits(12).level(6)),
        ),
        (
            "12 window bits, level 1",
            Some(d().window_bits(12).level(1)),
        ),
        ("9 window bits, level 1", Some(d().window_bits(9).level(1))),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `memory INDEX N`: one measurement, in a process of its own so that memory freed by an
    // earlier measurement cannot hide the growth of this one.
    if args.first().map(String::as_str) == Some("memory") {
        let index: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
        let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
        let config = Config::default().deflate(settings()[index].1);
        println!("{}", memory(n, config).await);
        return;
    }
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let messages: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let exe = std::env::current_exe().expect("own path");
    let measure = |index: usize| -> f64 {
        let out = std::process::Command::new(&exe)
            .args(["memory", &index.to_string(), &n.to_string()])
            .output()
            .expect("run the measurement");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN)
    };
    let base = measure(0);
    println!(
        "memory per connection pair, {n} pairs (client + server end), after 10 messages each:"
    );
    println!("  {:24} {base:8.1} KiB", settings()[0].0);
    for (index, (name, _)) in settings().iter().enumerate().skip(1) {
        let m = measure(index);
        println!(
            "  {name:24} {m:8.1} KiB  (compression: +{:.1} KiB per end)",
            (m - base) / 2.0
        );
    }
    let plain = Config::default();
    let configs: Vec<(&str, DeflateConfig)> = settings()
        .iter()
        .filter_map(|(n, d)| d.map(|d| (*n, d)))
        .collect();

    let sample: Vec<String> = (0..1000).map(message).collect();
    let raw: usize = sample.iter().map(String::len).sum();
    println!("wire size of 1,000 ~1 KiB chat messages ({raw} B raw), with context takeover:");
    for &(name, d) in &configs {
        let mut deflater = Deflater::new(&params_for_test(d));
        let packed: usize = sample
            .iter()
            .map(|m| {
                deflater
                    .compress(m.as_bytes())
                    .map(|v| v.len())
                    .unwrap_or(0)
            })
            .sum();
        println!(
            "  {name:24} {packed:8} B ({:.1}x smaller)",
            raw as f64 / packed as f64
        );
    }

    let plain_rate = throughput(messages, plain).await;
    println!("echo of {messages} x ~1 KiB JSON text, 16 in flight, one connection:");
    println!("  uncompressed             {plain_rate:10.0} msg/s");
    for &(name, d) in &configs {
        let rate = throughput(messages, plain.deflate(Some(d))).await;
        println!(
            "  {name:24} {rate:10.0} msg/s  ({:.2}x of uncompressed)",
            rate / plain_rate
        );
    }
}
