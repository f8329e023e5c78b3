//! `duplex chat` in pipe mode: the seeds' flow (a name asked for, then lines sent), messages
//! shown as `[time] name: text` with history on join, plain-text servers, and resuming from
//! the last sequence number after a reconnect.

mod support;

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex::accept_with;
use duplex::{CloseCode, CloseFrame, Message};
use support::{run, Serve, TestServer};

const LIMIT: Duration = Duration::from_secs(20);

/// Whether `line` is `[HH:MM] who: text`.
fn is_chat_line(line: &str, who: &str, text: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some((time, said)) = rest.split_once("] ") else {
        return false;
    };
    time.len() == 5 && time.as_bytes()[2] == b':' && said == format!("{who}: {text}")
}

#[test]
fn the_seeds_flow_asks_for_a_name_then_sends_lines() {
    let serve = Serve::start(&[]);
    let room = serve.room("seeds");
    let out = run(&["chat", &room], b"alice\nhello everyone\n", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("Please enter user name:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("Welcome alice! You can start chatting now."),
        "{}",
        out.stderr
    );
    // The last message of a script is delivered before the client closes, and printed.
    let lines: Vec<String> = out.out().lines().map(str::to_owned).collect();
    assert!(
        lines
            .iter()
            .any(|l| is_chat_line(l, "alice", "hello everyone")),
        "{lines:?}"
    );

    // The next one in the room sees it in the history, and says something too.
    let out = run(&["chat", "--name", "bob", &room], b"hi alice\n", LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<String> = out.out().lines().map(str::to_owned).collect();
    assert!(
        is_chat_line(&lines[0], "alice", "hello everyone"),
        "{lines:?}"
    );
    assert!(is_chat_line(&lines[1], "bob", "hi alice"), "{lines:?}");
    assert!(
        out.stderr.contains("--- recent history in seeds ---"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("* bob joined seeds (here: bob)"),
        "{}",
        out.stderr
    );
}

#[test]
fn room_option_joins_that_room() {
    let serve = Serve::start(&[]);
    let out = run(
        &["chat", "--name", "ann", "--room", "side", &serve.ws],
        b"in side\n",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The room's own URL shows it in the history.
    let out = run(&["chat", "--name", "ben", &serve.room("side")], b"", LIMIT);
    assert!(
        out.out().lines().any(|l| is_chat_line(l, "ann", "in side")),
        "{}",
        out.out()
    );
}

#[test]
fn bad_names_and_rooms_are_usage_errors() {
    let serve = Serve::start(&[]);
    let out = run(&["chat", "--name", "  ", &serve.ws], b"", LIMIT);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let out = run(
        &["chat", "--name", "x", "--room", "a/b", &serve.ws],
        b"",
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
}

#[test]
fn plain_text_servers_get_name_prefixed_lines() {
    // A server without the subprotocol: records what it receives, says one line back.
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    let server = TestServer::start(move |tcp| {
        let record = record.clone();
        async move {
            let Ok(mut ws) = duplex::accept(tcp).await else {
                return;
            };
            let _ = ws.send(Message::text("server: hello")).await;
            while let Some(Ok(msg)) = ws.recv().await {
                if let Some(text) = msg.as_text() {
                    record.lock().unwrap().push(text.to_owned());
                }
            }
        }
    });
    let out = run(
        &["chat", "--name", "zoe", &server.url],
        b"first\nsecond\n",
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(*got.lock().unwrap(), ["zoe: first", "zoe: second"]);
}

#[test]
fn reconnect_resumes_from_the_last_sequence_number() {
    // A duplex.v1 server: the first connection replays seq 5 and is then closed with 1012
    // (restart); the second records the join's `since` and delivers seq 6.
    let joins = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let record = joins.clone();
    let server = TestServer::start(move |tcp| {
        let record = record.clone();
        async move {
            let accepted = accept_with(tcp, duplex::Config::default(), |incoming| {
                incoming.select_protocol(&["duplex.v1"]);
                Ok(())
            })
            .await;
            let Ok(mut ws) = accepted else { return };
            let Some(Ok(join)) = ws.recv().await else {
                return;
            };
            let join: serde_json::Value =
                serde_json::from_str(join.as_text().unwrap_or("{}")).unwrap_or_default();
            let n = {
                let mut joins = record.lock().unwrap();
                joins.push(join);
                joins.len()
            };
            let msg = |seq: u64, text: &str| serde_json::json!({"room": "general", "seq": seq, "from": "bob", "time": 0, "text": text});
            if n == 1 {
                let history = serde_json::json!({"type": "history", "room": "general", "messages": [msg(5, "before")]});
                let _ = ws.send(Message::text(history.to_string())).await;
                let bye = CloseFrame::new(CloseCode::RESTART, "restarting");
                let _ = ws.close(Some(bye)).await;
            } else {
                let history =
                    serde_json::json!({"type": "history", "room": "general", "messages": []});
                let _ = ws.send(Message::text(history.to_string())).await;
                let mut live = msg(6, "after");
                live["type"] = "message".into();
                let _ = ws.send(Message::text(live.to_string())).await;
                while let Some(Ok(_)) = ws.recv().await {}
            }
        }
    });
    let mut child = support::spawn(&["chat", "--name", "alice", "--reconnect", &server.url]);
    // stdin stays open until "after" arrived: a client whose input ended does not reconnect.
    let stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    assert!(first.ends_with("] bob: before"), "{first}");
    let second = lines.next().expect("a line").expect("utf-8");
    assert!(second.ends_with("] bob: after"), "{second}");
    drop(stdin);
    let out = support::wait(child, LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let joins = joins.lock().unwrap();
    assert_eq!(joins.len(), 2);
    assert_eq!(joins[0].get("since"), None);
    assert_eq!(
        joins[1]["since"], 5,
        "the rejoin resumes after the last message seen"
    );
    assert_eq!(joins[1]["name"], "alice");
}
