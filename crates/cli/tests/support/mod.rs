//! Shared by the `duplex connect` / `duplex chat` tests: a `duplex serve` on an ephemeral
//! loopback port, small servers written with the library for the cases `duplex serve` does
//! not produce (close codes, binary data, silence), and running the client with a deadline.

#![allow(dead_code)] // each test file uses its own part of this

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// A `duplex serve` on an ephemeral loopback port with its own data directory, killed when
/// dropped.
pub struct Serve {
    child: Child,
    /// `ws://127.0.0.1:PORT/` (chat in room general).
    pub ws: String,
    /// `ws://127.0.0.1:PORT/echo`.
    pub echo: String,
    _data: tempfile::TempDir,
}

impl Serve {
    /// Starts `duplex serve` with `extra` flags.
    pub fn start(extra: &[&str]) -> Serve {
        Serve::start_with(Command::new(BIN), "127.0.0.1", extra)
    }

    /// Starts `duplex serve` on `host` with `extra` flags through `cmd`, a command for the
    /// binary (run inside a network namespace, say).
    pub fn start_with(mut cmd: Command, host: &str, extra: &[&str]) -> Serve {
        let data = tempfile::tempdir().expect("data dir");
        let data_arg = data.path().to_str().expect("utf-8 path").to_owned();
        let mut child = cmd
            .args(["serve", "--host", host, "--port", "0", "--data", &data_arg])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start duplex serve");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("read the banner");
        // Keep reading: with --token it prints a second line, and a closed stdout would make
        // that print fail and the server exit.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let echo = line
            .split_whitespace()
            .find(|w| w.ends_with("/echo"))
            .unwrap_or_else(|| panic!("no echo URL in {line:?}"))
            .to_string();
        let ws = echo.trim_end_matches("echo").to_string();
        Serve {
            child,
            ws,
            echo,
            _data: data,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with `SIGKILL`: no graceful shutdown, nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.ws
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned()
    }

    /// The URL of room `name`.
    pub fn room(&self, name: &str) -> String {
        format!("{}rooms/{name}", self.ws)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run of the client produced.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `duplex ARGS` with `stdin` as its input and waits for it, killing it (and failing)
/// after `limit`.
pub fn run(args: &[&str], stdin: &[u8], limit: Duration) -> Outcome {
    finish(spawn(args), stdin.to_vec(), limit)
}

/// Starts `duplex ARGS` with piped stdin, stdout and stderr, and no proxy settings from the
/// environment (the tests' servers are on loopback).
pub fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duplex")
}

/// Feeds `stdin` to a started client (then closes it) and waits for the client to exit.
pub fn finish(mut child: Child, stdin: Vec<u8>, limit: Duration) -> Outcome {
    let mut input = child.stdin.take().expect("stdin");
    // From a thread: a client that echoes a large input must be read while it is written.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = wait(child, limit);
    let _ = writer.join();
    out
}

/// Waits for a client whose stdin the caller holds open (`stdin`, closed after the exit).
pub fn finish_keeping(child: Child, stdin: ChildStdin, limit: Duration) -> Outcome {
    let out = wait(child, limit);
    drop(stdin);
    out
}

/// Collects the output of a started client (what the caller did not take of it) and waits
/// for it to exit, killing it (and failing) after `limit`.
pub fn wait(mut child: Child, limit: Duration) -> Outcome {
    let start = Instant::now();
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut out) = out {
            let _ = out.read_to_end(&mut buf);
        }
        buf
    });
    let err = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        if let Some(mut err) = err {
            let _ = err.read_to_string(&mut buf);
        }
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("duplex did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Outcome {
        code: status.code(),
        stdout: reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        elapsed,
    }
}

/// A server written with the library, on a runtime of its own: each accepted TCP connection
/// is handed to `handler`. Stops when dropped.
pub struct TestServer {
    /// `ws://127.0.0.1:PORT/`.
    pub url: String,
    /// The port.
    pub port: u16,
    _rt: tokio::runtime::Runtime,
}

impl TestServer {
    /// Listens on an ephemeral loopback port.
    pub fn start<F, Fut>(handler: F) -> TestServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(handler(tcp));
            }
        });
        TestServer {
            url: format!("ws://127.0.0.1:{port}/"),
            port,
            _rt: rt,
        }
    }
}

/// A loopback port nobody listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}
