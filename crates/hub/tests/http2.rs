//! The hub over HTTP/2: several WebSockets (chat and echo) and plain requests on one
//! connection, over TLS (ALPN `h2`) and over cleartext with prior knowledge, counted by
//! version in `/metrics`; HTTP/1.1 clients on the same port as before.

mod common;

use bytes::Bytes;
use common::{TestHub, WAIT};
use duplex::http2::Client;
use duplex::{ClientBuilder, Message};
use duplex_testkit::pki::TestPki;
use serde_json::{json, Value};
use tokio::time::timeout;

async fn next_json(ws: &mut duplex::WebSocket<duplex::MaybeTlsStream>) -> Value {
    loop {
        match ws.recv().await.expect("open").expect("a frame") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            _ => continue,
        }
    }
}

async fn get(client: &Client, path: &str) -> (u16, String) {
    let request = http::Request::get(path)
        .body(Bytes::new())
        .expect("a request");
    let response = client.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    (
        status,
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

/// Two chat members and an echo on one HTTP/2 connection, and the page and metrics on it too.
async fn exercise(builder: ClientBuilder) {
    let client = Client::connect(builder.protocol("duplex.v1"))
        .await
        .expect("an HTTP/2 connection");
    assert!(
        client.supports_websockets(),
        "the hub allows extended CONNECT"
    );
    let (mut ann, response) = client.websocket("/").await.expect("ann");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(ann.protocol(), Some("duplex.v1"));
    let (mut bob, _) = client.websocket("/").await.expect("bob");
    let (mut echo, _) = client.websocket("/echo").await.expect("echo");

    let join = |name: &str| json!({"type": "join", "name": name}).to_string();
    ann.send(Message::text(join("ann"))).await.unwrap();
    while next_json(&mut ann).await["type"] != "presence" {}
    bob.send(Message::text(join("bob"))).await.unwrap();
    while next_json(&mut bob).await["type"] != "presence" {}
    bob.send(Message::text(
        json!({"type": "send", "text": "over h2"}).to_string(),
    ))
    .await
    .unwrap();
    let heard = loop {
        let v = next_json(&mut ann).await;
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(heard["text"], "over h2");
    assert_eq!(heard["from"], "bob");

    echo.send(Message::binary(vec![7u8; 200_000]))
        .await
        .unwrap();
    assert_eq!(
        echo.recv().await.unwrap().unwrap(),
        Message::binary(vec![7u8; 200_000]),
        "a message larger than a stream's window"
    );

    let (status, page) = get(&client, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the page over the same connection");
    let (status, metrics) = get(&client, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("duplex_websockets_total{version=\"2\"} 3"),
        "{metrics}"
    );
    let (status, _) = get(&client, "/nowhere").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_pages_share_one_http2_connection_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["localhost"]);
    let tls = duplex::tls::server_config_from_pem(pki.cert(), pki.key()).unwrap();
    let hub = TestHub::start(TestHub::config(&dir.path().join("data")).tls(tls)).await;
    let port = hub.addr.port();
    let builder = |path: &str| {
        ClientBuilder::new(&format!("wss://localhost:{port}{path}"))
            .unwrap()
            .no_proxy()
            .ca_file(pki.ca())
    };
    timeout(WAIT, async {
        exercise(builder("/").http2(true)).await;
        // An HTTP/1.1 client on the same port still gets HTTP/1.1.
        let (mut old, response) = builder("/echo").connect().await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        old.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            old.recv().await.unwrap().unwrap(),
            Message::text("still here")
        );
    })
    .await
    .expect("in time");
    hub.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_http2_with_prior_knowledge_and_http11_share_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(TestHub::config(&dir.path().join("data"))).await;
    let port = hub.addr.port();
    timeout(WAIT, async {
        let builder = ClientBuilder::new(&format!("ws://127.0.0.1:{port}/"))
            .unwrap()
            .no_proxy()
            .http2(true);
        exercise(builder).await;
        let (mut old, response) = duplex::connect(&format!("ws://127.0.0.1:{port}/echo"))
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_11);
        old.send(Message::text("h1")).await.unwrap();
        assert_eq!(old.recv().await.unwrap().unwrap(), Message::text("h1"));
    })
    .await
    .expect("in time");
    hub.stop().await.unwrap();
}
