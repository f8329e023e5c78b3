//! A real `redis-server` (Debian's package) on a free loopback port, for the multi-node tests.
//!
//! It is started with no snapshots (`--save ''`) and, when asked, with an append-only file
//! written on every command, so that a test can kill it with `SIGKILL` and start it again on
//! the same port with everything it acknowledged. Dropping it kills it.
//!
//! Where `redis-server` is missing, [`RedisServer::start`] returns `None` after saying so on
//! stderr, so that a developer without it can still run the other tests; under CI (`CI` set
//! to anything but `false`) it panics instead: there, a missing component is a failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running (or stopped, between [`RedisServer::kill`] and [`RedisServer::restart`])
/// `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    durable: bool,
    /// With TLS: the TLS port, and the certificate, key and CA files.
    tls: Option<(u16, [PathBuf; 3])>,
    /// Addresses it listens on besides 127.0.0.1.
    also: Vec<std::net::IpAddr>,
}

impl RedisServer {
    /// A server that keeps nothing on disk: a restart comes back empty.
    pub fn start() -> Option<RedisServer> {
        RedisServer::launch(false, Vec::new(), None)
    }

    /// Like [`RedisServer::start`], listening on `also` besides 127.0.0.1 (a veth address of
    /// a partition test, say). Protected mode is off: clients come from those addresses.
    pub fn start_also_on(also: &[std::net::IpAddr]) -> Option<RedisServer> {
        RedisServer::launch(false, also.to_vec(), None)
    }

    /// A server with an append-only file synced on every write: a restart, even after
    /// `SIGKILL`, comes back with everything it acknowledged.
    pub fn start_durable() -> Option<RedisServer> {
        RedisServer::launch(true, Vec::new(), None)
    }

    /// A server that also listens for TLS (`rediss://`, see [`RedisServer::tls_url`]) with
    /// this certificate chain, key and CA (PEM files; [`crate::pki::TestPki`] makes them).
    pub fn start_tls(cert: PathBuf, key: PathBuf, ca: PathBuf) -> Option<RedisServer> {
        RedisServer::launch(false, Vec::new(), Some([cert, key, ca]))
    }

    fn launch(
        durable: bool,
        also: Vec<std::net::IpAddr>,
        tls: Option<[PathBuf; 3]>,
    ) -> Option<RedisServer> {
        if !installed() {
            let ci = std::env::var("CI").is_ok_and(|v| v != "false");
            assert!(
                !ci,
                "redis-server is not installed (apt-get install redis-server); CI needs it"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let dir = tempfile::tempdir().expect("a directory for Redis");
        let port = free_port();
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            durable,
            tls: tls.map(|files| (free_port(), files)),
            also,
        };
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:PORT` of the TLS port, if it has one.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://127.0.0.1:{port}"))
    }

    /// `redis://ADDR:PORT`, for one of the addresses it listens on.
    pub fn url_at(&self, addr: std::net::IpAddr) -> String {
        format!("redis://{}", std::net::SocketAddr::new(addr, self.port))
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it with `SIGKILL` (no chance to save anything beyond what it already wrote).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it answers (a running one is killed
    /// first). A durable server comes back with its data.
    pub fn restart(&mut self) {
        self.kill();
        let dir: PathBuf = self.dir.path().to_owned();
        let mut cmd = Command::new("redis-server");
        let mut bind = vec!["127.0.0.1".to_owned()];
        bind.extend(self.also.iter().map(|a| a.to_string()));
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .args(&bind)
            .args(["--save", ""])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no", "--loglevel", "warning"]);
        if let Some((port, [cert, key, ca])) = &self.tls {
            cmd.arg("--tls-port").arg(port.to_string());
            cmd.arg("--tls-cert-file").arg(cert);
            cmd.arg("--tls-key-file").arg(key);
            cmd.arg("--tls-ca-cert-file").arg(ca);
            cmd.args(["--tls-auth-clients", "no"]);
        }
        if !self.also.is_empty() {
            cmd.args(["--protected-mode", "no"]);
        }
        if self.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within {READY_WITHIN:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers `PING` now.
    pub fn answers(&self) -> bool {
        self.command("PING")
            .is_some_and(|reply| reply.starts_with("+PONG"))
    }

    /// Sends one inline command (`"DBSIZE"`, `"FLUSHALL"`) and returns the raw reply.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        tcp.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut reply = [0u8; 512];
        let n = tcp.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
