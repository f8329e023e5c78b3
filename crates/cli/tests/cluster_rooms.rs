//! The room list of nodes sharing rooms through a real `redis-server`: pages of at most 100,
//! rooms with members first (counted across nodes), a cursor that walks every room once, on
//! the WebSocket and the backend API alike, and counts that stay true when a node dies.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use duplex_testkit::redis::RedisServer;
use serde_json::{json, Value};
use support::Serve;

/// Time any single expected frame may take.
const WAIT: Duration = Duration::from_secs(10);
/// The hub's page size (`duplex_hub::protocol::ROOMS_PER_PAGE`, documented in the README).
const PAGE: usize = 100;
/// The backend API key of the nodes.
const KEY: &str = "rooms-test-key-0123456789";

/// A node of the cluster on `redis`, with the API on.
fn node(redis: &RedisServer, key_file: &str) -> Serve {
    let url = redis.url();
    Serve::start(&[
        "--redis",
        url.as_str(),
        "--presence-ttl",
        "2",
        "--api-key-file",
        key_file,
    ])
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

    /// A plain-text client in room `room` (it joins with the connection).
    async fn plain(node: &Serve, room: &str, name: &str) -> Client {
        let url = format!("{}?name={name}", node.room(room));
        let (ws, _) = duplex::connect(&url).await.expect("connect");
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// The next JSON frame, within [`WAIT`].
    async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.recv())
                .await
                .expect("a frame in time")
                .expect("the connection open")
                .expect("a frame");
            if let Message::Text(text) = msg {
                return serde_json::from_str(text.as_str()).expect("JSON");
            }
        }
    }

    /// One page of the room list.
    async fn rooms(&mut self, cursor: Option<&str>) -> Value {
        let mut ask = json!({"type": "rooms"});
        if let Some(cursor) = cursor {
            ask["cursor"] = cursor.into();
        }
        self.send(ask).await;
        loop {
            let v = self.next().await;
            if v["type"] == "rooms" || v["type"] == "error" {
                return v;
            }
        }
    }

    /// Every page, following `next` to the end.
    async fn all_pages(&mut self) -> Vec<Value> {
        let mut pages = vec![self.rooms(None).await];
        while let Some(next) = pages.last().and_then(|p| p["next"].as_str()) {
            let next = next.to_owned();
            pages.push(self.rooms(Some(&next)).await);
        }
        pages
    }
}

/// A request to the node's HTTP API: (status, JSON body).
fn api(node: &Serve, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut tcp = std::net::TcpStream::connect(node.addr()).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let body = body.unwrap_or("");
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    tcp.read_to_string(&mut response).expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn names(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("a name").to_owned())
        .collect()
}

fn members(page: &Value, room: &str) -> Option<u64> {
    page["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == room)
        .and_then(|r| r["members"].as_u64())
}

/// Asks for the first page until `ok` accepts it (presence changes reach Redis a moment
/// after the client's socket closes).
async fn first_page_until(client: &mut Client, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let page = client.rooms(None).await;
        if ok(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "{what}: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_pages_busy_rooms_first_across_nodes_and_stays_true_when_a_node_dies() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, KEY).expect("the key file");
    let key_file = key_file.to_str().expect("utf-8").to_owned();
    let (a, mut b) = (node(&redis, &key_file), node(&redis, &key_file));

    // 130 rooms with history and nobody in them, published through A's API.
    let idle: Vec<String> = (0..130).map(|i| format!("idle{i:03}")).collect();
    for room in &idle {
        let (status, reply) = api(
            &a,
            "POST",
            &format!("/api/rooms/{room}/messages"),
            Some(r#"{"text":"hi","from":"ci"}"#),
        );
        assert_eq!(status, 201, "{reply}");
    }
    // "busy": one member on A and two on B; "quiet": one on B and no history.
    let _ann = Client::plain(&a, "busy", "ann").await;
    let _bob = Client::plain(&b, "busy", "bob").await;
    let _cat = Client::plain(&b, "busy", "cat").await;
    let quiet = Client::plain(&b, "quiet", "dan").await;

    let mut viewer = Client::json(&a.ws).await;
    first_page_until(&mut viewer, "three in busy, one in quiet", |p| {
        members(p, "busy") == Some(3) && members(p, "quiet") == Some(1)
    })
    .await;
    let pages = viewer.all_pages().await;
    assert_eq!(pages.len(), 2, "132 rooms in pages of {PAGE}");
    assert_eq!(names(&pages[0]).len(), PAGE);
    assert_eq!(names(&pages[0])[..3], ["busy", "quiet", "idle000"]);
    assert_eq!(pages[0]["rooms"][2]["last_seq"], 1);
    assert_eq!(pages[0]["next"], "n.idle097");
    assert!(pages[1].get("next").is_none(), "the last page has no next");
    let all: Vec<String> = pages.iter().flat_map(names).collect();
    let mut want = vec!["busy".to_owned(), "quiet".to_owned()];
    want.extend(idle.iter().cloned());
    assert_eq!(all, want, "every room once, in list order");

    // The API pages the same way, from either node.
    let (status, first) = api(&b, "GET", "/api/rooms", None);
    assert_eq!(status, 200, "{first}");
    assert_eq!(names(&first), names(&pages[0]));
    let next = first["next"].as_str().expect("a next");
    let (status, second) = api(&b, "GET", &format!("/api/rooms?cursor={next}"), None);
    assert_eq!(status, 200, "{second}");
    assert_eq!(names(&second), names(&pages[1]));
    assert!(second.get("next").is_none());
    let (status, bad) = api(&b, "GET", "/api/rooms?cursor=bogus", None);
    assert_eq!((status, &bad["code"]), (400, &json!("bad_cursor")));
    let refused = viewer.rooms(Some("bogus")).await;
    assert_eq!(refused["code"], "bad_cursor");

    // A room whose last member leaves drops out of the busy run (and, with no history, out
    // of the list).
    drop(quiet);
    first_page_until(&mut viewer, "quiet gone", |p| members(p, "quiet").is_none()).await;

    // B dies with two of busy's members: once their presence expires (ttl 2 s), the list
    // counts the one left, though no node told the active set.
    b.kill();
    let page = first_page_until(&mut viewer, "busy down to ann", |p| {
        members(p, "busy") == Some(1)
    })
    .await;
    assert_eq!(names(&page)[0], "busy");
}
