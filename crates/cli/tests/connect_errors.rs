//! Every failure of `duplex connect` is one clear line on stderr and an exit code of its own:
//! 2 refused, 3 DNS failure, 4 handshake rejected (status and body shown), 5 TLS failure,
//! 6 closed by the server with an error code, 7 timeout.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use duplex::{CloseCode, CloseFrame};
use duplex_testkit::pki::TestPki;
use support::{closed_port, run, Outcome, Serve, TestServer};

const LIMIT: Duration = Duration::from_secs(20);

/// The one line of stderr, checked to be exactly one.
fn one_line(out: &Outcome) -> &str {
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", out.stderr);
    lines[0]
}

#[test]
fn refused_connection_is_exit_2() {
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let out = run(&["connect", &url], b"", LIMIT);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        one_line(&out),
        format!("duplex: cannot connect to {url}: connection refused")
    );
}

#[test]
fn unknown_host_is_exit_3() {
    // .invalid never resolves (RFC 6761), and resolvers answer so without asking anyone.
    let out = run(&["connect", "ws://no-such-host.invalid/"], b"", LIMIT);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        one_line(&out).starts_with("duplex: cannot connect to ws://no-such-host.invalid/: cannot resolve no-such-host.invalid"),
        "{}",
        out.stderr
    );
}

#[test]
fn rejected_upgrade_is_exit_4_with_status_and_body() {
    let serve = Serve::start(&["--token", "letmein"]);
    let out = run(&["connect", "-x", "hi", &serve.echo], b"", LIMIT);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let line = one_line(&out);
    assert!(
        line.contains("rejected the upgrade: 401 Unauthorized"),
        "{line}"
    );
    assert!(line.contains("missing or wrong token"), "the body: {line}");
    // With the token it works.
    let out = run(
        &["connect", "--token", "letmein", "-x", "hi", &serve.echo],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "hi\n");
}

#[test]
fn unknown_path_is_exit_4_with_404() {
    let serve = Serve::start(&[]);
    let url = format!("{}nowhere/at/all", serve.ws);
    let out = run(&["connect", &url], b"", LIMIT);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(one_line(&out).contains("404"), "{}", out.stderr);
}

/// A path as a command-line argument.
fn arg(path: PathBuf) -> String {
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn untrusted_certificate_is_exit_5_and_ca_or_insecure_fix_it() {
    // A private CA and a certificate for 127.0.0.1 signed by it.
    let pki = TestPki::new(&["127.0.0.1"]);
    let serve = Serve::start(&["--tls-cert", &arg(pki.cert()), "--tls-key", &arg(pki.key())]);
    assert!(serve.echo.starts_with("wss://"), "{}", serve.echo);
    let out = run(&["connect", "-x", "hi", &serve.echo], b"", LIMIT);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(one_line(&out).contains("is not trusted"), "{}", out.stderr);

    let out = run(
        &["connect", "--ca", &arg(pki.ca()), "-x", "hi", &serve.echo],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "hi\n");

    let out = run(
        &["connect", "--insecure", "-x", "hi", &serve.echo],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // A CA file that does not exist is the user's mistake, not the server's: exit 1.
    let out = run(
        &[
            "connect",
            "--ca",
            "/nonexistent/ca.pem",
            "-x",
            "hi",
            &serve.echo,
        ],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        one_line(&out).contains("/nonexistent/ca.pem"),
        "{}",
        out.stderr
    );
}

#[test]
fn server_closing_with_an_error_code_is_exit_6_with_code_and_reason() {
    let server = TestServer::start(|tcp| async move {
        let Ok(mut ws) = duplex::accept(tcp).await else {
            return;
        };
        // Say one thing, then close with 1008 when the client speaks.
        let _ = ws.send(duplex::Message::text("welcome")).await;
        if let Some(Ok(_)) = ws.recv().await {
            let bye = CloseFrame::new(CloseCode::POLICY, "no spam please");
            let _ = ws.close(Some(bye)).await;
        }
    });
    let mut child = support::spawn(&["connect", &server.url]);
    // stdin stays open (sending "spam"): the close is the server's doing, not the end of input.
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"spam\n").expect("write");
    let out = support::finish_keeping(child, stdin, LIMIT);
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert_eq!(out.out(), "welcome\n");
    assert_eq!(
        one_line(&out),
        "duplex: closed by the server: 1008 (policy violation) no spam please"
    );
}

#[test]
fn server_vanishing_without_a_close_frame_is_exit_6() {
    let server = TestServer::start(|tcp| async move {
        let Ok(ws) = duplex::accept(tcp).await else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(ws); // no close frame
    });
    let mut child = support::spawn(&["connect", &server.url]);
    let stdin = child.stdin.take().expect("stdin");
    let out = support::finish_keeping(child, stdin, LIMIT);
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert!(
        one_line(&out).contains("without a close frame"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_server_that_never_answers_the_upgrade_is_exit_7() {
    // Accepts TCP and then says nothing.
    let server = TestServer::start(|tcp| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    });
    let out = run(
        &["connect", "--connect-timeout", "0.5", &server.url],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(7), "{}", out.stderr);
    assert!(one_line(&out).contains("timed out"), "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

#[test]
fn usage_errors_are_exit_1() {
    let out = run(&["connect"], b"", LIMIT);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let out = run(&["connect", "not a url"], b"", LIMIT);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let out = run(&["connect", "--help"], b"", LIMIT);
    assert_eq!(out.code, Some(0));
    assert!(out.out().contains("--reconnect"));
}
