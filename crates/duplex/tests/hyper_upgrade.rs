//! Upgrades inside hyper 1.x and axum servers (`duplex::hyper`): a page and a WebSocket route
//! on one port, subprotocol and `Origin` checks in the callback, and the statuses of refused
//! upgrades.

mod common;

use std::convert::Infallible;

use common::bounded;
use duplex::{ClientBuilder, Config, Message};
use duplex_testkit::net::raw_exchange;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn echo(mut ws: duplex::hyper::HyperWebSocket) -> duplex::Result<()> {
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            ws.send(msg).await?;
        }
    }
    Ok(())
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<String>, Infallible> {
    if req.uri().path() != "/ws" || !duplex::is_upgrade_request(&req) {
        return Ok(Response::new("a page\n".into()));
    }
    let upgrade = duplex::hyper::upgrade_with(&mut req, Config::default(), |incoming| {
        duplex::auth::check_origin(incoming.request(), &["http://good.example"])?;
        incoming.select_protocol(&["chat.v2", "chat.v1"]);
        Ok(())
    });
    Ok(match upgrade {
        Ok((response, pending)) => {
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            tokio::spawn(async move { echo(pending.await?).await });
            response
        }
        Err(rejection) => rejection.into_response(),
    })
}

/// A hyper HTTP/1 server with upgrades enabled; returns its address.
async fn hyper_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(handle))
                    .with_upgrades(),
            );
        }
    });
    addr
}

#[tokio::test]
async fn hyper_serves_a_page_and_upgrades_on_the_same_port() {
    bounded(async {
        let addr = hyper_server().await;
        let page = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(page.status, 200);
        assert_eq!(page.body, "a page\n");

        let (mut ws, response) = ClientBuilder::new(&format!("ws://{addr}/ws"))
            .unwrap()
            .protocol("chat.v1")
            .header(http::header::ORIGIN, "http://good.example".parse().unwrap())
            .connect()
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(ws.protocol(), Some("chat.v1"));
        for i in 0..20 {
            let m = Message::binary(vec![i as u8; i * 1000]);
            ws.send(m.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), m);
        }
        ws.close(None).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn hyper_refusals_have_the_expected_statuses() {
    bounded(async {
        let addr = hyper_server().await;
        let request = |method: &str, extra: &str| {
            format!(
                "{method} /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 {extra}Connection: close\r\n\r\n"
            )
        };
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let v13 = "Sec-WebSocket-Version: 13\r\n";

        let post = raw_exchange(addr, request("POST", &format!("{key}{v13}")).as_bytes()).await;
        assert_eq!(post.status, 405, "{post:?}");

        let no_key = raw_exchange(addr, request("GET", v13).as_bytes()).await;
        assert_eq!(no_key.status, 400, "{no_key:?}");
        assert!(!no_key.body.is_empty());

        let v8 = raw_exchange(
            addr,
            request("GET", &format!("{key}Sec-WebSocket-Version: 8\r\n")).as_bytes(),
        )
        .await;
        assert_eq!(v8.status, 426, "{v8:?}");
        assert_eq!(v8.header("sec-websocket-version"), Some("13"));

        let foreign = raw_exchange(
            addr,
            request("GET", &format!("{key}{v13}Origin: http://evil.example\r\n")).as_bytes(),
        )
        .await;
        assert_eq!(foreign.status, 403, "{foreign:?}");
        assert_eq!(foreign.body.trim(), "origin not allowed");

        // And the library client reports the status.
        let err = ClientBuilder::new(&format!("ws://{addr}/ws"))
            .unwrap()
            .header(http::header::ORIGIN, "http://evil.example".parse().unwrap())
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.http_status(), Some(StatusCode::FORBIDDEN), "{err:?}");
    })
    .await
}

#[tokio::test]
async fn a_request_hyper_cannot_upgrade_is_refused_not_left_hanging() {
    // No `OnUpgrade` extension: a request built by hand, as a non-hyper server would have it.
    let mut req = Request::get("/ws")
        .header("host", "x")
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-key", duplex_testkit::KEY)
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let err = duplex::hyper::upgrade(&mut req, Config::default()).unwrap_err();
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn axum_route_upgrades_through_duplex() {
    use axum::body::Body;
    use axum::routing::get;

    bounded(async {
        async fn ws_route(mut req: axum::extract::Request) -> axum::response::Response {
            match duplex::hyper::upgrade(&mut req, Config::default()) {
                Ok((response, pending)) => {
                    tokio::spawn(async move { echo(pending.await?).await });
                    response.map(Body::from)
                }
                Err(rejection) => rejection.into_response().map(Body::from),
            }
        }
        let app = axum::Router::new()
            .route("/", get(|| async { "the page" }))
            .route("/ws", get(ws_route));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let page = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!((page.status, page.body.as_str()), (200, "the page"));
        let (mut ws, _) = duplex::connect(&format!("ws://{addr}/ws")).await.unwrap();
        ws.send(Message::text("via axum")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("via axum"));
        ws.close(None).await.unwrap();
    })
    .await
}
