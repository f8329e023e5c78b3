//! A hub on a loopback port with its own temporary data directory, and clients for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use duplex::{ClientBuilder, CloseCode, Message, WebSocket};
use duplex_hub::{Hub, HubConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocket<TcpStream>;

/// A running hub; stopped (gracefully) by [`TestHub::stop`], or aborted when dropped.
pub struct TestHub {
    pub addr: std::net::SocketAddr,
    pub data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<duplex_hub::Result<()>>>,
}

impl TestHub {
    /// Starts a hub with `config` (whose data_dir is used as is).
    pub async fn start(config: HubConfig) -> TestHub {
        let data = config.data_dir.clone();
        let addr = "127.0.0.1:0".parse().unwrap();
        let hub = Hub::bind(&[addr], config).await.expect("bind the hub");
        let addr = hub.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hub.run(async {
            let _ = stopped.await;
        }));
        TestHub {
            addr,
            data,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A config with a short close timeout, on `dir`.
    pub fn config(dir: &Path) -> HubConfig {
        HubConfig::new(dir).close_timeout(Duration::from_secs(1))
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Shuts down gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> duplex_hub::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        timeout(Duration::from_secs(20), task)
            .await
            .expect("hub stops in time")
            .expect("hub task")
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A plain-text chat client (no subprotocol).
pub async fn plain(hub: &TestHub, path: &str) -> Ws {
    let ws = connect(hub, ClientBuilder::new(&hub.url(path)).unwrap())
        .await
        .expect("connect");
    assert_eq!(ws.protocol(), None);
    ws
}

/// Connects over a plain TCP stream (the tests need no TLS).
pub async fn connect(hub: &TestHub, builder: ClientBuilder) -> duplex::Result<Ws> {
    let handshake = async {
        let tcp = TcpStream::connect(hub.addr).await?;
        builder.handshake_on(tcp).await
    };
    let (ws, _) = timeout(WAIT, handshake).await.expect("handshake in time")?;
    Ok(ws)
}

/// A JSON client (`duplex.v1`) that has not joined yet.
pub async fn json_client(hub: &TestHub, path: &str) -> Ws {
    let builder = ClientBuilder::new(&hub.url(path))
        .unwrap()
        .protocol("duplex.v1");
    let ws = connect(hub, builder).await.expect("connect");
    assert_eq!(ws.protocol(), Some("duplex.v1"));
    ws
}

/// A JSON client that joined the URL's room as `name` (after `since` if given), with its
/// history replay and its own presence event consumed. Returns the replayed messages.
pub async fn joined(hub: &TestHub, path: &str, name: &str, since: Option<u64>) -> (Ws, Vec<Value>) {
    let mut ws = json_client(hub, path).await;
    let mut join = json!({"type": "join", "name": name});
    if let Some(since) = since {
        join["since"] = json!(since);
    }
    send_json(&mut ws, join).await;
    let mut history = Vec::new();
    loop {
        let msg = recv_json(&mut ws).await;
        match msg["type"].as_str() {
            Some("history") => history.extend(msg["messages"].as_array().unwrap().iter().cloned()),
            Some("presence") if msg["name"] == name && msg["event"] == "joined" => {
                // The joiner's own presence, and only that one, lists the room.
                let members = msg["members"].as_array().expect("members on own join");
                assert!(members.iter().any(|m| m == name), "{msg}");
                assert_eq!(msg["count"].as_u64(), Some(members.len() as u64), "{msg}");
                break;
            }
            _ => panic!("unexpected before own presence: {msg}"),
        }
    }
    (ws, history)
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

pub async fn say(ws: &mut Ws, text: &str) {
    send_json(ws, json!({"type": "send", "text": text})).await;
}

/// The next text message (pings and pongs skipped); panics on anything else or a timeout.
pub async fn recv_text(ws: &mut Ws) -> String {
    loop {
        let msg = timeout(WAIT, ws.recv())
            .await
            .expect("a message in time")
            .expect("connection open")
            .expect("a message");
        match msg {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

pub async fn recv_json(ws: &mut Ws) -> Value {
    let text = recv_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next JSON message of type `kind`, skipping presence events.
pub async fn recv_kind(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let msg = recv_json(ws).await;
        if msg["type"] == kind {
            return msg;
        }
        assert_eq!(msg["type"], "presence", "expected {kind}, got {msg}");
    }
}

/// Asserts nothing arrives for a moment.
pub async fn assert_silent(ws: &mut Ws) {
    if let Ok(msg) = timeout(Duration::from_millis(300), ws.recv()).await {
        panic!("expected silence, got {msg:?}");
    }
}

/// Reads until the server's close frame and returns its code, skipping data messages.
pub async fn close_code(ws: &mut Ws) -> CloseCode {
    loop {
        match timeout(WAIT, ws.recv()).await.expect("close in time") {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| f.code).unwrap_or(CloseCode::NO_STATUS)
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before the close frame: {e}"),
            None => panic!("ended without a close frame"),
        }
    }
}

/// A plain HTTP GET; returns the status line's code, the head and the body.
pub async fn http_get(hub: &TestHub, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", hub.addr);
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().expect("a status");
    (status, head.to_owned(), body.to_owned())
}
