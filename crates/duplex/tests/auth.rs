//! Authentication and admission before the upgrade with `duplex::auth` in an `accept_with`
//! callback: 401 without or with wrong credentials (header, query string or cookie), 403 for a
//! foreign `Origin`, 503 at capacity, each with a one-line reason and nothing upgraded.

// `accept_with` callbacks return `Result<(), Rejection>`, whose error is a whole HTTP response;
// clippy flags each such closure as a large `Err` variant.
#![allow(clippy::result_large_err)]

mod common;

use common::bounded;
use duplex::auth::{self, ConnectionLimit, OriginPolicy};
use duplex::{Config, Error};
use duplex_testkit::net::raw_exchange;
use duplex_testkit::KEY;
use tokio::net::TcpListener;

/// A server whose callback admits connections as a chat server would: known origin, valid
/// token (header or `?token=`) or session cookie, and at most one connection at a time.
/// Returns its address; each connection's outcome goes to the channel.
async fn guarded_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<(), Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let origins = OriginPolicy::new(["https://chat.example", "https://*.chat.example"]);
    let limit = ConnectionLimit::new(1);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut permit = None;
            let result = duplex::accept_with(tcp, Config::default(), |incoming| {
                let req = incoming.request();
                origins.check(req)?;
                let by_cookie = auth::cookie(req, "session") == Some("valid-session");
                if !by_cookie {
                    auth::require_token(req, "token", |t| t == "s3cret")?;
                }
                permit = Some(limit.try_acquire()?);
                Ok(())
            })
            .await;
            // Hold accepted connections (and their permits) open until the test ends.
            let outcome = result.map(|ws| {
                tokio::spawn(async move {
                    let _permit = permit;
                    let mut ws = ws;
                    while let Some(Ok(_)) = ws.recv().await {}
                });
            });
            let _ = tx.send(outcome);
        }
    });
    (addr, rx)
}

fn request(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn each_refusal_has_its_status_and_reason() {
    bounded(async {
        let (addr, mut outcomes) = guarded_server().await;
        let origin = "Origin: https://chat.example\r\n";

        let r = raw_exchange(addr, &request(origin)).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(r.body.trim(), "missing credentials");
        assert!(matches!(outcomes.recv().await.unwrap(), Err(Error::Rejected(s)) if s == 401));

        let r = raw_exchange(
            addr,
            &request(&format!("{origin}Authorization: Bearer wrong\r\n")),
        )
        .await;
        assert_eq!((r.status, r.body.trim()), (401, "invalid credentials"));
        outcomes.recv().await.unwrap().unwrap_err();

        let r = raw_exchange(
            addr,
            &request("Origin: https://evil.example\r\nAuthorization: Bearer s3cret\r\n"),
        )
        .await;
        assert_eq!((r.status, r.body.trim()), (403, "origin not allowed"));
        outcomes.recv().await.unwrap().unwrap_err();
    })
    .await
}

#[tokio::test]
async fn credentials_from_header_query_or_cookie_and_a_capacity_limit() {
    bounded(async {
        let (addr, mut outcomes) = guarded_server().await;

        // Token in the query string, from a subdomain origin: accepted, and it takes the only
        // place.
        let (_first, _) = duplex::ClientBuilder::new(&format!("ws://{addr}/chat?token=s3cret"))
            .unwrap()
            .header(
                http::header::ORIGIN,
                "https://eu.chat.example".parse().unwrap(),
            )
            .connect()
            .await
            .unwrap();
        outcomes.recv().await.unwrap().unwrap();

        // Valid cookie, but the server is full: 503 with Retry-After.
        let r = raw_exchange(
            addr,
            &request("Cookie: theme=dark; session=valid-session\r\n"),
        )
        .await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.body.trim(), "too many connections");
        outcomes.recv().await.unwrap().unwrap_err();

        // Through the library client, the status is in the error.
        let err = duplex::ClientBuilder::new(&format!("ws://{addr}/chat"))
            .unwrap()
            .header(
                http::header::AUTHORIZATION,
                "Bearer s3cret".parse().unwrap(),
            )
            .connect()
            .await
            .unwrap_err();
        assert_eq!(
            err.http_status(),
            Some(http::StatusCode::SERVICE_UNAVAILABLE)
        );
    })
    .await
}
