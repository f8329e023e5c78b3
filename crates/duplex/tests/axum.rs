//! `duplex::axum::WebSocketUpgrade` in a real axum server on loopback: a page and WebSockets
//! on one port, the basics with the library client and a raw-socket peer (echo of text and
//! binary, ping and pong, close codes echoed), permessage-deflate negotiated when offered and
//! configured, the subprotocol selected, and the statuses of refused upgrades.

mod common;

use std::net::SocketAddr;

use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::bounded;
use duplex::axum::{HyperWebSocket, WebSocketUpgrade};
use duplex::{ClientBuilder, CloseCode, CloseFrame, Config, DeflateConfig, Message, Rejection};
use duplex_testkit::frame::{close_payload, masked, BINARY, CLOSE, FIN, PING, PONG, RSV1, TEXT};
use duplex_testkit::http::{header, request_head, UPGRADE_HEADERS};
use duplex_testkit::net::{expect_close, raw_client, raw_exchange, read_frame, read_head};
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PAGE: &str = "<h1>a page</h1>";

async fn echo(mut ws: HyperWebSocket) {
    while let Some(Ok(msg)) = ws.recv().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

fn deflate() -> Config {
    Config::default().deflate(Some(DeflateConfig::default()))
}

/// `/ws`: echo with deflate and two subprotocols; `/plain`: echo without deflate;
/// `/private`: a token check; `/both`: the page or the WebSocket on one route.
fn app() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.protocols(["chat.v2", "chat.v1"])
                    .config(deflate())
                    .on_upgrade(echo)
            }),
        )
        .route(
            "/plain",
            get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .route(
            "/private",
            get(|ws: WebSocketUpgrade| async move {
                ws.check(|incoming| {
                    duplex::auth::require_token(incoming.request(), "token", |t| t == "s3cret")
                })
                .check(|incoming| {
                    // A check may choose the protocol itself: the list is then not used.
                    incoming.select_protocol(&["private.v1"]);
                    Ok(())
                })
                .protocols(["chat.v1"])
                .on_upgrade(echo)
            }),
        )
        .route(
            "/both",
            get(|ws: Option<WebSocketUpgrade>| async move {
                match ws {
                    Some(ws) => ws.on_upgrade(echo),
                    None => Html(PAGE).into_response(),
                }
            }),
        )
        .route(
            "/refuse",
            get(|ws: WebSocketUpgrade| async move {
                // A handler may also refuse with a Rejection, an axum response.
                if ws.request().uri().query() == Some("busy") {
                    return Err(Rejection::unavailable(
                        "busy",
                        std::time::Duration::from_secs(3),
                    ));
                }
                Ok::<Response, Rejection>(ws.on_upgrade(echo))
            }),
        )
}

/// An axum server on a free loopback port.
async fn server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app()).await });
    addr
}

#[tokio::test]
async fn the_page_and_the_websocket_share_the_port_and_echo_text_and_binary() {
    bounded(async {
        let addr = server().await;
        let page = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(page.status, 200);
        assert_eq!(page.body, PAGE);

        let (mut ws, response) = ClientBuilder::new(&format!("ws://{addr}/ws"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(ws.protocol(), None, "nothing offered, nothing selected");
        assert!(ws.deflate().is_none(), "not offered, not negotiated");
        for m in [
            Message::text("hello"),
            Message::text("é".repeat(10_000)),
            Message::binary(vec![7u8; 100_000]),
            Message::binary(Vec::new()),
        ] {
            ws.send(m.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), m);
        }
        ws.close(Some(CloseFrame::new(CloseCode::NORMAL, "done")))
            .await
            .unwrap();
        assert!(ws.recv().await.is_none());
    })
    .await
}

#[tokio::test]
async fn a_raw_peer_gets_its_echo_its_pong_and_its_close_code_back() {
    bounded(async {
        let addr = server().await;
        let mut tcp = raw_client(addr, "/ws").await;
        tcp.write_all(&masked(FIN | TEXT, b"raw text"))
            .await
            .unwrap();
        let frame = read_frame(&mut tcp).await;
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (TEXT, &b"raw text"[..])
        );
        tcp.write_all(&masked(FIN | BINARY, &[0, 1, 2, 255]))
            .await
            .unwrap();
        let frame = read_frame(&mut tcp).await;
        assert_eq!((frame.opcode, frame.payload), (BINARY, vec![0, 1, 2, 255]));
        tcp.write_all(&masked(FIN | PING, b"are you there"))
            .await
            .unwrap();
        let frame = read_frame(&mut tcp).await;
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (PONG, &b"are you there"[..])
        );
        tcp.write_all(&masked(FIN | CLOSE, &close_payload(4001, "bye")))
            .await
            .unwrap();
        expect_close(&mut tcp, "a close with 4001", 4001).await;
    })
    .await
}

#[tokio::test]
async fn a_protocol_error_closes_with_1002() {
    bounded(async {
        let addr = server().await;
        let mut tcp = raw_client(addr, "/ws").await;
        // Unmasked: clients must mask.
        tcp.write_all(&duplex_testkit::frame::unmasked(FIN | TEXT, b"x"))
            .await
            .unwrap();
        expect_close(&mut tcp, "an unmasked frame", 1002).await;
    })
    .await
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_when_offered_and_configured() {
    bounded(async {
        let addr = server().await;
        let client = || {
            ClientBuilder::new(&format!("ws://{addr}/ws"))
                .unwrap()
                .config(deflate())
        };
        let (mut ws, response) = client().connect().await.unwrap();
        let ext = response.headers()["sec-websocket-extensions"]
            .to_str()
            .unwrap();
        assert!(ext.starts_with("permessage-deflate"), "{ext}");
        assert!(ws.deflate().is_some());
        let text = Message::text("compressible ".repeat(5_000));
        ws.send(text.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), text);

        // Offered, but the route does not configure it.
        let (_ws, response) = ClientBuilder::new(&format!("ws://{addr}/plain"))
            .unwrap()
            .config(deflate())
            .connect()
            .await
            .unwrap();
        assert!(response.headers().get("sec-websocket-extensions").is_none());

        // A raw peer offering it gets compressed frames (RSV1) back.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut headers = UPGRADE_HEADERS.to_vec();
        headers.push(("Sec-WebSocket-Extensions", "permessage-deflate"));
        tcp.write_all(request_head("GET", "/ws", &headers).as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let ext = header(&head, "sec-websocket-extensions").unwrap_or_default();
        assert!(ext.starts_with("permessage-deflate"), "{head}");
        let big = "a".repeat(2_000);
        tcp.write_all(&masked(FIN | TEXT, big.as_bytes()))
            .await
            .unwrap();
        let frame = read_frame(&mut tcp).await;
        assert_eq!(frame.rsv, RSV1 >> 4, "{frame:?}");
        assert!(frame.payload.len() < 100, "{} bytes", frame.payload.len());
    })
    .await
}

#[tokio::test]
async fn the_subprotocol_is_selected_in_the_servers_order() {
    bounded(async {
        let addr = server().await;
        let connect = |path: &'static str, offers: &'static [&'static str]| async move {
            let mut builder = ClientBuilder::new(&format!("ws://{addr}{path}")).unwrap();
            for p in offers {
                builder = builder.protocol(*p);
            }
            builder.connect().await
        };
        let (ws, response) = connect("/ws", &["chat.v0", "chat.v1", "chat.v2"])
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("chat.v2"));
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
        let (ws, _) = connect("/ws", &["chat.v1"]).await.unwrap();
        assert_eq!(ws.protocol(), Some("chat.v1"));
        let (ws, response) = connect("/ws", &["other"]).await.unwrap();
        assert_eq!(ws.protocol(), None);
        assert!(response.headers().get("sec-websocket-protocol").is_none());
        // Chosen by a check.
        let (ws, _) = connect("/private?token=s3cret", &["chat.v1", "private.v1"])
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("private.v1"));
    })
    .await
}

#[tokio::test]
async fn refused_upgrades_have_the_statuses_of_the_http1_path() {
    bounded(async {
        let addr = server().await;
        let request = |path: &str, extra: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
        };
        let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let v13 = "Sec-WebSocket-Version: 13\r\n";

        // A plain GET to the WebSocket route.
        let plain = raw_exchange(addr, request("/ws", "").as_bytes()).await;
        assert_eq!(plain.status, 400, "{plain:?}");
        assert!(!plain.body.trim().is_empty(), "no reason: {plain:?}");

        let no_key =
            raw_exchange(addr, request("/ws", &format!("{upgrade}{v13}")).as_bytes()).await;
        assert_eq!(no_key.status, 400, "{no_key:?}");

        let v8 = raw_exchange(
            addr,
            request(
                "/ws",
                &format!("{upgrade}{key}Sec-WebSocket-Version: 8\r\n"),
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(v8.status, 426, "{v8:?}");
        assert_eq!(v8.header("sec-websocket-version"), Some("13"));

        // The same through the library client, which reports the status.
        let err = duplex::connect(&format!("ws://{addr}/private"))
            .await
            .unwrap_err();
        assert_eq!(err.http_status(), Some(StatusCode::UNAUTHORIZED), "{err:?}");
        let private = raw_exchange(
            addr,
            request("/private", &format!("{upgrade}{key}{v13}")).as_bytes(),
        )
        .await;
        assert_eq!(private.status, 401, "{private:?}");
        assert_eq!(private.header("www-authenticate"), Some("Bearer"));
        let (_ws, _) = duplex::connect(&format!("ws://{addr}/private?token=s3cret"))
            .await
            .unwrap();

        let busy = raw_exchange(
            addr,
            request("/refuse?busy", &format!("{upgrade}{key}{v13}")).as_bytes(),
        )
        .await;
        assert_eq!(busy.status, 503, "{busy:?}");
        assert_eq!(busy.header("retry-after"), Some("3"));
    })
    .await
}

#[tokio::test]
async fn an_optional_extractor_serves_the_page_and_the_websocket_on_one_route() {
    bounded(async {
        let addr = server().await;
        let page = raw_exchange(
            addr,
            b"GET /both HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(page.status, 200);
        assert_eq!(page.body, PAGE);
        let (mut ws, _) = duplex::connect(&format!("ws://{addr}/both")).await.unwrap();
        ws.send(Message::text("both")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("both"));
        // Asking for a WebSocket without a key is still refused.
        let bad = raw_exchange(
            addr,
            b"GET /both HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
        assert_eq!(bad.status, 400, "{bad:?}");
    })
    .await
}
