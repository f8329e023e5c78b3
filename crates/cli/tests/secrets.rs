//! `duplex serve`'s secrets from files and the environment (never needed on argv), and
//! `duplex chat --token-file` under a signed token.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use support::{run, BIN};

const LIMIT: Duration = Duration::from_secs(20);
const JWT_SECRET: &str = "a jwt secret of more than thirty-two bytes";

/// A `duplex serve` with `flags` and `env`, its stderr in a file; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(dir: tempfile::TempDir, flags: &[&str], env: &[(&str, &str)]) -> Server {
        let log = dir.path().join("serve.log");
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--data"])
            .arg(dir.path().join("data"))
            .args(flags)
            .env_remove("DUPLEX_TOKEN")
            .env_remove("DUPLEX_API_KEY")
            .env_remove("DUPLEX_JWT_SECRET")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start duplex serve");
        let mut banner = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut banner).expect("read the banner");
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = banner
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ws://")?.strip_suffix("/echo"))
            .unwrap_or_else(|| panic!("no echo URL in {banner:?}"))
            .to_owned();
        Server {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The status of a request head sent as is (with `Host` added).
    fn status(&self, method: &str, path: &str, headers: &str) -> u16 {
        let mut tcp = TcpStream::connect(&self.addr).expect("connect");
        tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
        write!(
            tcp,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
            self.addr
        )
        .expect("send");
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).expect("a status line");
        String::from_utf8_lossy(&head[9..12])
            .parse()
            .expect("a status")
    }

    fn upgrade_status(&self, path: &str) -> u16 {
        self.status(
            "GET",
            path,
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    // A final newline, as an editor leaves it: not part of the secret.
    std::fs::write(&path, format!("{secret}\n")).expect("write the secret");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn the_shared_token_comes_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "token", "from-a-file");
    let server = Server::start(dir, &["--token-file", &file], &[]);
    assert_eq!(server.upgrade_status("/echo"), 401);
    assert_eq!(server.upgrade_status("/echo?token=from-a-file"), 101);
    assert!(!server.logged().contains("command line"), "no warning");
    drop(server);

    let env = Server::start(
        tempfile::tempdir().unwrap(),
        &[],
        &[("DUPLEX_TOKEN", "env-tok")],
    );
    assert_eq!(env.upgrade_status("/echo?token=wrong"), 401);
    assert_eq!(env.upgrade_status("/echo?token=env-tok"), 101);
}

#[test]
fn a_token_on_argv_still_works_and_warns() {
    let server = Server::start(tempfile::tempdir().unwrap(), &["--token", "argv-tok"], &[]);
    assert_eq!(server.upgrade_status("/echo?token=argv-tok"), 101);
    let log = server.logged();
    assert!(log.contains("--token on the command line"), "{log}");
}

#[test]
fn the_api_key_comes_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "api-key", "file-key");
    let server = Server::start(dir, &["--api-key-file", &file], &[]);
    assert_eq!(
        server.status("GET", "/api/rooms", "Authorization: Bearer file-key\r\n"),
        200
    );
    assert_eq!(
        server.status("GET", "/api/rooms", "Authorization: Bearer nope\r\n"),
        401
    );
    drop(server);
    let env = Server::start(
        tempfile::tempdir().unwrap(),
        &[],
        &[("DUPLEX_API_KEY", "env-key")],
    );
    assert_eq!(
        env.status("GET", "/api/rooms", "Authorization: Bearer env-key\r\n"),
        200
    );
    assert_eq!(
        env.status("GET", "/metrics", ""),
        401,
        "metrics need the key"
    );
}

fn jwt(name: &str) -> String {
    let claims = serde_json::json!({
        "sub": format!("id-{name}"), "name": name, "exp": get_current_timestamp() + 600,
    });
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

#[test]
fn chat_with_a_token_file_speaks_as_the_token_says() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "jwt-secret", JWT_SECRET);
    let token = secret_file(dir.path(), "ann.jwt", &jwt("Ann"));
    let server = Server::start(dir, &["--jwt-secret-file", &secret], &[]);
    assert_eq!(server.upgrade_status("/echo"), 401);
    let url = format!("ws://{}/rooms/jwt", server.addr);
    // No name is asked for: the first line is a message.
    let out = run(
        &["chat", &url, "--token-file", &token],
        b"hello from ann\n",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        !out.stderr.contains("Please enter user name"),
        "{}",
        out.stderr
    );
    let said = out.out();
    assert!(
        said.contains("Ann: hello from ann"),
        "{said}\n{}",
        out.stderr
    );

    // Through the environment too, and --name cannot change who it is.
    let env_dir = tempfile::tempdir().unwrap();
    let bob = secret_file(env_dir.path(), "bob.jwt", &jwt("Bob"));
    let env = Server::start(env_dir, &[], &[("DUPLEX_JWT_SECRET", JWT_SECRET)]);
    let url = format!("ws://{}/rooms/jwt", env.addr);
    let out = run(
        &["chat", &url, "--token-file", &bob, "--name", "Mallory"],
        b"hi\n",
        LIMIT,
    );
    assert!(out.stderr.contains("identity"), "{}", out.stderr);
    assert!(!out.out().contains("Mallory: hi"), "{}", out.out());
}
