//! Chat rooms in both modes, history, resume and restart, over loopback.

mod common;

use common::*;
use duplex::Message;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_relay_each_text_to_every_other_member() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let mut a = plain(&hub, "/").await;
    let mut b = plain(&hub, "/").await;
    let mut elsewhere = plain(&hub, "/rooms/other").await;
    // Joins are asynchronous: a round trip through the broker makes sure both are in.
    a.send(Message::text("alice: hello")).await.unwrap();
    assert_eq!(recv_text(&mut b).await, "alice: hello");
    b.send(Message::text("bob: hi alice")).await.unwrap();
    assert_eq!(recv_text(&mut a).await, "bob: hi alice");
    // Nobody gets their own message back, and other rooms hear nothing.
    assert_silent(&mut a).await;
    assert_silent(&mut elsewhere).await;
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_clients_exchange_messages_with_sequence_numbers_and_presence() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let (mut alice, history) = joined(&hub, "/rooms/lobby", "alice", None).await;
    assert!(history.is_empty());
    let (mut bob, _) = joined(&hub, "/rooms/lobby", "bob", None).await;
    let presence = recv_json(&mut alice).await;
    assert_eq!(
        presence,
        json!({"type": "presence", "room": "lobby", "event": "joined", "name": "bob", "count": 2})
    );

    say(&mut alice, "hi bob").await;
    for ws in [&mut alice, &mut bob] {
        let m = recv_kind(ws, "message").await;
        assert_eq!(
            (m["room"].as_str(), m["seq"].as_u64()),
            (Some("lobby"), Some(1))
        );
        assert_eq!(
            (m["from"].as_str(), m["text"].as_str()),
            (Some("alice"), Some("hi bob"))
        );
        assert!(m["time"].as_u64().unwrap() > 1_600_000_000_000);
    }
    send_json(
        &mut bob,
        json!({"type": "send", "room": "lobby", "text": "hello alice"}),
    )
    .await;
    for ws in [&mut alice, &mut bob] {
        let m = recv_kind(ws, "message").await;
        assert_eq!(
            (m["seq"].as_u64(), m["from"].as_str()),
            (Some(2), Some("bob"))
        );
    }

    bob.close(None).await.unwrap();
    let left = recv_json(&mut alice).await;
    assert_eq!(
        left,
        json!({"type": "presence", "room": "lobby", "event": "left", "name": "bob", "count": 1})
    );

    send_json(&mut alice, json!({"type": "rooms"})).await;
    let rooms = recv_kind(&mut alice, "rooms").await;
    assert_eq!(
        rooms["rooms"],
        json!([{"name": "lobby", "members": 1, "last_seq": 2}])
    );
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_json_clients_in_one_room_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let (mut json_ws, _) = joined(&hub, "/", "alice", None).await;
    let mut plain_ws = plain(&hub, "/?name=bob").await;
    let presence = recv_json(&mut json_ws).await;
    assert_eq!(
        (presence["event"].as_str(), presence["name"].as_str()),
        (Some("joined"), Some("bob"))
    );

    plain_ws
        .send(Message::text("bob: hello from the terminal"))
        .await
        .unwrap();
    let m = recv_kind(&mut json_ws, "message").await;
    assert_eq!(m["room"], "general");
    assert_eq!(m["from"], "bob");
    assert_eq!(m["text"], "bob: hello from the terminal");

    say(&mut json_ws, "hello from the browser").await;
    assert_eq!(
        recv_text(&mut plain_ws).await,
        "alice: hello from the browser"
    );
    hub.stop().await.unwrap();
}

/// Presence goes to the JSON members of a room however many plain members it has, and keeps
/// going to them as other JSON members come and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_json_members_as_others_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let _bob = plain(&hub, "/?name=bob").await;
    let (mut alice, _) = joined(&hub, "/", "alice", None).await;
    let (carol, _) = joined(&hub, "/", "carol", None).await;
    let seen = recv_kind(&mut alice, "presence").await;
    assert_eq!(
        (seen["event"].as_str(), seen["name"].as_str()),
        (Some("joined"), Some("carol"))
    );
    drop(carol);
    let seen = recv_kind(&mut alice, "presence").await;
    assert_eq!(
        (seen["event"].as_str(), seen["name"].as_str()),
        (Some("left"), Some("carol"))
    );
    // One JSON member is left (alice), among plain ones: still told.
    let dave = plain(&hub, "/?name=dave").await;
    let seen = recv_kind(&mut alice, "presence").await;
    assert_eq!(
        (seen["event"].as_str(), seen["name"].as_str()),
        (Some("joined"), Some("dave"))
    );
    assert_eq!(seen["count"], 3);
    drop(dave);
    let seen = recv_kind(&mut alice, "presence").await;
    assert_eq!(
        (seen["event"].as_str(), seen["name"].as_str()),
        (Some("left"), Some("dave"))
    );
    hub.stop().await.unwrap();
}

/// A join costs the room a small frame per member: the member list goes to the joiner only
/// (a list to every member on every join would make a room of N send N cubed bytes as it
/// fills, and let one client flood everybody by joining and leaving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_joiner_gets_the_member_list() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let (mut alice, _) = joined(&hub, "/", "alice", None).await;
    let mut crowd = Vec::new();
    for i in 0..50 {
        crowd.push(plain(&hub, &format!("/?name=p{i}")).await);
        let seen = recv_kind(&mut alice, "presence").await;
        assert_eq!(seen["count"], i + 2, "{seen}");
    }
    let mut carol = json_client(&hub, "/").await;
    send_json(&mut carol, json!({"type": "join", "name": "carol"})).await;
    recv_kind(&mut carol, "history").await;
    let own = recv_kind(&mut carol, "presence").await;
    let mut expected = vec!["alice".to_owned()];
    expected.extend((0..50).map(|i| format!("p{i}")));
    expected.push("carol".to_owned());
    assert_eq!(own["members"], json!(expected));
    assert_eq!(own["count"], 52);

    let seen = recv_kind(&mut alice, "presence").await;
    assert_eq!(
        seen,
        json!({"type": "presence", "room": "general", "event": "joined", "name": "carol", "count": 52})
    );
    drop(crowd);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_with_its_last_seq_gets_exactly_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let (mut alice, _) = joined(&hub, "/", "alice", None).await;
    let (mut bob, _) = joined(&hub, "/", "bob", None).await;
    let (mut carol, _) = joined(&hub, "/", "carol", None).await;
    say(&mut alice, "before").await;
    let last_seen = recv_kind(&mut carol, "message").await["seq"]
        .as_u64()
        .unwrap();
    drop(carol); // dropped without a close frame, like a lost network

    for i in 0..5 {
        say(&mut alice, &format!("missed {i}")).await;
        say(&mut bob, &format!("also missed {i}")).await;
    }
    // The others keep talking normally.
    let mut seen_by_bob = Vec::new();
    while seen_by_bob.len() < 11 {
        seen_by_bob.push(recv_kind(&mut bob, "message").await);
    }

    let (_carol, history) = joined(&hub, "/", "carol", Some(last_seen)).await;
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (last_seen + 1..=last_seen + 10).collect::<Vec<_>>());
    // Exactly what bob saw after `last_seen`, in the same order (live messages carry a
    // "type" field, history entries do not).
    let live: Vec<_> = seen_by_bob[1..]
        .iter()
        .cloned()
        .map(|mut m| {
            m.as_object_mut().unwrap().remove("type");
            m
        })
        .collect();
    assert_eq!(history, live);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let (mut alice, _) = joined(&hub, "/rooms/keep", "alice", None).await;
    for text in ["one", "two", "three"] {
        say(&mut alice, text).await;
        recv_kind(&mut alice, "message").await;
    }
    hub.stop().await.unwrap();
    // The shutdown closed alice with 1001.
    assert_eq!(close_code(&mut alice).await, duplex::CloseCode::GOING_AWAY);

    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let (mut bob, history) = joined(&hub, "/rooms/keep", "bob", None).await;
    let texts: Vec<&str> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    say(&mut bob, "four").await;
    assert_eq!(recv_kind(&mut bob, "message").await["seq"], 4);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_to_the_retention_limit() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path()).history_limit(3)).await;
    let (mut alice, _) = joined(&hub, "/", "alice", None).await;
    for i in 1..=5 {
        say(&mut alice, &format!("m{i}")).await;
        recv_kind(&mut alice, "message").await;
    }
    let (_bob, history) = joined(&hub, "/", "bob", Some(0)).await;
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_reported_and_the_connection_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let mut ws = json_client(&hub, "/").await;
    say(&mut ws, "too early").await;
    assert_eq!(recv_json(&mut ws).await["code"], "not_joined");
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["code"], "bad_request");
    send_json(&mut ws, json!({"type": "join"})).await;
    assert_eq!(recv_json(&mut ws).await["code"], "bad_name");
    send_json(
        &mut ws,
        json!({"type": "join", "name": "x", "room": "no/slash"}),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["code"], "bad_room");
    send_json(&mut ws, json!({"type": "join", "name": "x"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "history");
    assert_eq!(recv_json(&mut ws).await["type"], "presence");
    hub.stop().await.unwrap();
}

/// Pongs and close replies go out while no chat traffic wakes the writer (it waits for what
/// the reader hands over beside its queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_chat_connection_answers_pings_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let (mut alice, _) = joined(&hub, "/", "alice", None).await;
    let mut bob = plain(&hub, "/?name=bob").await;
    recv_kind(&mut alice, "presence").await;
    for ws in [&mut alice, &mut bob] {
        for round in 0..3u8 {
            let payload = vec![round; 4];
            ws.send(Message::Ping(payload.clone().into()))
                .await
                .unwrap();
            let pong = tokio::time::timeout(WAIT, ws.recv()).await.unwrap();
            assert_eq!(pong.unwrap().unwrap(), Message::Pong(payload.into()));
        }
        tokio::time::timeout(WAIT, ws.close(None))
            .await
            .unwrap()
            .unwrap();
    }
    hub.stop().await.unwrap();
}
