//! Abuse tests: a real `duplex serve` on a loopback port, attacked over raw TCP on `/echo`.
//!
//! Each test asserts what the attacker sees (a close code, a closed connection, the replies it
//! asked for) and that a well-behaved client (a `duplex::connect` echo round trip) is served
//! within [`PROMPT`] while the attack goes on and after it. docs/SECURITY.md lists the same
//! outcomes; keep the two in step.
//!
//! The tests run one at a time (they measure latency and the server's memory), each bounded
//! in time and count, on 127.0.0.1 only.

mod support;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use duplex::Message;
use duplex_testkit::frame::{
    close_payload, encode, masked, BINARY, CLOSE, CONTINUATION, FIN, MASK_KEY, PING, PONG, TEXT,
};
use duplex_testkit::http::upgrade_request;
use duplex_testkit::net::{expect_close, raw_client, read_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use support::Serve;

/// How long a well-behaved client may wait for its echo, connection included, while the
/// server is under attack (typically a few milliseconds; generous for a loaded CI machine).
const PROMPT: Duration = Duration::from_secs(2);

/// The server's handshake timeout (`duplex::Config::handshake_timeout`, 10 s by default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One attack at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs an attack on a fresh runtime, bounded to `limit`.
fn attack(limit: Duration, test: impl std::future::Future<Output = ()>) {
    let _one_at_a_time = serial();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            tokio::time::timeout(limit, test)
                .await
                .unwrap_or_else(|_| panic!("the test took more than {limit:?}"))
        });
}

// ---------------------------------------------------------------------------------------------
// The server.

/// A `duplex serve` on an ephemeral loopback port with its own history directory; killed and
/// cleaned up when dropped (see `support::Serve`).
struct Server {
    serve: Serve,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let serve = Serve::start(extra);
        let addr = serve
            .echo
            .trim_start_matches("ws://")
            .trim_end_matches("/echo")
            .parse()
            .expect("address in the URL");
        Server { serve, addr }
    }

    /// The server's resident memory in bytes (VmRSS in /proc/PID/status).
    fn rss(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.serve.pid()))
            .expect("read /proc/PID/status");
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// A well-behaved client: connects, sends a text message and waits for its echo, all within
    /// [`PROMPT`]. Returns how long it took.
    async fn probe(&self, what: &str) -> Duration {
        let started = Instant::now();
        let round_trip = async {
            let (mut ws, _) = duplex::connect(&self.serve.echo).await.expect("connect");
            ws.send(Message::text("probe")).await.expect("send");
            loop {
                match ws.recv().await {
                    Some(Ok(Message::Text(t))) => {
                        assert_eq!(t, "probe");
                        break;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("{what}: the probe got {other:?} instead of its echo"),
                }
            }
            // Close in the background: only the round trip counts.
            tokio::spawn(async move {
                let _ = ws.close(None).await;
            });
        };
        if tokio::time::timeout(PROMPT, round_trip).await.is_err() {
            panic!("{what}: a well-behaved client was not served within {PROMPT:?}");
        }
        started.elapsed()
    }

    /// Probes right away and then every `every`, concurrently with `until`, until it
    /// completes; returns its output and how long each completed probe took.
    async fn probe_while<T>(
        &self,
        what: &str,
        every: Duration,
        until: impl std::future::Future<Output = T>,
    ) -> (T, Vec<Duration>) {
        let mut times = Vec::new();
        let out = {
            let probes = async {
                loop {
                    times.push(self.probe(what).await);
                    tokio::time::sleep(every).await;
                }
            };
            tokio::select! {
                out = until => out,
                never = probes => never,
            }
        };
        (out, times)
    }
}

// ---------------------------------------------------------------------------------------------
// A raw client.

/// A hand-made WebSocket client: a raw TCP connection upgraded on `/echo`, read through a
/// buffer (floods read many small frames).
type Raw = BufReader<TcpStream>;

/// Connects and completes the opening handshake on `/echo`.
async fn open(addr: SocketAddr) -> Raw {
    BufReader::new(raw_client(addr, "/echo").await)
}

/// A masked client frame whose header announces `len` bytes, whatever the payload.
fn frame_with_len(opcode: u8, payload: &[u8], len: u64) -> Vec<u8> {
    encode(FIN | opcode, len, payload, Some(MASK_KEY))
}

/// The abuses that fail a connection with a close code, each on a fresh connection, with a
/// probe after each.
async fn expect_failures(server: &Server, cases: &[(&str, Vec<u8>, u16)]) {
    for (what, bytes, code) in cases {
        let mut raw = open(server.addr).await;
        raw.write_all(bytes).await.expect("send");
        expect_close(&mut raw, what, *code).await;
        server.probe(what).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The attacks.

#[test]
fn slowloris_handshakes_are_cut_off_at_the_handshake_timeout() {
    const SLOW: usize = 200;
    attack(Duration::from_secs(40), async {
        let server = Server::start(&[]);
        server.probe("before").await;
        // Each connection sends most of a request, then one more header byte every 500 ms:
        // the head never completes (2 bytes/s stay far below the 8 KiB head limit).
        let mut slow = JoinSet::new();
        let start = Instant::now();
        for _ in 0..SLOW {
            let tcp = TcpStream::connect(server.addr).await.expect("connect");
            slow.spawn(async move {
                let connected = Instant::now();
                let (mut rd, wr) = tcp.into_split();
                let trickle = tokio::spawn(trickle(wr));
                // What the attacker gets back, until the server closes.
                let mut got = Vec::new();
                let _ = rd.read_to_end(&mut got).await;
                trickle.abort();
                (connected.elapsed(), got)
            });
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "connecting took long"
        );

        let (closed, probes) = server
            .probe_while(
                "200 slowloris connections open",
                Duration::from_millis(500),
                async {
                    let mut closed = Vec::new();
                    while let Some(done) = slow.join_next().await {
                        closed.push(done.expect("slow task"));
                    }
                    closed
                },
            )
            .await;
        assert_eq!(closed.len(), SLOW);
        assert!(probes.len() >= 10, "only {} probes", probes.len());
        for (after, got) in &closed {
            // Closed at the handshake timeout, without an HTTP response.
            assert!(
                *after >= HANDSHAKE_TIMEOUT - Duration::from_millis(500)
                    && *after <= HANDSHAKE_TIMEOUT + Duration::from_secs(3),
                "a slowloris connection was closed after {after:?}"
            );
            assert!(
                got.is_empty(),
                "the attacker got {:?}",
                String::from_utf8_lossy(got)
            );
        }
        server.probe("after").await;
        eprintln!(
            "slowloris: {SLOW} connections closed after {:?}..{:?}; {} probes, slowest {:?}",
            closed.iter().map(|c| c.0).min().unwrap(),
            closed.iter().map(|c| c.0).max().unwrap(),
            probes.len(),
            probes.iter().max().unwrap()
        );
    });
}

/// Sends most of a request, then one more header byte every 500 ms, until the server closes.
async fn trickle(mut wr: OwnedWriteHalf) -> std::io::Result<()> {
    wr.write_all(&upgrade_request("/echo").as_bytes()[..60])
        .await?;
    wr.write_all(b"X-Slow: ").await?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        wr.write_all(b"a").await?;
    }
}

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
fn raise_nofile_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// Server memory per idle WebSocket connection must stay under this (measured: see
/// docs/SECURITY.md).
const IDLE_BYTES_PER_CONNECTION: usize = 4 * 1024;

#[test]
fn ten_thousand_idle_connections_stay_cheap() {
    // The server child inherits the raised limit; both it and this process need one file per
    // connection, plus some to spare.
    let limit = raise_nofile_limit();
    let n = 10_000.min(limit.saturating_sub(500));
    assert!(n >= 1000, "only {limit} open files allowed");
    attack(Duration::from_secs(90), async move {
        let max = (n + 500).to_string();
        let server = Server::start(&["--max-connections", &max]);
        server.probe("before").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = server.rss();

        let started = Instant::now();
        let mut opening = JoinSet::new();
        let mut idle = Vec::with_capacity(n);
        let addr = server.addr;
        for i in 0..n {
            opening.spawn(async move { open(addr).await });
            // At most 64 handshakes in flight.
            if i >= 64 {
                idle.push(opening.join_next().await.unwrap().expect("open"));
            }
        }
        while let Some(raw) = opening.join_next().await {
            idle.push(raw.expect("open"));
        }
        let opened_in = started.elapsed();
        assert_eq!(idle.len(), n);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = server.rss();
        let per_connection = after.saturating_sub(before) / n;

        let during = server.probe("with all idle connections open").await;
        // The idle connections are all still served: a ping on every hundredth gets its pong.
        for raw in idle.iter_mut().step_by(100) {
            raw.write_all(&masked(FIN | PING, b"still there?"))
                .await
                .expect("send");
            let pong = read_frame(raw).await;
            assert_eq!(
                (pong.opcode, &pong.payload[..]),
                (PONG, &b"still there?"[..])
            );
        }
        eprintln!(
            "idle: {n} connections opened in {opened_in:?}; server RSS {} -> {} MiB, \
             {per_connection} bytes per connection; probe {during:?}",
            before >> 20,
            after >> 20
        );
        assert!(
            per_connection <= IDLE_BYTES_PER_CONNECTION,
            "{per_connection} bytes per idle connection (bound {IDLE_BYTES_PER_CONNECTION})"
        );
        drop(idle);
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.probe("after the idle connections left").await;
    });
}

/// Server memory growth allowed while a peer does not read (bytes).
const STALLED_READER_GROWTH: usize = 32 << 20;

#[test]
fn a_reader_that_never_reads_is_held_back_not_buffered() {
    attack(Duration::from_secs(40), async {
        let server = Server::start(&[]);
        server.probe("before").await;
        let before = server.rss();
        let mut raw = open(server.addr).await;
        // 64 KiB binary messages, up to 256 MiB, none of the echoes read: the server's
        // writes back stall, so it stops reading, so ours stall.
        let message = masked(FIN | BINARY, &vec![0x5a; 64 * 1024]);
        let mut sent = 0usize;
        let mut peak = before;
        while sent < 256 << 20 {
            match tokio::time::timeout(Duration::from_secs(2), raw.write_all(&message)).await {
                Ok(Ok(())) => sent += message.len(),
                Ok(Err(e)) => panic!("the server dropped the connection early: {e}"),
                Err(_) => break,
            }
            if sent.is_multiple_of(4 << 20) {
                peak = peak.max(server.rss());
            }
        }
        peak = peak.max(server.rss());
        let during = server.probe("while a peer does not read").await;
        peak = peak.max(server.rss());
        eprintln!(
            "stalled reader: sent {} MiB before the server stopped reading; server RSS \
             {} -> {} MiB; probe {during:?}",
            sent >> 20,
            before >> 20,
            peak >> 20
        );
        assert!(
            sent < 128 << 20,
            "the server took {sent} bytes without them being read"
        );
        assert!(
            peak.saturating_sub(before) <= STALLED_READER_GROWTH,
            "the server grew by {} bytes",
            peak - before
        );
        // The connection is still open, held back by backpressure (write_timeout, 30 s by
        // default, drops it later); reading drains the echoes in order.
        let first = read_frame(&mut raw).await;
        assert_eq!((first.opcode, first.payload.len()), (BINARY, 64 * 1024));
        drop(raw);
        server.probe("after").await;
    });
}

#[test]
fn a_frame_header_claiming_2_pow_63_bytes_is_refused() {
    attack(Duration::from_secs(30), async {
        let server = Server::start(&[]);
        let mut huge = frame_with_len(BINARY, &[], (1 << 63) - 1);
        huge.extend_from_slice(b"only a few bytes follow");
        let top_bit = vec![
            FIN | BINARY,
            0x80 | 127,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            2,
            3,
            4,
        ];
        expect_failures(
            &server,
            &[
                // Larger than max_frame_size (16 MiB on /echo): 1009 before any payload.
                ("length 2^63-1", huge, 1009),
                (
                    "length 16 MiB + 1",
                    frame_with_len(BINARY, &[], (16 << 20) + 1),
                    1009,
                ),
                // The most significant bit must be 0 (RFC 6455 section 5.2).
                ("length with the top bit set", top_bit, 1002),
            ],
        )
        .await;
    });
}

#[test]
fn oversized_and_fragmented_control_frames_are_1002() {
    attack(Duration::from_secs(30), async {
        let server = Server::start(&[]);
        expect_failures(
            &server,
            &[
                ("ping of 126 bytes", masked(FIN | PING, &[b'p'; 126]), 1002),
                (
                    "pong of 65535 bytes",
                    frame_with_len(PONG, &[], 0xffff),
                    1002,
                ),
                (
                    "close of 126 bytes",
                    masked(FIN | CLOSE, &[0x03; 126]),
                    1002,
                ),
                ("fragmented ping", masked(PING, b"p"), 1002),
                ("fragmented close", masked(CLOSE, &[0x03, 0xe8]), 1002),
            ],
        )
        .await;
    });
}

#[test]
fn fragment_sequence_violations_are_1002() {
    attack(Duration::from_secs(30), async {
        let server = Server::start(&[]);
        let mut data_inside = masked(TEXT, b"first half");
        data_inside.extend(masked(FIN | BINARY, b"a new message"));
        let mut text_inside = masked(BINARY, b"first half");
        text_inside.extend(masked(FIN | PING, b"allowed"));
        text_inside.extend(masked(FIN | TEXT, b"not allowed"));
        expect_failures(
            &server,
            &[
                (
                    "a data frame inside a fragmented message",
                    data_inside,
                    1002,
                ),
                (
                    "a text frame after a ping inside a fragmented message",
                    text_inside,
                    1002,
                ),
                (
                    "a continuation with nothing to continue",
                    masked(FIN | CONTINUATION, b"x"),
                    1002,
                ),
                (
                    "a final continuation with nothing to continue",
                    masked(CONTINUATION, b""),
                    1002,
                ),
            ],
        )
        .await;
    });
}

#[test]
fn invalid_close_frames_are_1002_or_1007() {
    attack(Duration::from_secs(60), async {
        let server = Server::start(&[]);
        let mut cases: Vec<(&str, Vec<u8>, u16)> = Vec::new();
        let codes: [(u16, &str); 9] = [
            (0, "close code 0"),
            (999, "close code 999"),
            (1004, "close code 1004 (reserved)"),
            (1005, "close code 1005 (no status, never sent)"),
            (1006, "close code 1006 (abnormal, never sent)"),
            (1015, "close code 1015 (TLS, never sent)"),
            (1016, "close code 1016 (unassigned)"),
            (2999, "close code 2999"),
            (5000, "close code 5000"),
        ];
        for (code, what) in codes {
            cases.push((what, masked(FIN | CLOSE, &code.to_be_bytes()), 1002));
        }
        cases.push((
            "a one-byte close payload",
            masked(FIN | CLOSE, &[0x03]),
            1002,
        ));
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(b"bye \xff\xfe");
        cases.push((
            "a reason that is not UTF-8",
            masked(FIN | CLOSE, &bad_reason),
            1007,
        ));
        let mut surrogate = 1000u16.to_be_bytes().to_vec();
        surrogate.extend_from_slice(b"\xed\xa0\x80");
        cases.push((
            "a reason with a UTF-16 surrogate",
            masked(FIN | CLOSE, &surrogate),
            1007,
        ));
        expect_failures(&server, &cases).await;

        // Valid closes are echoed with their code (3000-4999 included), then the TCP
        // connection ends.
        for code in [1000u16, 1001, 3000, 4999] {
            let mut raw = open(server.addr).await;
            raw.write_all(&masked(FIN | CLOSE, &code.to_be_bytes()))
                .await
                .expect("send");
            expect_close(&mut raw, "a valid close", code).await;
        }
    });
}

/// Floods `/echo` with `n` frames, frame `i` made by `frame(i)` (written while the answers
/// are read, so neither side waits on the other), and checks that answer `i` is `answer(i)`
/// (opcode, payload), with a probe every 50 ms meanwhile. Returns the connection, the probes'
/// times and how long the flood took.
async fn flood(
    server: &Server,
    what: &str,
    n: usize,
    frame: fn(usize) -> Vec<u8>,
    answer: fn(usize) -> (u8, Vec<u8>),
) -> (Raw, Vec<Duration>, Duration) {
    let (rd, mut wr) = raw_client(server.addr, "/echo").await.into_split();
    let writer = tokio::spawn(async move {
        let mut bytes = Vec::new();
        for i in 0..n {
            bytes.extend(frame(i));
            if bytes.len() > 64 * 1024 || i == n - 1 {
                wr.write_all(&bytes).await.expect("send the flood");
                bytes.clear();
            }
        }
        wr
    });
    let started = Instant::now();
    let answers = async move {
        let mut reader = BufReader::new(rd);
        for i in 0..n {
            if i % 100 == 0 {
                // Buffered answers never make this wait: let the probes (same task) run.
                tokio::task::yield_now().await;
            }
            let got = read_frame(&mut reader).await;
            assert_eq!((got.opcode, got.payload), answer(i), "answer {i}");
        }
        reader
    };
    let (reader, probes) = server
        .probe_while(what, Duration::from_millis(50), answers)
        .await;
    let took = started.elapsed();
    // A flood over before a probe could finish starved nobody for long either.
    assert!(
        !probes.is_empty() || took < PROMPT,
        "no probe finished {what}"
    );
    assert!(reader.buffer().is_empty(), "bytes after the last answer");
    let tcp = reader
        .into_inner()
        .reunite(writer.await.expect("flood"))
        .expect("reunite");
    (BufReader::new(tcp), probes, took)
}

#[test]
fn a_ping_flood_gets_every_pong_in_order() {
    // Enough that the flood outlasts a probe's round trip (see the message flood).
    const PINGS: usize = 50_000;
    attack(Duration::from_secs(60), async {
        let server = Server::start(&[]);
        let (mut raw, probes, took) = flood(
            &server,
            "during a ping flood",
            PINGS,
            |i| masked(FIN | PING, format!("ping {i}").as_bytes()),
            |i| (PONG, format!("ping {i}").into_bytes()),
        )
        .await;
        eprintln!(
            "ping flood: {PINGS} pongs in order in {took:?}; {} probes",
            probes.len()
        );
        // The connection is still fine: a message is echoed.
        raw.write_all(&masked(FIN | TEXT, b"after the flood"))
            .await
            .expect("send");
        let echo = read_frame(&mut raw).await;
        assert_eq!(
            (echo.opcode, &echo.payload[..]),
            (TEXT, &b"after the flood"[..])
        );
        server.probe("after").await;
    });
}

#[test]
fn a_flood_of_small_messages_is_echoed_in_order() {
    // Enough that the flood outlasts a probe's round trip (20,000 took about as long as one
    // once the echo got faster).
    const MESSAGES: usize = 100_000;
    attack(Duration::from_secs(60), async {
        let server = Server::start(&[]);
        let (mut raw, probes, took) = flood(
            &server,
            "during a message flood",
            MESSAGES,
            |i| masked(FIN | TEXT, format!("m{i}").as_bytes()),
            |i| (TEXT, format!("m{i}").into_bytes()),
        )
        .await;
        eprintln!(
            "message flood: {MESSAGES} echoes in order in {took:?}; {} probes, slowest {:?}",
            probes.len(),
            probes.iter().max()
        );
        raw.write_all(&masked(FIN | CLOSE, &close_payload(1000, "")))
            .await
            .expect("send");
        expect_close(&mut raw, "closing after the flood", 1000).await;
        server.probe("after").await;
    });
}
