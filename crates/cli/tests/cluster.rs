//! Several `duplex serve --redis` processes sharing rooms through a real `redis-server` on
//! loopback: one order for everyone, resume on another node, Redis killed and restarted, a
//! node killed with SIGKILL, history trimmed or lost, plain-text clients across nodes.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use duplex_testkit::redis::RedisServer;
use serde_json::{json, Value};
use support::Serve;

/// Time any single expected frame may take.
const WAIT: Duration = Duration::from_secs(10);

/// A node of the cluster on `redis`, with `extra` flags.
fn node(redis: &RedisServer, extra: &[&str]) -> Serve {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--presence-ttl", "2"];
    args.extend_from_slice(extra);
    let node = Serve::start(&args);
    // Until it has reached Redis, a node refuses plain-text clients (503) and joins.
    wait_health(&node.addr(), 200, WAIT);
    node
}

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

    async fn plain(url: &str) -> Client {
        let (ws, _) = duplex::connect(url).await.expect("connect");
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

    /// The next text frame, within [`WAIT`].
    async fn text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.recv())
                .await
                .expect("a frame in time")
                .expect("the connection open")
                .expect("a frame");
            if let Message::Text(text) = msg {
                return text.as_str().to_owned();
            }
        }
    }

    async fn next(&mut self) -> Value {
        serde_json::from_str(&self.text().await).expect("JSON")
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

    /// Joins `room` as `name` (after `since`): returns the history frames and the rest up to
    /// its own presence list.
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

/// Two nodes, Ann joined to `lobby` on the first and Bob on the second.
async fn two_in_lobby(redis: &RedisServer, extra: &[&str]) -> (Serve, Serve, Client, Client) {
    let (a, b) = (node(redis, extra), node(redis, extra));
    let mut ann = Client::json(&a.ws).await;
    let mut bob = Client::json(&b.ws).await;
    ann.join("lobby", "ann", None).await;
    bob.join("lobby", "bob", None).await;
    (a, b, ann, bob)
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

/// Waits (up to `limit`) until `GET /healthz` on `addr` answers `status`.
fn wait_health(addr: &str, status: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = health(addr);
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "healthz of {addr} stayed {now}, not {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_nodes_see_every_message_in_one_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_a, _b, mut ann, bob) = two_in_lobby(&redis, &[]).await;
    // Ann hears of Bob, from the other node.
    let joined = ann.until(|v| v["type"] == "presence").await;
    assert_eq!(joined.last().unwrap()["name"], "bob");
    assert_eq!(joined.last().unwrap()["count"], 2);

    let talk = |mut c: Client, who: &'static str| async move {
        for i in 1..=20 {
            c.say(&format!("{who}{i}")).await;
        }
        let got = c.messages_until(40).await;
        (c, got)
    };
    let (ann_side, bob_side) = tokio::join!(talk(ann, "a"), talk(bob, "b"));
    let (ann_got, bob_got) = (ann_side.1, bob_side.1);
    assert_eq!(ann_got, bob_got, "both nodes deliver the same order");
    let seqs: Vec<u64> = ann_got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<_>>(),
        "numbers without gaps or repeats"
    );
    let anns: Vec<&str> = ann_got
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| t.starts_with('a'))
        .collect();
    let said: Vec<String> = (1..=20).map(|i| format!("a{i}")).collect();
    assert_eq!(
        anns, said,
        "each sender's messages in the order it said them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moving_to_another_node_resumes_without_loss_or_duplicates() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_a, b, mut ann, mut bob) = two_in_lobby(&redis, &[]).await;
    for i in 1..=10 {
        bob.say(&format!("m{i}")).await;
    }
    // Ann saw up to 5, then her connection to A is gone.
    let seen = ann.messages_until(5).await;
    assert_eq!(seen.last().unwrap().0, 5);
    drop(ann);
    // Bob goes on talking while Ann comes back on B.
    let talking = tokio::spawn(async move {
        for i in 11..=20 {
            bob.say(&format!("m{i}")).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bob
    });
    let mut ann = Client::json(&b.ws).await;
    let mut got = messages(&ann.join("lobby", "ann", Some(5)).await);
    if got.last().is_none_or(|(s, _)| *s < 20) {
        got.extend(ann.messages_until(20).await);
    }
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (6..=20).collect::<Vec<_>>(), "{got:?}");
    assert!(got.iter().all(|(s, t)| *t == format!("m{s}")));
    talking.await.expect("bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_it_acknowledged() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (mut a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut ann = Client::json(&a.ws).await;
    ann.join("lobby", "ann", None).await;
    for i in 1..=20 {
        ann.say(&format!("n{i}")).await;
    }
    // A message of one's own coming back, numbered, is its acknowledgement.
    let acked = ann.messages_until(20).await;
    a.kill();
    let mut again = Client::json(&b.ws).await;
    let replayed = messages(&again.join("lobby", "ann", Some(0)).await);
    assert_eq!(replayed, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_nodes_refuse_then_recover_with_everything_acknowledged() {
    let Some(mut redis) = RedisServer::start_durable() else {
        return;
    };
    let (a, b, mut ann, mut bob) = two_in_lobby(&redis, &[]).await;
    ann.say("before").await;
    assert_eq!(ann.messages_until(1).await, [(1, "before".to_owned())]);
    assert_eq!(bob.messages_until(1).await, [(1, "before".to_owned())]);

    redis.kill();
    wait_health(&a.addr(), 503, WAIT);
    wait_health(&b.addr(), 503, WAIT);
    ann.say("during").await;
    let refused = ann
        .until(|v| v["type"] == "error" || v["type"] == "message")
        .await;
    let last = refused.last().unwrap();
    assert_eq!(last["type"], "error", "{refused:?}");
    assert_eq!(last["code"], "unavailable");

    redis.restart();
    // Reconnection backs off up to 5 s between attempts.
    wait_health(&a.addr(), 200, Duration::from_secs(20));
    wait_health(&b.addr(), 200, Duration::from_secs(20));
    // Plain-text clients, which cannot be told in JSON, were refused before the upgrade.
    redis.kill();
    wait_health(&a.addr(), 503, WAIT);
    let refused = duplex::connect(&a.ws).await;
    let status = refused.as_ref().err().and_then(duplex::Error::http_status);
    assert_eq!(status.map(|s| s.as_u16()), Some(503), "{refused:?}");
    redis.restart();
    wait_health(&a.addr(), 200, Duration::from_secs(20));
    ann.say("after").await;
    assert_eq!(bob.messages_until(2).await, [(2, "after".to_owned())]);
    let mut carl = Client::json(&b.ws).await;
    let history = messages(&carl.join("lobby", "carl", Some(0)).await);
    assert_eq!(
        history,
        [(1, "before".to_owned()), (2, "after".to_owned())],
        "nothing acknowledged was lost, nothing refused was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_lost_with_redis_is_signalled_to_members_and_to_resumes() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut ann = Client::json(&a.ws).await;
    let first = ann.join("lobby", "ann", None).await;
    let epoch = first[0]["epoch"].as_str().expect("an epoch").to_owned();
    for i in 1..=3 {
        ann.say(&format!("x{i}")).await;
    }
    ann.messages_until(3).await;

    // Redis comes back empty: numbering will start over.
    redis.restart();
    let lost = ann
        .until(|v| v["type"] == "history" && v["gap"] == true)
        .await;
    assert_eq!(lost.last().unwrap()["room"], "lobby");
    wait_health(&b.addr(), 200, Duration::from_secs(20));
    let mut bob = Client::json(&b.ws).await;
    bob.send(json!({"type": "join", "room": "lobby", "name": "bob", "since": 3, "epoch": epoch}))
        .await;
    let history = bob.next().await;
    assert_eq!(history["type"], "history");
    assert_eq!(history["gap"], true, "{history}");
    assert_ne!(history["epoch"], epoch.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_trimmed_history_gets_the_gap_signal() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limit = ["--history-limit", "5"];
    let (a, b) = (node(&redis, &limit), node(&redis, &limit));
    let mut bob = Client::json(&a.ws).await;
    bob.join("lobby", "bob", None).await;
    for i in 1..=12 {
        bob.say(&format!("t{i}")).await;
    }
    bob.messages_until(12).await;
    let mut ann = Client::json(&b.ws).await;
    let frames = ann.join("lobby", "ann", Some(2)).await;
    assert_eq!(frames[0]["type"], "history");
    assert_eq!(frames[0]["gap"], true);
    assert_eq!(frames[0]["first_seq"], 8);
    let seqs: Vec<u64> = messages(&frames).iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [8, 9, 10, 11, 12]);
    // Inside what is held: no gap.
    let mut carl = Client::json(&b.ws).await;
    let frames = carl.join("lobby", "carl", Some(9)).await;
    assert!(frames[0].get("gap").is_none(), "{:?}", frames[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_members_leave_presence_within_the_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, mut b) = (node(&redis, &[]), node(&redis, &[]));
    let mut ann = Client::json(&a.ws).await;
    ann.join("lobby", "ann", None).await;
    let mut carl = Client::json(&b.ws).await;
    let own = carl.join("lobby", "carl", None).await;
    assert_eq!(own.last().unwrap()["members"], json!(["ann", "carl"]));
    ann.until(|v| v["type"] == "presence" && v["name"] == "carl")
        .await;
    b.kill();
    let killed = Instant::now();
    // The ttl is 2 s: expiry, then the next sweep (a third of the ttl later).
    let left = ann
        .until(|v| v["type"] == "presence" && v["event"] == "left")
        .await;
    let left = left.last().unwrap();
    assert_eq!(left["name"], "carl");
    assert_eq!(left["count"], 1);
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "left after {:?}",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_clients_talk_across_nodes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut alice = Client::plain(&format!("{}?name=alice", a.ws)).await;
    let mut bob = Client::plain(&format!("{}?name=bob", b.ws)).await;
    // Bob's node may still be subscribing: Alice repeats herself until he hears her.
    let deadline = Instant::now() + WAIT;
    'heard: loop {
        alice
            .ws
            .send(Message::text("alice: hi"))
            .await
            .expect("send");
        let wait = Instant::now() + Duration::from_millis(200);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(wait.into(), bob.ws.recv()).await {
            if msg.as_text() == Some("alice: hi") {
                break 'heard;
            }
        }
        assert!(Instant::now() < deadline, "bob never heard alice");
    }
    bob.ws.send(Message::text("bob: yo")).await.expect("send");
    loop {
        let text = alice.text().await;
        assert_ne!(
            text, "alice: hi",
            "a plain sender does not get its own text back"
        );
        if text == "bob: yo" {
            break;
        }
    }
}

/// Writes `secret` to a file in `dir` (secrets are passed by file, never on the command line).
fn secret_file(dir: &std::path::Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, secret).expect("write a secret");
    path.to_str().expect("utf-8 path").to_owned()
}

const JWT_SECRET: &str = "a shared secret of at least thirty-two bytes";

fn token(sub: &str, name: &str) -> String {
    use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
    let claims = json!({"sub": sub, "name": name, "exp": get_current_timestamp() + 600});
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("a key");
    encode(&Header::new(Algorithm::HS256), &claims, &key).expect("a token")
}

/// One HTTP request to `addr`; the status and the body.
fn http(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, Value) {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_on_two_nodes_is_one_member_and_the_api_publishes_across_nodes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let jwt = secret_file(dir.path(), "jwt", JWT_SECRET);
    let api = secret_file(dir.path(), "api", "backend-key");
    let flags = [
        "--jwt-secret-file",
        jwt.as_str(),
        "--api-key-file",
        api.as_str(),
    ];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let with = |ws: &str, sub: &str, name: &str| format!("{ws}?token={}", token(sub, name));

    let mut bob = Client::json(&with(&a.ws, "u-bob", "Bob")).await;
    bob.join("lobby", "Bob", None).await;
    let mut phone = Client::json(&with(&a.ws, "u-ann", "Ann")).await;
    phone.join("lobby", "Ann", None).await;
    let joined = bob.until(|v| v["type"] == "presence").await;
    assert_eq!(joined.last().unwrap()["count"], 2);
    // Ann again, from another node: one member still.
    let mut laptop = Client::json(&with(&b.ws, "u-ann", "Ann")).await;
    let own = laptop.join("lobby", "Ann", None).await;
    assert_eq!(own.last().unwrap()["members"], json!(["Bob", "Ann"]));
    assert_eq!(own.last().unwrap()["count"], 2);

    // A backend publishes through node B; members on node A get it with the next number.
    let (status, body) = http(
        &b.addr(),
        "POST",
        "/api/rooms/lobby/messages",
        "backend-key",
        r#"{"text": "deploy done", "from": "ci"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["seq"], 1);
    let got = bob.messages_until(1).await;
    assert_eq!(got, [(1, "deploy done".to_owned())]);
    // Nothing about Ann's second connection reached Bob before the message.
    let (status, body) = http(
        &a.addr(),
        "GET",
        "/api/rooms/lobby/messages?since=0",
        "backend-key",
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(body["messages"][0]["from"], "ci");
    let (_, body) = http(
        &a.addr(),
        "GET",
        "/api/rooms/lobby/presence",
        "backend-key",
        "",
    );
    assert_eq!(body["members"], json!(["Bob", "Ann"]), "{body}");

    // Ann's phone goes; she is still there on her laptop, so nobody is told.
    drop(phone);
    bob.say("still there?").await;
    let next = bob.next().await;
    assert_eq!(
        next["type"], "message",
        "no presence event before it: {next}"
    );
    // Her last connection goes: now she leaves.
    drop(laptop);
    let left = bob.until(|v| v["type"] == "presence").await;
    assert_eq!(left.last().unwrap()["event"], "left");
    assert_eq!(left.last().unwrap()["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_over_tls_with_its_ca_and_refuse_an_unknown_certificate() {
    let pki = duplex_testkit::pki::TestPki::new(&["127.0.0.1", "localhost"]);
    let Some(redis) = RedisServer::start_tls(pki.cert(), pki.key(), pki.ca()) else {
        return;
    };
    let url = redis.tls_url().expect("a TLS port");
    let ca = pki.ca();
    let ca = ca.to_str().expect("utf-8 path");
    let trusted = Serve::start(&["--redis", &url, "--redis-ca-file", ca]);
    wait_health(&trusted.addr(), 200, WAIT);
    let mut ann = Client::json(&trusted.ws).await;
    ann.join("lobby", "ann", None).await;
    ann.say("over TLS").await;
    assert_eq!(ann.messages_until(1).await, [(1, "over TLS".to_owned())]);
    // The public roots do not know the test CA: the node stays degraded.
    let untrusting = Serve::start(&["--redis", &url]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(health(&untrusting.addr()), 503);
}
