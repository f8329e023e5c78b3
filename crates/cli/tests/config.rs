//! `duplex serve --config duplex.toml` and the `DUPLEX_*` environment variables: the file's
//! values seen in behaviour (the banner's port, a history trimmed to the file's limit),
//! flags > environment > file, and files refused at start with the key, file and line named.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use duplex::{ClientBuilder, MaybeTlsStream, Message, WebSocket};
use serde_json::{json, Value};
use support::{wait, BIN};

const LIMIT: Duration = Duration::from_secs(20);

/// `duplex serve --config FILE` with `flags` and `env` (and no other `DUPLEX_*` variable).
fn command(file: &Path, flags: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("serve").arg("--config").arg(file).args(flags);
    for (name, _) in std::env::vars() {
        if name.starts_with("DUPLEX_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server and reads the port from its banner.
fn start(file: &Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = command(file, flags, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start duplex serve");
    let mut banner = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut banner).expect("read the banner");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let port = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://127.0.0.1:")?.strip_suffix('/'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no http://127.0.0.1:PORT/ in {banner:?}"));
    Server { child, port }
}

/// Runs a server that must refuse to start; returns its stderr.
fn refused(file: &Path, flags: &[&str]) -> String {
    let child = command(file, flags, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duplex serve");
    let out = wait(child, LIMIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    out.stderr
}

/// Ports nothing listens on (bound then released), distinct.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("addr").port())
}

/// A directory with `duplex.toml` holding `text`.
fn config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("duplex.toml");
    std::fs::write(&file, text).expect("write the file");
    (dir, file)
}

async fn client(port: u16) -> WebSocket<MaybeTlsStream> {
    let (ws, _) = ClientBuilder::new(&format!("ws://127.0.0.1:{port}/"))
        .expect("url")
        .protocol("duplex.v1")
        .connect()
        .await
        .expect("connect");
    ws
}

async fn next(ws: &mut WebSocket<MaybeTlsStream>) -> Value {
    loop {
        let msg = tokio::time::timeout(LIMIT, ws.recv())
            .await
            .expect("a frame in time")
            .expect("the connection open")
            .expect("a frame");
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

async fn send(ws: &mut WebSocket<MaybeTlsStream>, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Joins `room`; returns the frames up to its own presence list.
async fn join(ws: &mut WebSocket<MaybeTlsStream>, room: &str, name: &str) -> Vec<Value> {
    send(ws, json!({"type": "join", "room": room, "name": name})).await;
    let mut seen = Vec::new();
    loop {
        let v = next(ws).await;
        let done = v["type"] == "presence" && v.get("members").is_some();
        seen.push(v);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn the_file_sets_the_port_and_the_history_limit() {
    let [port] = free_ports();
    // `data` is relative: to the file's directory.
    let (dir, file) = config(&format!(
        "# duplex serve --config duplex.toml\nhost = \"127.0.0.1\"\nport = {port}\n\
         data = \"history\"\nhistory_limit = 3\n"
    ));
    let server = start(&file, &[], &[]);
    assert_eq!(server.port, port);
    assert!(
        dir.path().join("history").is_dir(),
        "data not beside the file"
    );

    let mut ann = client(port).await;
    join(&mut ann, "lobby", "ann").await;
    for i in 1..=6 {
        send(&mut ann, json!({"type": "send", "text": format!("m{i}")})).await;
    }
    loop {
        let v = next(&mut ann).await;
        if v["type"] == "message" && v["seq"] == 6 {
            break;
        }
    }
    let mut bob = client(port).await;
    let frames = join(&mut bob, "lobby", "bob").await;
    let history = frames
        .iter()
        .find(|f| f["type"] == "history")
        .unwrap_or_else(|| panic!("no history in {frames:?}"));
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["m4", "m5", "m6"], "{history}");
}

#[test]
fn the_environment_beats_the_file_and_a_flag_beats_both() {
    let [file_port, env_port, flag_port] = free_ports();
    let (dir, file) = config(&format!("host = \"127.0.0.1\"\nport = {file_port}\n"));
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let env_port_text = env_port.to_string();
    let env = [
        ("DUPLEX_PORT", env_port_text.as_str()),
        ("DUPLEX_DATA", data),
    ];

    let by_file = start(&file, &[], &[("DUPLEX_DATA", data)]);
    assert_eq!(by_file.port, file_port);
    drop(by_file);
    let by_env = start(&file, &[], &env);
    assert_eq!(by_env.port, env_port);
    drop(by_env);
    let by_flag = start(&file, &["--port", &flag_port.to_string()], &env);
    assert_eq!(by_flag.port, flag_port);
}

#[test]
fn the_thread_count_comes_from_the_file_or_the_flag() {
    let (_dir, file) = config("host = \"127.0.0.1\"\nport = 0\nthreads = 3\n");
    for (flags, expected) in [
        (&[][..], "3 worker threads"),
        (&["--threads", "1"][..], "1 worker thread\n"),
    ] {
        let data = tempfile::tempdir().expect("temp dir");
        let mut child = command(&file, flags, &[])
            .arg("--data")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start duplex serve");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut logs = String::new();
        let mut line = String::new();
        while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
            logs.push_str(&line);
            if line.contains("worker thread") {
                break;
            }
            line.clear();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(logs.contains(expected), "{expected:?} not in {logs}");
    }
}

#[test]
fn an_unknown_key_is_refused_with_its_name_the_file_and_the_line() {
    let (_dir, file) = config("host = \"127.0.0.1\"\nhistory-limit = 5\n");
    let err = refused(&file, &[]);
    let shown = format!("{}:2: unknown key `history-limit`", file.display());
    assert!(err.contains(&shown), "{err}");
    assert!(
        err.contains("keys are written with underscores: `history_limit`"),
        "{err}"
    );

    let (_dir, file) = config("colour = \"blue\"\n");
    let err = refused(&file, &[]);
    assert!(
        err.contains(":1: unknown key `colour`; the keys are"),
        "{err}"
    );
    assert!(err.contains("history_limit"), "{err}");
}

#[test]
fn a_bad_value_is_refused_with_its_key() {
    for (text, shown) in [
        ("port = \"high\"\n", ":1: `port`: invalid type"),
        ("port = 70000\n", ":1: `port`: invalid value"),
        (
            "host = \"127.0.0.1\"\npark_after = -2\n",
            ":2: `park_after`: expected seconds",
        ),
        (
            "deflate_level = 12\n",
            ":1: `deflate_level`: expected 0 to 9, got 12",
        ),
        ("trust_proxy = [\"10.0.0.0/40\"]\n", ":1: `trust_proxy`: "),
        ("tls_cert = \"cert.pem\"\n", "--tls-cert needs --tls-key"),
    ] {
        let (_dir, file) = config(text);
        let err = refused(&file, &[]);
        assert!(err.contains(shown), "{text:?}: {err}");
    }
    let err = refused(Path::new("/nonexistent/duplex.toml"), &[]);
    assert!(
        err.contains("/nonexistent/duplex.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn a_secret_in_the_file_is_refused() {
    let (_dir, file) = config("host = \"127.0.0.1\"\ntoken = \"s3cret-value\"\n");
    let err = refused(&file, &[]);
    assert!(
        err.contains(":2: `token`: secrets are not allowed in the configuration file"),
        "{err}"
    );
    assert!(err.contains("token_file"), "{err}");
    assert!(!err.contains("s3cret-value"), "the secret is echoed: {err}");

    let (_dir, file) = config("redis = \"redis://user:pw@127.0.0.1:6379\"\n");
    let err = refused(&file, &[]);
    assert!(
        err.contains("`redis`") && err.contains("DUPLEX_REDIS_URL"),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_file_named_in_the_file_guards_the_upgrades() {
    let [port] = free_ports();
    let (dir, file) = config(&format!(
        "host = \"127.0.0.1\"\nport = {port}\ndata = \"data\"\ntoken_file = \"token\"\n"
    ));
    std::fs::write(dir.path().join("token"), "tok-from-file\n").expect("token file");
    let _server = start(&file, &[], &[]);
    let refused = ClientBuilder::new(&format!("ws://127.0.0.1:{port}/"))
        .expect("url")
        .connect()
        .await;
    assert!(refused.is_err(), "connected without the token");
    let ok = ClientBuilder::new(&format!("ws://127.0.0.1:{port}/?token=tok-from-file"))
        .expect("url")
        .connect()
        .await;
    assert!(ok.is_ok(), "{:?}", ok.err());
}
