//! The backend HTTP API, the admin listener and the HTTP hardening, over loopback.

mod common;

use common::*;
use duplex::Message;
use duplex_testkit::http::{request_head, RawResponse};
use duplex_testkit::net::raw_exchange;
use serde_json::{json, Value};

const KEY: &str = "backend-key-0123456789";

/// An HTTP request with `Authorization: Bearer key` (if any) and a JSON body (if any).
async fn request(
    hub: &TestHub,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> RawResponse {
    let auth = key.map(|k| format!("Bearer {k}"));
    let len = body.map(|b| b.len().to_string());
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    if let Some(len) = &len {
        headers.push(("Content-Type", "application/json"));
        headers.push(("Content-Length", len));
    }
    let mut raw = request_head(method, path, &headers).into_bytes();
    raw.extend_from_slice(body.unwrap_or_default().as_bytes());
    raw_exchange(hub.addr, &raw).await
}

fn json_of(response: &RawResponse) -> Value {
    serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.body))
}

async fn api_hub(dir: &std::path::Path) -> TestHub {
    TestHub::start(TestHub::config(dir).api_key(KEY)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_publishes_into_a_room_whose_members_get_the_next_seq() {
    let dir = tempfile::tempdir().unwrap();
    let hub = api_hub(dir.path()).await;
    let (mut ann, _) = joined(&hub, "/rooms/ops", "ann", None).await;
    let mut plain_bob = plain(&hub, "/rooms/ops?name=bob").await;
    recv_kind(&mut ann, "presence").await;
    say(&mut ann, "anyone?").await;
    assert_eq!(recv_kind(&mut ann, "message").await["seq"], 1);
    assert_eq!(recv_text(&mut plain_bob).await, "ann: anyone?");

    let body = json!({"text": "deploy finished", "from": "ci"}).to_string();
    let response = request(
        &hub,
        "POST",
        "/api/rooms/ops/messages",
        Some(KEY),
        Some(&body),
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.body);
    assert_eq!(json_of(&response), json!({"seq": 2}));
    assert!(response
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    let msg = recv_kind(&mut ann, "message").await;
    assert_eq!(
        (&msg["seq"], &msg["from"], &msg["text"]),
        (&json!(2), &json!("ci"), &json!("deploy finished"))
    );
    assert_eq!(recv_text(&mut plain_bob).await, "ci: deploy finished");

    // History and presence read back.
    let history = request(
        &hub,
        "GET",
        "/api/rooms/ops/messages?since=1",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.body);
    let messages = &json_of(&history)["messages"];
    assert_eq!(messages.as_array().map(Vec::len), Some(1));
    assert_eq!(messages[0]["text"], "deploy finished");
    let last = request(
        &hub,
        "GET",
        "/api/rooms/ops/messages?limit=1",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(json_of(&last)["messages"][0]["seq"], 2);
    let presence = request(&hub, "GET", "/api/rooms/ops/presence", Some(KEY), None).await;
    assert_eq!(
        json_of(&presence),
        json!({"room": "ops", "count": 2, "members": ["ann", "bob"]})
    );
    let rooms = request(&hub, "GET", "/api/rooms", Some(KEY), None).await;
    assert_eq!(
        json_of(&rooms)["rooms"],
        json!([{"name": "ops", "members": 2, "last_seq": 2}])
    );
    // A member that joins later gets the backend's message in its replay.
    let (_carl, replay) = joined(&hub, "/rooms/ops", "carl", Some(1)).await;
    assert_eq!(replay[0]["from"], "ci");
    plain_bob.send(Message::text("bye")).await.unwrap();
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_gets_401() {
    let dir = tempfile::tempdir().unwrap();
    let hub = api_hub(dir.path()).await;
    let body = r#"{"text":"x"}"#;
    for key in [None, Some("wrong"), Some("backend-key-012345678"), Some("")] {
        let response = request(&hub, "POST", "/api/rooms/a/messages", key, Some(body)).await;
        assert_eq!(response.status, 401, "{key:?}: {}", response.body);
        assert_eq!(json_of(&response)["code"], "unauthorized");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    }
    let response = request(&hub, "GET", "/api/rooms", Some("nope"), None).await;
    assert_eq!(response.status, 401);
    // Nothing was stored.
    let rooms = request(&hub, "GET", "/api/rooms", Some(KEY), None).await;
    assert_eq!(
        json_of(&rooms),
        json!({"rooms": []}),
        "one page, and no next"
    );
    let bad = request(&hub, "GET", "/api/rooms?cursor=a.x", Some(KEY), None).await;
    assert_eq!(bad.status, 400);
    assert_eq!(json_of(&bad)["code"], "bad_cursor");
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(
        TestHub::config(dir.path())
            .api_key(KEY)
            .max_message_size(100),
    )
    .await;
    let cases: [(&str, &str, Option<String>, u16, &str); 8] = [
        (
            "POST",
            "/api/rooms/a/messages",
            Some("{not json".into()),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/api/rooms/a/messages",
            Some(r#"{"txt":"x"}"#.into()),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/api/rooms/bad%20room/messages",
            Some(r#"{"text":"x"}"#.into()),
            400,
            "bad_room",
        ),
        (
            "POST",
            "/api/rooms/a/messages",
            Some(json!({"text": "x".repeat(101)}).to_string()),
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/rooms/a/messages",
            Some("x".repeat(5000)),
            413,
            "too_large",
        ),
        ("GET", "/api/nothing", None, 404, "not_found"),
        ("DELETE", "/api/rooms/a/messages", None, 405, "method"),
        (
            "GET",
            "/api/rooms/a/messages?since=x",
            None,
            400,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = request(&hub, method, path, Some(KEY), body.as_deref()).await;
        assert_eq!(
            response.status, status,
            "{method} {path}: {}",
            response.body
        );
        assert_eq!(json_of(&response)["code"], code, "{method} {path}");
    }
    let response = request(&hub, "PUT", "/api/rooms", Some(KEY), None).await;
    assert_eq!(response.header("allow"), Some("GET"));
    // A bad `from` is refused too.
    let body = json!({"text": "x", "from": "\u{7}"}).to_string();
    let response = request(
        &hub,
        "POST",
        "/api/rooms/a/messages",
        Some(KEY),
        Some(&body),
    )
    .await;
    assert_eq!(response.status, 400);
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_api_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    let response = request(&hub, "GET", "/api/rooms", Some("anything"), None).await;
    assert_eq!(response.status, 404);
    assert_eq!(json_of(&response)["code"], "api_off");
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_metrics_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = api_hub(dir.path()).await;
    assert_eq!(
        request(&hub, "GET", "/metrics", None, None).await.status,
        401
    );
    let metrics = request(&hub, "GET", "/metrics", Some(KEY), None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("duplex_rejections_total"));
    assert_eq!(
        request(&hub, "GET", "/healthz", None, None).await.status,
        200
    );
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_takes_metrics_and_health_off_the_main_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestHub::config(dir.path()).admin_addr("127.0.0.1:0".parse().unwrap());
    let addr = "127.0.0.1:0".parse().unwrap();
    let hub = duplex_hub::Hub::bind(&[addr], config).await.unwrap();
    let main = hub.local_addr();
    let admin = hub.admin_addr().expect("an admin address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hub.run(async {
        let _ = stopped.await;
    }));
    let get = |path: &str| request_head("GET", path, &[]).into_bytes();
    assert_eq!(raw_exchange(main, &get("/metrics")).await.status, 404);
    assert_eq!(raw_exchange(main, &get("/healthz")).await.status, 404);
    assert_eq!(raw_exchange(main, &get("/")).await.status, 200);
    let metrics = raw_exchange(admin, &get("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("duplex_connections_open"));
    assert_eq!(raw_exchange(admin, &get("/healthz")).await.body, "ok\n");
    assert_eq!(raw_exchange(admin, &get("/")).await.status, 404);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_a_content_security_policy() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(dir.path())).await;
    for path in ["/", "/rooms/dev?token=x"] {
        let page = request(&hub, "GET", path, None, None).await;
        assert_eq!(page.status, 200);
        let csp = page.header("content-security-policy").expect("a CSP");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        // The CSP forbids inline script and style: the page has none.
        assert!(!page.body.contains("<script>") && !page.body.contains("<style"));
        assert!(!page.body.contains(" style="));
    }
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited_and_proxies_are_believed_only_when_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestHub::config(dir.path())
        .max_connections_per_ip(2)
        .trust_proxy("127.0.0.0/8".parse().unwrap());
    let hub = TestHub::start(config).await;
    // Two WebSockets from one forwarded client address...
    let forwarded = |ip: &'static str| {
        duplex::ClientBuilder::new(&hub.url("/echo"))
            .unwrap()
            .header(
                http::HeaderName::from_static("x-forwarded-for"),
                http::HeaderValue::from_static(ip),
            )
    };
    let _a = connect(&hub, forwarded("198.51.100.1")).await.unwrap();
    let _b = connect(&hub, forwarded("198.51.100.1")).await.unwrap();
    // ...and the third is refused, while another address still gets in.
    match connect(&hub, forwarded("198.51.100.1")).await {
        Err(duplex::Error::Handshake(duplex::proto::handshake::HandshakeError::Status {
            status,
            ..
        })) => assert_eq!(status, 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    let _c = connect(&hub, forwarded("198.51.100.2")).await.unwrap();
    drop(_a);
    // The place is given back once the connection is gone.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = connect(&hub, forwarded("198.51.100.1")).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a closed connection frees its place");
    hub.stop().await.unwrap();
}
