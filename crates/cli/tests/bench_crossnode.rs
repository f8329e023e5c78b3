//! `duplex bench --crossnode`: the cross-node plan's two protocols, run briefly. duplex's JSON
//! against one `duplex serve` that both "nodes" of the URL list point at; Socket.IO's
//! engine.io framing against a stand-in written with the library (no Node.js needed), which
//! also pings, so the plan's pongs are checked.

mod support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use duplex::Message;
use support::{Serve, TestServer};
use tokio::sync::broadcast;

/// Runs `duplex bench --crossnode` with `extra` and returns its JSON report.
fn crossnode(nodes: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        "--crossnode",
        nodes,
        "-c",
        "6",
        "-s",
        "48",
        "--in-flight",
        "2",
        "-d",
        "1s",
        "--warmup",
        "300ms",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = support::run(&args, b"", Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "bench failed: {}", out.stderr);
    serde_json::from_str(out.out().trim()).expect("one JSON report")
}

fn assert_delivered(report: &serde_json::Value, protocol: &str) {
    assert_eq!(report["mode"], "crossnode", "{report}");
    assert_eq!(report["protocol"], protocol, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["connected"], 6, "{report}");
    assert!(report["sent"].as_u64() > Some(0), "{report}");
    assert!(report["messages"].as_u64() > Some(0), "{report}");
    // Subscribers alternate between the nodes: both delivered.
    let by_node = report["deliveries_by_node"].as_array().expect("by node");
    assert_eq!(by_node.len(), 2, "{report}");
    assert!(by_node.iter().all(|n| n.as_u64() > Some(0)), "{report}");
    assert!(report["latency_us"]["p50"].as_f64() > Some(0.0), "{report}");
}

#[test]
fn duplex_json_over_two_urls_of_one_hub() {
    let serve = Serve::start(&["--rate-limit", "0"]);
    let nodes = format!("{},{}", serve.ws, serve.room("bench"));
    let pid = serve.pid().to_string();
    let report = crossnode(&nodes, &["--server-pid", &pid, "--publishers", "2"]);
    assert_delivered(&report, "duplex");
    assert_eq!(report["publishers"], 2);
    let each = report["server_cpu_secs_each"]
        .as_array()
        .expect("CPU by pid");
    assert_eq!(each.len(), 1, "{report}");
    assert!(report["messages_per_server_cpu_sec"].as_f64() > Some(0.0));
}

#[test]
fn duplex_json_at_a_fixed_rate() {
    let serve = Serve::start(&["--rate-limit", "0"]);
    let nodes = format!("{},{}", serve.ws, serve.ws);
    let report = crossnode(&nodes, &["--rate", "50"]);
    assert_delivered(&report, "duplex");
    // 50 messages per second for one second, give or take the scheduler.
    let sent = report["sent"].as_u64().expect("sent");
    assert!((30..=60).contains(&sent), "{report}");
}

/// A Socket.IO 4 stand-in: engine.io's open packet, the namespace connect, `join` and `send`
/// events answered with `message` events to everyone who joined, and a ping every 100 ms.
fn socketio_stand_in(pongs: Arc<AtomicU64>) -> TestServer {
    let (room, _) = broadcast::channel::<String>(4096);
    TestServer::start(move |tcp| {
        let room = room.clone();
        let pongs = pongs.clone();
        async move {
            let Ok(mut ws) = duplex::accept(tcp).await else {
                return;
            };
            let open = r#"0{"sid":"s","upgrades":[],"pingInterval":100,"pingTimeout":5000,"maxPayload":1000000}"#;
            if ws.send(Message::text(open)).await.is_err() {
                return;
            }
            let mut members: Option<broadcast::Receiver<String>> = None;
            let mut ping = tokio::time::interval(Duration::from_millis(100));
            loop {
                let heard = async {
                    match &mut members {
                        Some(rx) => rx.recv().await.ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    msg = ws.recv() => {
                        let Some(Ok(msg)) = msg else { return };
                        let Some(text) = msg.as_text() else { continue };
                        let reply = match text {
                            "40" => Some(r#"40{"sid":"n"}"#.to_owned()),
                            "3" => {
                                pongs.fetch_add(1, Relaxed);
                                None
                            }
                            t => {
                                let event: serde_json::Value = t
                                    .strip_prefix("42")
                                    .and_then(|e| serde_json::from_str(e).ok())
                                    .unwrap_or_default();
                                match event[0].as_str() {
                                    Some("join") => members = Some(room.subscribe()),
                                    Some("send") => {
                                        let message = serde_json::json!([
                                            "message",
                                            {"room": event[1]["room"], "from": "x",
                                             "text": event[1]["text"], "time": 0}
                                        ]);
                                        let _ = room.send(format!("42{message}"));
                                    }
                                    _ => {}
                                }
                                None
                            }
                        };
                        if let Some(reply) = reply {
                            if ws.send(Message::text(reply)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(frame) = heard => {
                        if ws.send(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                    _ = ping.tick() => {
                        if ws.send(Message::text("2")).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
}

#[test]
fn socketio_framing_against_a_stand_in() {
    let pongs = Arc::new(AtomicU64::new(0));
    let a = socketio_stand_in(pongs.clone());
    // The two "nodes" share nothing: each is a room of its own, and the publisher (on the
    // first) would reach only half the subscribers. The same stand-in twice, then.
    let nodes = format!("ws://127.0.0.1:{},ws://127.0.0.1:{}/", a.port, a.port);
    let report = crossnode(&nodes, &["--protocol", "socketio"]);
    assert_delivered(&report, "socketio");
    assert!(
        report["nodes"][0]
            .as_str()
            .is_some_and(|n| n.ends_with("/socket.io/?EIO=4&transport=websocket")),
        "{report}"
    );
    assert!(pongs.load(Relaxed) > 0, "no pong answered the pings");
}

#[test]
fn crossnode_options_need_crossnode() {
    let out = support::run(
        &["bench", "ws://127.0.0.1:1/", "--protocol", "socketio"],
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--crossnode"), "{}", out.stderr);
    let out = support::run(
        &["bench", "--crossnode", "--rate=-3", "ws://127.0.0.1:1/"],
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("messages per second"), "{}", out.stderr);
}
