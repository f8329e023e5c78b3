//! `duplex connect` in pipe mode, run as a binary against `duplex serve` and small servers
//! written with the library: echo of text and binary, `-x` one-shot with `--wait`, the end of
//! stdin (close, or `--keep-open`), headers, `-v`, and reconnecting.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex::accept_with;
use duplex::{CloseCode, CloseFrame, Message};
use support::{run, Serve, TestServer};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn text_lines_are_echoed_one_per_line_and_crlf_is_a_line_end() {
    let serve = Serve::start(&[]);
    let out = run(
        &["connect", &serve.echo],
        "one\r\ntwo\n\nüñí ✓\nno newline at the end".as_bytes(),
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "one\ntwo\n\nüñí ✓\nno newline at the end\n");
    assert_eq!(out.stderr, "", "stderr stays quiet on success");
}

#[test]
fn binary_mode_round_trips_raw_bytes_in_chunks() {
    let serve = Serve::start(&[]);
    // Every byte value, several chunks' worth (64 KiB each).
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = run(&["connect", "--binary", &serve.echo], &data, LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "the bytes came back changed");
}

/// A server that answers any message with the binary message 00 01 02 ff.
fn binary_server() -> TestServer {
    TestServer::start(|tcp| async move {
        let Ok(mut ws) = duplex::accept(tcp).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.recv().await {
            if msg.is_text() {
                let _ = ws.send(Message::binary(vec![0u8, 1, 2, 255])).await;
            }
        }
    })
}

#[test]
fn received_binary_is_a_hex_line_or_base64() {
    let server = binary_server();
    let out = run(&["connect", "-x", "go", &server.url], b"", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "000102ff\n");
    let out = run(
        &["connect", "--base64", "-x", "go", &server.url],
        b"",
        LIMIT,
    );
    assert_eq!(out.out(), "AAEC/w==\n");
}

#[test]
fn execute_sends_one_message_prints_the_reply_and_exits() {
    let serve = Serve::start(&[]);
    let out = run(&["connect", "-x", "ping?", &serve.echo], b"", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "ping?\n");
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

#[test]
fn execute_waits_for_several_replies() {
    let serve = Serve::start(&[]);
    // Joining a room answers with the history, then the joiner's own presence.
    let join = r#"{"type":"join","name":"scripted"}"#;
    let out = run(
        &[
            "connect",
            "--subprotocol",
            "duplex.v1",
            "-x",
            join,
            "--wait",
            "2",
            &serve.ws,
        ],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains(r#""type":"history""#), "{lines:?}");
    assert!(lines[1].contains(r#""type":"presence""#), "{lines:?}");
}

#[test]
fn execute_times_out_with_code_7_when_replies_do_not_come() {
    let serve = Serve::start(&[]);
    let out = run(
        &[
            "connect",
            "-x",
            "once",
            "--wait",
            "2",
            "--timeout",
            "0.5",
            &serve.echo,
        ],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(7), "{}", out.stderr);
    assert_eq!(out.out(), "once\n", "the reply that came is printed");
    assert!(out.stderr.contains("no reply"), "{}", out.stderr);
}

/// A server that, 300 ms after a client connects, sends "late" and closes normally, unless
/// the client closed first.
fn late_server() -> TestServer {
    TestServer::start(|tcp| async move {
        let Ok(mut ws) = duplex::accept(tcp).await else {
            return;
        };
        let late = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(late);
        loop {
            tokio::select! {
                msg = ws.recv() => if msg.is_none() { return },
                () = &mut late => {
                    let _ = ws.send(Message::text("late")).await;
                    let _ = ws.close(Some(CloseFrame::new(CloseCode::NORMAL, "done"))).await;
                    return;
                }
            }
        }
    })
}

#[test]
fn end_of_stdin_closes_at_once_unless_keep_open() {
    let server = late_server();
    // websocat#281: by default the end of the input ends the session (cleanly, exit 0)...
    let out = run(&["connect", &server.url], b"", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "");
    assert!(out.elapsed < Duration::from_millis(300) + Duration::from_secs(2));
    // ...and --keep-open listens until the server closes.
    let out = run(&["connect", "--keep-open", &server.url], b"", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "late\n");
}

#[test]
fn headers_origin_and_token_reach_the_server() {
    // The server answers with the headers it saw.
    let server = TestServer::start(|tcp| async move {
        let seen = Arc::new(Mutex::new(String::new()));
        let record = seen.clone();
        let ws = accept_with(tcp, duplex::Config::default(), move |incoming| {
            let get = |name: &str| incoming.header(name).unwrap_or("-").to_owned();
            *record.lock().unwrap() = format!(
                "{} | {} | {}",
                get("x-trace"),
                get("origin"),
                get("authorization")
            );
            Ok(())
        })
        .await;
        let Ok(mut ws) = ws else { return };
        let text = seen.lock().unwrap().clone();
        let _ = ws.send(Message::text(text)).await;
        let _ = ws.close(None).await;
    });
    let out = run(
        &[
            "connect",
            "-H",
            "X-Trace: 42",
            "--origin",
            "http://app.test",
            "--token",
            "s3cret",
            "-x",
            "hi",
            &server.url,
        ],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "42 | http://app.test | Bearer s3cret\n");
}

#[test]
fn a_malformed_header_option_is_a_usage_error() {
    let out = run(
        &["connect", "-H", "no-colon", "ws://127.0.0.1:1/"],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("Name: value"), "{}", out.stderr);
}

#[test]
fn verbose_prints_the_handshake_headers_on_stderr() {
    let serve = Serve::start(&[]);
    let out = run(
        &[
            "connect",
            "-v",
            "--token",
            "hidden-value",
            "-x",
            "x",
            &serve.echo,
        ],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "x\n", "stdout holds only the data");
    for expected in [
        "> GET /echo HTTP/1.1",
        "> sec-websocket-key: ",
        "> authorization: <hidden>",
        "< HTTP/1.1 101 Switching Protocols",
        "< sec-websocket-accept: ",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected:?} in {}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("hidden-value"),
        "the token is not printed"
    );
}

#[test]
fn stdin_that_is_not_utf8_is_refused_with_advice() {
    let serve = Serve::start(&[]);
    let out = run(&["connect", &serve.echo], b"fine\n\xff\xfe\n", LIMIT);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(out.out(), "fine\n");
    assert!(
        out.stderr.contains("not UTF-8") && out.stderr.contains("--binary"),
        "{}",
        out.stderr
    );
}

#[test]
fn reconnect_comes_back_after_the_server_drops_the_connection() {
    // The first connection is closed by the server with 1012 (service restart); the second
    // says which connection it is and closes normally, with stdin already at its end.
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let server = TestServer::start(move |tcp| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let Ok(mut ws) = duplex::accept(tcp).await else {
                return;
            };
            if n == 1 {
                let _ = ws
                    .close(Some(CloseFrame::new(CloseCode::RESTART, "restarting")))
                    .await;
            } else {
                let _ = ws.send(Message::text(format!("connection {n}"))).await;
                // Then wait for the client to close.
                while let Some(Ok(_)) = ws.recv().await {}
            }
        }
    });
    let out = run(
        &[
            "connect",
            "--reconnect",
            "--keep-open",
            "-x",
            "x",
            &server.url,
        ],
        b"",
        LIMIT,
    );
    // -x and --reconnect do not go together.
    assert_eq!(out.code, Some(1), "{}", out.stderr);

    let mut child = support::spawn(&["connect", "--reconnect", &server.url]);
    // stdin stays open until the second connection has spoken: a client whose input ended
    // does not reconnect (it has nothing left to send).
    let stdin = child.stdin.take();
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("a line");
    assert_eq!(line, "connection 2\n");
    drop(stdin);
    let out = support::wait(child, LIMIT);
    let err = out.stderr;
    assert_eq!(out.code, Some(0), "{err}");
    assert!(
        err.contains("1012") && err.contains("reconnecting in"),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn connect_with_http2_uses_it_and_says_so_under_v() {
    let serve = support::Serve::start(&[]);
    let out = support::run(
        &["connect", "--http2", "-v", &serve.echo],
        b"over h2\n",
        std::time::Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "over h2\n", "{}", out.stderr);
    assert!(out.stderr.contains("< HTTP/2"), "{}", out.stderr);
    // Without the flag: HTTP/1.1, as before.
    let out = support::run(
        &["connect", "-v", &serve.echo],
        b"over h1\n",
        std::time::Duration::from_secs(20),
    );
    assert!(out.stderr.contains("< HTTP/1.1 101"), "{}", out.stderr);
}
