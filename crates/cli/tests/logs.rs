//! `duplex serve 2>file`: log lines in a file carry no colour codes, and `--log-format json`
//! writes one JSON object per line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_duplex");
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `duplex serve` with `flags`, stderr into a file, opens one WebSocket on /echo, stops
/// the server with SIGTERM and returns what it logged.
fn serve_logs(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("server.log");
    let data = dir.path().join("data");
    let log = File::create(&log_path).expect("log file");
    let mut child = Command::new(BIN)
        .args(flags)
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--data"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start duplex serve");
    let mut banner = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut banner).expect("read the banner");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ws://")?.strip_suffix("/echo"))
        .unwrap_or_else(|| panic!("no echo URL in {banner:?}"))
        .to_owned();

    upgrade(&addr);
    stop(child);
    std::fs::read_to_string(&log_path).expect("read the log")
}

/// A WebSocket handshake on /echo (the hub logs the opened connection), then a hang-up.
fn upgrade(addr: &str) {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
    write!(
        tcp,
        "GET /echo HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("send the request");
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => response.push(byte[0]),
            _ => break,
        }
    }
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 101"),
        "not upgraded: {response:?}"
    );
}

/// SIGTERM (the server logs its shutdown), then waits for the exit.
fn stop(mut child: Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !sent {
        let _ = child.kill();
    }
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("duplex serve did not stop within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn log_lines_in_a_file_have_no_escape_codes() {
    let log = serve_logs(&[]);
    assert!(
        log.contains("echo connection opened"),
        "no connection logged: {log:?}"
    );
    assert!(log.lines().count() >= 3, "too few log lines: {log:?}");
    assert!(!log.contains('\x1b'), "escape codes in the log: {log:?}");
}

#[test]
fn json_log_lines_are_json_objects() {
    let log = serve_logs(&["--log-format", "json"]);
    assert!(log.lines().count() >= 3, "too few log lines: {log:?}");
    assert!(!log.contains('\x1b'), "escape codes in the log: {log:?}");
    let mut opened = false;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(value.is_object(), "not an object: {line:?}");
        assert!(value["level"].is_string(), "no level: {line:?}");
        opened |= value["fields"]["message"] == "echo connection opened";
    }
    assert!(opened, "no connection logged: {log:?}");
}

#[test]
fn the_log_format_is_checked() {
    let out = Command::new(BIN)
        .args(["serve", "--log-format", "xml"])
        .output()
        .expect("run duplex");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("xml"), "{err}");
}
