//! Node.js as an independent peer: a script written to a temporary directory and run with
//! `node`, as a server (it prints `PORT <n>` once listening) or as a client run to its end.
//!
//! Where `node` is missing, [`NodeScript::new`] returns `None` after saying so on stderr, so
//! that a developer without it can still run the other tests; under CI (`CI` set to anything
//! but `false`) it panics instead: there, a missing component is a failure.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A JavaScript file in a temporary directory (removed when dropped).
#[derive(Debug)]
pub struct NodeScript {
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// Whether `node` runs here.
pub fn installed() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl NodeScript {
    /// Writes `source` as `name` (`server.js`); `None` if `node` is not installed (and not under
    /// CI, where that panics).
    pub fn new(name: &str, source: &str) -> Option<NodeScript> {
        if !installed() {
            let ci = std::env::var("CI").is_ok_and(|v| v != "false");
            assert!(
                !ci,
                "node is not installed (apt-get install nodejs); CI needs it"
            );
            eprintln!("skipped: node is not installed (apt-get install nodejs)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("duplex-node-")
            .tempdir()
            .expect("a temporary directory");
        let path = dir.path().join(name);
        std::fs::write(&path, source).expect("write the script");
        Some(NodeScript { dir, path })
    }

    /// The directory the script is in (for files it needs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("node");
        cmd.arg(&self.path).args(args);
        cmd
    }

    /// Runs the script to its end with `args`, killing it after `timeout`; its output.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Output {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node");
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait().expect("wait for node").is_some() {
                return child.wait_with_output().expect("node's output");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let mut out = child.wait_with_output().expect("node's output");
                out.stderr
                    .extend_from_slice(format!("\n(killed after {timeout:?})").as_bytes());
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the script as a server with `args` and waits (up to 10 s) for its `PORT <n>`
    /// line. Its later stdout lines are kept ([`NodeServer::lines`]); dropping it kills it.
    pub fn serve(&self, args: &[&str]) -> NodeServer {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("node's stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let port = loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix("PORT ") {
                        break port.trim().parse().expect("a port number");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = stderr.read_to_string(&mut err);
                    }
                    panic!("the node server did not print its port: {err}");
                }
            }
        };
        NodeServer {
            child,
            port,
            lines: rx,
        }
    }
}

/// A running Node server (see [`NodeScript::serve`]).
#[derive(Debug)]
pub struct NodeServer {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl NodeServer {
    /// The port it listens on (loopback).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The stdout lines it printed since the port (or the last call).
    pub fn lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
