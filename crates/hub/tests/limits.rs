//! Auth, limits and the slow-recipient policy, over loopback.

mod common;

use std::time::Duration;

use common::*;
use duplex::proto::handshake::HandshakeError;
use duplex::{ClientBuilder, CloseCode, Message};
use http::{HeaderName, HeaderValue, StatusCode};

/// The status an upgrade was refused with.
async fn refused(hub: &TestHub, builder: ClientBuilder) -> StatusCode {
    match connect(hub, builder).await {
        Err(duplex::Error::Handshake(HandshakeError::Status { status, .. })) => status,
        Ok(_) => panic!("the upgrade was accepted"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_that_stops_reading_is_disconnected_with_4000_and_the_others_get_everything() {
    const MESSAGES: usize = 800;
    let dir = tempfile::tempdir().unwrap();
    let config = TestHub::config(dir.path())
        .send_queue(16)
        .rate_limit(0)
        // Time for the slow client to read what was on its way before the close frame.
        .close_timeout(Duration::from_secs(10));
    let hub = TestHub::start(config).await;
    let (slow, _) = joined(&hub, "/", "slow", None).await;
    let (mut reader, _) = joined(&hub, "/", "reader", None).await;
    // A plain client: it does not get its own messages back, so it needs to read nothing.
    let mut sender = plain(&hub, "/?name=sender").await;
    recv_kind(&mut reader, "presence").await;

    // 800 messages of 32 KiB: 25 MiB, far more than the loopback socket buffers hold
    // (a few MiB each way), so the slow client's queue must fill up.
    let filler = "x".repeat(32 * 1024);
    // The sender stays at most a few messages ahead of the reader, so that the reader is never
    // the slow one, however busy the machine.
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0);
    let sending = tokio::spawn(async move {
        for i in 0..MESSAGES {
            read_so_far.wait_for(|&n| i < n + 8).await.unwrap();
            let line = format!("{i} {filler}");
            sender.send(Message::text(line)).await.unwrap();
        }
        sender
    });
    // Once the hub has given up on the slow client (the others are told it left), it starts
    // reading: what was already on its way, then the close frame.
    let drain = |mut slow: Ws| {
        tokio::spawn(async move {
            let mut received = 0;
            loop {
                match tokio::time::timeout(WAIT, slow.recv())
                    .await
                    .expect("in time")
                {
                    Some(Ok(Message::Text(_))) => received += 1,
                    Some(Ok(Message::Close(frame))) => return (received, frame.map(|f| f.code)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
    };
    let mut slow = Some(slow);
    let mut draining = None;
    let is_slow_leaving = |m: &serde_json::Value| {
        assert_eq!(m["type"], "presence", "{m}");
        assert_eq!(
            (m["event"].as_str(), m["name"].as_str()),
            (Some("left"), Some("slow"))
        );
    };
    for i in 0..MESSAGES {
        let m = loop {
            let m = recv_json(&mut reader).await;
            if m["type"] == "presence" {
                // Removed from the room and announced: never skipped silently.
                is_slow_leaving(&m);
                draining = slow.take().map(drain);
                continue;
            }
            break m;
        };
        let text = m["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("{i} ")),
            "message {i} missing or out of order"
        );
        progress.send_replace(i + 1);
    }
    let _sender = sending.await.unwrap();
    if let Some(slow) = slow.take() {
        is_slow_leaving(&recv_json(&mut reader).await);
        draining = Some(drain(slow));
    }
    let (received, code) = draining.expect("draining").await.unwrap();
    assert_eq!(code, Some(CloseCode(duplex_hub::CLOSE_TOO_SLOW)));
    assert!(received < MESSAGES, "the slow client was cut off early");
    let metrics = hub_metrics(&hub).await;
    assert!(
        metrics.contains("duplex_slow_disconnects_total 1\n"),
        "{metrics}"
    );
    hub.stop().await.unwrap();
}

async fn hub_metrics(hub: &TestHub) -> String {
    let (status, _, body) = http_get(hub, "/metrics").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_required_as_bearer_or_query_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path()).token("s3cret")).await;
    let url = hub.url("/");
    assert_eq!(refused(&hub, ClientBuilder::new(&url).unwrap()).await, 401);
    let wrong = ClientBuilder::new(&hub.url("/?token=guess")).unwrap();
    assert_eq!(refused(&hub, wrong).await, 401);
    let echo = ClientBuilder::new(&hub.url("/echo")).unwrap();
    assert_eq!(refused(&hub, echo).await, 401);

    let bearer = ClientBuilder::new(&url).unwrap().header(
        HeaderName::from_static("authorization"),
        HeaderValue::from_static("Bearer s3cret"),
    );
    connect(&hub, bearer).await.expect("bearer token accepted");
    let query = ClientBuilder::new(&hub.url("/rooms/x?token=s3cret")).unwrap();
    connect(&hub, query).await.expect("query token accepted");
    // Pages and probes need no token.
    assert_eq!(http_get(&hub, "/healthz").await.0, 200);
    assert!(hub_metrics(&hub)
        .await
        .contains("duplex_rejections_total{reason=\"unauthorized\"} 3\n"));
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_with_403() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestHub::config(dir.path()).allowed_origin("http://chat.example");
    let hub = TestHub::start(config).await;
    let origin = |value| {
        ClientBuilder::new(&hub.url("/")).unwrap().header(
            HeaderName::from_static("origin"),
            HeaderValue::from_static(value),
        )
    };
    assert_eq!(refused(&hub, origin("http://evil.example")).await, 403);
    connect(&hub, origin("http://chat.example"))
        .await
        .expect("allowed origin");
    // No Origin: not a browser, not subject to the check.
    plain(&hub, "/").await;
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_faster_than_the_rate_limit_closes_with_1008() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path()).rate_limit(5)).await;
    let mut ws = plain(&hub, "/").await;
    let mut listener = plain(&hub, "/").await;
    for i in 0..30 {
        if ws.send(Message::text(format!("spam {i}"))).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, CloseCode::POLICY);
    // The burst allowance (twice the rate) got through before the cut.
    let mut got = 0;
    while let Ok(Some(Ok(Message::Text(_)))) =
        tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
    {
        got += 1;
    }
    assert!((10..=11).contains(&got), "{got} messages relayed");
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path()).max_message_size(1024)).await;
    let mut ws = plain(&hub, "/").await;
    ws.send(Message::text("x".repeat(1024))).await.unwrap();
    ws.send(Message::text("x".repeat(1025))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::TOO_BIG);
    // The echo endpoint has its own, larger limit.
    let mut echo = plain(&hub, "/echo").await;
    let big = "y".repeat(100_000);
    echo.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(recv_text(&mut echo).await, big);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_on_a_chat_connection_closes_with_1003() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let mut ws = plain(&hub, "/").await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::UNSUPPORTED);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path()).max_connections(1)).await;
    let mut first = plain(&hub, "/").await;
    let (status, head, _) = http_get(&hub, "/healthz").await;
    assert_eq!(status, 503);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    first.close(None).await.unwrap();
    drop(first);
    // Once it is gone, requests are served again.
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(&hub, "/healthz").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "capacity never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.stop().await.unwrap();
}
