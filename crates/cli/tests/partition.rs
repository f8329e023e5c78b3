//! A real network partition between one node and Redis: node A runs in a network namespace
//! of its own and reaches Redis (in the root namespace) over one veth pair, its clients
//! over another; node B runs in the root namespace on loopback. The Redis link is cut
//! silently (packets vanish: no reset, no ICMP), then healed.
//!
//! ```text
//!   root namespace                                  namespace dxa-XXXXXX
//!   redis-server 127.0.0.1, R.1 ---- veth (Redis) ---- R.2   node A
//!   node B 127.0.0.1                                          |
//!   test clients ----------------- veth (clients) ---- C.2 ---+
//! ```
//!
//! Needs root and `ip` (iproute2): elsewhere it is skipped with a message, except under CI.

mod support;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use duplex_testkit::netns::Netns;
use duplex_testkit::redis::RedisServer;
use serde_json::{json, Value};
use support::{Serve, BIN};

/// Time any single expected frame may take.
const WAIT: Duration = Duration::from_secs(10);
/// Presence expiry of both nodes, in seconds (a sweep runs every third of it).
const TTL: &str = "2";
/// How long the link stays cut.
const PARTITION: Duration = Duration::from_secs(15);

struct Client {
    ws: WebSocket<MaybeTlsStream>,
}

impl Client {
    async fn json(url: &str) -> Client {
        let (ws, _) = ClientBuilder::new(url)
            .expect("url")
            .protocol("duplex.v1")
            .connect()
            .await
            .expect("connect");
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    async fn say(&mut self, text: &str) {
        self.send(json!({"type": "send", "text": text})).await;
    }

    /// The next JSON frame, within `limit`.
    async fn next_within(&mut self, limit: Duration) -> Value {
        loop {
            let msg = tokio::time::timeout(limit, self.ws.recv())
                .await
                .expect("a frame in time")
                .expect("the connection open")
                .expect("a frame");
            if let Message::Text(text) = msg {
                return serde_json::from_str(text.as_str()).expect("JSON");
            }
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(WAIT).await
    }

    /// Frames up to and including the first that `done` accepts.
    async fn until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let v = self.next().await;
            let last = done(&v);
            seen.push(v);
            if last {
                return seen;
            }
        }
    }

    /// Joins `room` as `name`: the frames up to its own presence list.
    async fn join(&mut self, room: &str, name: &str, since: Option<u64>) -> Vec<Value> {
        let mut join = json!({"type": "join", "room": room, "name": name});
        if let Some(since) = since {
            join["since"] = since.into();
        }
        self.send(join).await;
        self.until(|v| v["type"] == "presence" && v.get("members").is_some())
            .await
    }

    /// Messages received until one numbered `seq` (history replays included), as (seq, text).
    async fn messages_until(&mut self, seq: u64) -> Vec<(u64, String)> {
        let mut got = Vec::new();
        while got.last().is_none_or(|(s, _)| *s < seq) {
            got.extend(messages(&[self.next().await]));
        }
        got
    }
}

/// The messages in `frames`, from `message` and `history` frames alike, as (seq, text).
fn messages(frames: &[Value]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for f in frames {
        let list = match f["type"].as_str() {
            Some("message") => vec![f.clone()],
            Some("history") => f["messages"].as_array().cloned().unwrap_or_default(),
            _ => continue,
        };
        for m in list {
            let seq = m["seq"].as_u64().expect("seq");
            out.push((seq, m["text"].as_str().unwrap_or_default().to_owned()));
        }
    }
    out
}

fn said(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(s, t)| (*s, (*t).to_owned())).collect()
}

/// The status code of `GET /healthz` on `addr` (0 when it cannot be asked).
fn health(addr: &str) -> u16 {
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 64];
    let n = tcp.read(&mut head).unwrap_or(0);
    String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits (up to `limit`) until `GET /healthz` on `addr` answers `status`; returns how long
/// since `from` it took.
async fn wait_health(addr: &str, status: u16, from: Instant, limit: Duration) -> Duration {
    let deadline = from + limit;
    loop {
        let asked = addr.to_owned();
        let now = tokio::task::spawn_blocking(move || health(&asked))
            .await
            .expect("healthz");
        if now == status {
            return from.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "healthz of {addr} stayed {now}, not {status}, for {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_refuses_then_catches_up_and_rejoins_after_the_heal() {
    // Declared first, dropped last: the processes inside go before their namespace.
    let Some(mut ns) = Netns::create("dxa") else {
        return;
    };
    let redis_link = ns.veth();
    let client_link = ns.veth();
    let Some(redis) = RedisServer::start_also_on(&[IpAddr::V4(redis_link.root_addr)]) else {
        return;
    };
    let a = Serve::start_with(
        ns.command(BIN),
        &client_link.ns_addr.to_string(),
        &[
            "--redis",
            &redis.url_at(IpAddr::V4(redis_link.root_addr)),
            "--presence-ttl",
            TTL,
        ],
    );
    let b = Serve::start(&["--redis", &redis.url(), "--presence-ttl", TTL]);
    let started = Instant::now();
    wait_health(&a.addr(), 200, started, WAIT).await;
    wait_health(&b.addr(), 200, started, WAIT).await;

    // Both nodes talk.
    let mut ann = Client::json(&a.ws).await;
    let mut bob = Client::json(&b.ws).await;
    ann.join("lobby", "ann", None).await;
    let own = bob.join("lobby", "bob", None).await;
    assert_eq!(own.last().unwrap()["members"], json!(["ann", "bob"]));
    ann.until(|v| v["type"] == "presence" && v["name"] == "bob")
        .await;
    ann.say("a1").await;
    assert_eq!(ann.messages_until(1).await, said(&[(1, "a1")]));
    bob.say("b1").await;
    assert_eq!(bob.messages_until(2).await, said(&[(1, "a1"), (2, "b1")]));
    assert_eq!(ann.messages_until(2).await, said(&[(2, "b1")]));

    // The cut: A stops hearing from Redis, and Redis from A, without a word.
    ns.cut(&redis_link);
    let cut = Instant::now();
    // Said before A notices: its round trip times out, and Ann is told it was not stored.
    ann.say("limbo").await;
    // On B, meanwhile, Ann's presence expires (after the ttl) and is swept (within a third
    // of it), and B's members are told.
    let leaving = tokio::spawn(async move {
        let frames = bob
            .until(|v| v["type"] == "presence" && v["event"] == "left")
            .await;
        (bob, cut.elapsed(), frames)
    });
    let to_503 = wait_health(&a.addr(), 503, cut, WAIT).await;
    eprintln!("A's /healthz said 503 {to_503:?} after the cut");
    let limbo = ann
        .until(|v| v["type"] == "error" || v["type"] == "message")
        .await;
    assert_eq!(limbo.last().unwrap()["code"], "unavailable", "{limbo:?}");
    ann.say("refused").await;
    let refused = ann
        .until(|v| v["type"] == "error" || v["type"] == "message")
        .await;
    let last = refused.last().unwrap();
    assert_eq!(last["type"], "error", "{refused:?}");
    assert_eq!(last["code"], "unavailable");

    let (mut bob, left_after, frames) = leaving.await.expect("bob");
    eprintln!("B saw ann leave {left_after:?} after the cut");
    let left = frames.last().unwrap();
    assert_eq!((&left["name"], &left["count"]), (&json!("ann"), &json!(1)));
    assert!(
        left_after < Duration::from_secs(6),
        "left after {left_after:?}"
    );
    assert!(messages(&frames).is_empty(), "nothing of A's: {frames:?}");
    // B goes on serving its members.
    assert_eq!(health(&b.addr()), 200, "B is not affected");
    for text in ["p1", "p2", "p3"] {
        bob.say(text).await;
    }
    assert_eq!(
        bob.messages_until(5).await,
        said(&[(3, "p1"), (4, "p2"), (5, "p3")])
    );
    let mut carl = Client::json(&b.ws).await;
    let own = carl.join("lobby", "carl", None).await;
    assert_eq!(own.last().unwrap()["members"], json!(["bob", "carl"]));
    bob.until(|v| v["type"] == "presence" && v["name"] == "carl")
        .await;

    // Held long enough for A's reconnection attempts to back off to their cap (5 s), and for
    // the connections it had open to retransmit into the void for a while.
    tokio::time::sleep_until((cut + PARTITION).into()).await;
    assert_eq!(health(&a.addr()), 503, "still cut off");

    // The heal: A reconnects within its backoff (at most 5 s) plus a connection attempt's
    // 2 s, and catches up (a round trip): 10 s is generous.
    ns.heal(&redis_link);
    let healed = Instant::now();
    let rejoining = tokio::spawn(async move {
        let frames = bob
            .until(|v| v["type"] == "presence" && v["event"] == "joined")
            .await;
        (bob, healed.elapsed(), frames)
    });
    let to_200 = wait_health(&a.addr(), 200, healed, Duration::from_secs(10)).await;
    eprintln!("A's /healthz said 200 {to_200:?} after the heal");
    // Ann, connected to A throughout, gets what was said meanwhile, once each and in order.
    let caught_up = ann.messages_until(5).await;
    eprintln!("ann had caught up {:?} after the heal", healed.elapsed());
    assert_eq!(caught_up, said(&[(3, "p1"), (4, "p2"), (5, "p3")]));
    // A's refresh puts her back into presence, announced to B's members.
    let (mut bob, rejoined, frames) = rejoining.await.expect("bob");
    eprintln!("B saw ann rejoin {rejoined:?} after the heal");
    let back = frames.last().unwrap();
    assert_eq!((&back["name"], &back["count"]), (&json!("ann"), &json!(3)));
    assert!(messages(&frames).is_empty(), "{frames:?}");

    // Traffic flows both ways again, with nothing repeated and nothing refused.
    ann.say("a2").await;
    bob.say("b2").await;
    let ann_got = ann.messages_until(7).await;
    let bob_got = bob.messages_until(7).await;
    assert_eq!(ann_got, bob_got, "one order on both nodes");
    let mut texts: Vec<&str> = ann_got.iter().map(|(_, t)| t.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["a2", "b2"], "{ann_got:?}");
    assert_eq!(
        ann_got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [6, 7],
        "no repeats, no gaps"
    );

    // Everything acknowledged is in the history, nothing refused.
    let mut dora = Client::json(&a.ws).await;
    let frames = dora.join("lobby", "dora", Some(0)).await;
    let texts: Vec<String> = messages(&frames).into_iter().map(|(_, t)| t).collect();
    let mut expected = vec!["a1", "b1", "p1", "p2", "p3"];
    expected.extend(ann_got.iter().map(|(_, t)| t.as_str()));
    assert_eq!(texts, expected);
    assert_eq!(
        frames.last().unwrap()["members"],
        json!(["ann", "bob", "carl", "dora"])
    );
    eprintln!("the whole test took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60));
}
