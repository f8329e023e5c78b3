//! `echo REQUEST | duplex connect URL`: the end of stdin closes the connection, but the replies
//! the server sends before it answers the close are still printed.

mod support;

use std::time::Duration;

use duplex::Message;
use futures_util::SinkExt;
use support::{run, Serve, TestServer};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn the_rooms_request_in_a_pipe_prints_the_rooms_list() {
    let serve = Serve::start(&[]);
    let out = run(
        &["connect", "--subprotocol", "duplex.v1", &serve.ws],
        b"{\"type\":\"rooms\"}\n",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let stdout = out.out();
    let rooms = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "rooms");
    assert!(
        rooms.is_some_and(|v| v["rooms"].is_array()),
        "no rooms reply in {stdout:?} (stderr {:?})",
        out.stderr
    );
}

/// A server that answers each request 300 ms late, after the client's close has arrived,
/// and only then answers the close.
fn slow_server() -> TestServer {
    TestServer::start(|tcp| async move {
        let Ok(ws) = duplex::accept(tcp).await else {
            return;
        };
        let (mut reader, mut writer) = ws.split();
        let mut requests = Vec::new();
        while let Some(Ok(msg)) = reader.recv().await {
            match msg {
                Message::Text(text) => requests.push(text),
                Message::Close(_) => break,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Queued, then flushed once: the writer answers the close on its next flush.
        for text in requests {
            let _ = writer.feed(Message::text(format!("reply to {text}"))).await;
        }
        let _ = SinkExt::flush(&mut writer).await;
        while reader.recv().await.is_some() {}
    })
}

#[test]
fn replies_sent_before_the_close_answer_are_printed_after_stdin_ends() {
    let server = slow_server();
    let out = run(&["connect", &server.url], b"one\ntwo\n", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.out(), "reply to one\nreply to two\n", "{}", out.stderr);
    assert!(out.elapsed >= Duration::from_millis(300));
}
