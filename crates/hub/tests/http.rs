//! The plain HTTP side: page, health, metrics, unknown paths, and echo.

mod common;

use common::*;
use duplex::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_health_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;

    let (status, head, body) = http_get(&hub, "/").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.contains("<script type=\"module\" src=\"/chat.js\""),
        "{body}"
    );
    let (status, head, body) = http_get(&hub, "/chat.js").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript"), "{head}");
    assert!(body.contains("from \"/duplex-client.js\""), "{body}");
    // The client library the page imports (clients/js), as an ES module.
    let (status, head, body) = http_get(&hub, "/duplex-client.js").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript"), "{head}");
    assert!(body.contains("export class DuplexClient"));
    assert!(body.contains("\"duplex.v1\""));
    assert_eq!(http_get(&hub, "/chat.css").await.0, 200);
    assert_eq!(http_get(&hub, "/rooms/random").await.0, 200);
    assert_eq!(
        http_get(&hub, "/healthz").await,
        (200, http_get(&hub, "/healthz").await.1, "ok\n".into())
    );
    assert_eq!(http_get(&hub, "/nope").await.0, 404);
    assert_eq!(http_get(&hub, "/rooms/bad%20name").await.0, 404);

    // Some traffic for the counters.
    let (mut alice, _) = joined(&hub, "/", "alice", None).await;
    say(&mut alice, "counted").await;
    recv_kind(&mut alice, "message").await;
    let mut echo = plain(&hub, "/echo").await;
    echo.send(Message::text("ping")).await.unwrap();
    assert_eq!(recv_text(&mut echo).await, "ping");

    // The broker records a message's fan-out latency on its own thread just after queueing
    // it, so a scrape can race the recipient reading it: wait (bounded) for the count.
    let (mut status, mut head, mut metrics) = http_get(&hub, "/metrics").await;
    for _ in 0..50 {
        if metrics.contains("duplex_fanout_latency_seconds_count 1\n") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        (status, head, metrics) = http_get(&hub, "/metrics").await;
    }
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for line in [
        "duplex_connections_open 2\n",
        "duplex_rooms 1\n",
        "duplex_connections_total{endpoint=\"chat\"} 1\n",
        "duplex_connections_total{endpoint=\"echo\"} 1\n",
        "duplex_stored_messages_total 1\n",
        "duplex_rejections_total{reason=\"not_found\"} 2\n",
        "duplex_fanout_latency_seconds_count 1\n",
        "# TYPE duplex_fanout_latency_seconds histogram\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    // messages received: the join, the send and the echo; sent: history, presence,
    // message, echo.
    assert!(
        metrics.contains("duplex_messages_received_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("duplex_messages_sent_total 4\n"),
        "{metrics}"
    );
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let mut chat = plain(&hub, "/").await;
    let mut echo = plain(&hub, "/echo").await;
    let addr = hub.addr;
    let stopping = tokio::spawn(hub.stop());
    assert_eq!(close_code(&mut chat).await, duplex::CloseCode::GOING_AWAY);
    assert_eq!(close_code(&mut echo).await, duplex::CloseCode::GOING_AWAY);
    stopping.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}
