//! Parked echo connections: an idle `/echo` connection gives up its task, and nothing about it
//! changes for the client: it echoes, answers pings, gets its keepalive pings and is closed
//! with 1001 at shutdown, like a connection that was never parked.

mod common;

use std::time::Duration;

use common::*;
use duplex::{CloseCode, Message};
use futures_util::SinkExt;
use tokio::time::{sleep, timeout, Instant};

/// The `duplex_connections_parked` gauge.
async fn parked(hub: &TestHub) -> i64 {
    let (status, _, body) = http_get(hub, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("duplex_connections_parked "))
        .expect("the parked gauge")
        .parse()
        .expect("a number")
}

/// Waits (bounded) until `n` connections are parked.
async fn until_parked(hub: &TestHub, n: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = parked(hub).await;
        if now == n {
            return;
        }
        assert!(Instant::now() < deadline, "{now} parked, expected {n}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn config(dir: &std::path::Path) -> duplex_hub::HubConfig {
    TestHub::config(dir).park_after(Some(Duration::from_millis(100)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_echo_connections_are_parked_and_still_echo() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(plain(&hub, "/echo").await);
    }
    // Straight after the handshake, nothing to read: parked at once.
    until_parked(&hub, 20).await;
    for (i, ws) in clients.iter_mut().enumerate() {
        let text = format!("after parking {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(recv_text(ws).await, text);
    }
    // Quiet again for longer than park_after: parked again, and still echoing.
    until_parked(&hub, 20).await;
    let ws = &mut clients[7];
    for i in 0..3 {
        ws.feed(Message::binary(vec![i; 1000])).await.unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..3 {
        let echoed = timeout(WAIT, ws.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, Message::binary(vec![i; 1000]));
    }
    hub.stop().await.unwrap();
}

/// Traffic more often than `park_after` keeps a connection in its task; once it stops, the
/// connection is parked, no sooner than `park_after` later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_not_parked() {
    let dir = tempfile::tempdir().unwrap();
    let park_after = Duration::from_millis(300);
    let hub = TestHub::start(TestHub::config(dir.path()).park_after(Some(park_after))).await;
    let mut ws = plain(&hub, "/echo").await;
    until_parked(&hub, 1).await;
    let mut last = Instant::now();
    for i in 0..15 {
        last = Instant::now();
        ws.send(Message::text(format!("tick {i}"))).await.unwrap();
        assert_eq!(recv_text(&mut ws).await, format!("tick {i}"));
        // The first message resumed it; from then on it is never quiet for 300 ms.
        assert_eq!(parked(&hub).await, 0, "parked during traffic (message {i})");
        sleep(Duration::from_millis(40)).await;
    }
    until_parked(&hub, 1).await;
    assert!(last.elapsed() >= park_after);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_answers_pings_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut ws = plain(&hub, "/echo").await;
    until_parked(&hub, 1).await;
    ws.send(Message::Ping(b"there?".as_slice().into()))
        .await
        .unwrap();
    let pong = timeout(WAIT, ws.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::Pong(b"there?".as_slice().into()));
    until_parked(&hub, 1).await;
    // The client closes a parked connection: `close` returns once the server answered.
    timeout(WAIT, ws.close(None)).await.unwrap().unwrap();
    assert!(timeout(WAIT, ws.recv()).await.unwrap().is_none());
    until_parked(&hub, 0).await;
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_get_their_keepalive_pings() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.websocket = config.websocket.keepalive(
        Some(Duration::from_millis(1500)),
        Some(Duration::from_secs(5)),
    );
    let hub = TestHub::start(config).await;
    let mut ws = plain(&hub, "/echo").await;
    until_parked(&hub, 1).await;
    // The lot wakes the connection when its ping is due (within its sweep period of 1 s).
    let started = Instant::now();
    let ping = timeout(WAIT, ws.recv()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ping, Message::Ping(_)), "{ping:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Its pong went back as the client read the ping: parked again afterwards.
    until_parked(&hub, 1).await;
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let mut a = plain(&hub, "/echo").await;
    let mut b = plain(&hub, "/echo").await;
    until_parked(&hub, 2).await;
    let stopping = tokio::spawn(hub.stop());
    assert_eq!(close_code(&mut a).await, CloseCode::GOING_AWAY);
    assert_eq!(close_code(&mut b).await, CloseCode::GOING_AWAY);
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_park_after_nothing_is_parked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path()).park_after(None)).await;
    let mut ws = plain(&hub, "/echo").await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(parked(&hub).await, 0);
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(recv_text(&mut ws).await, "still here");
    hub.stop().await.unwrap();
}
