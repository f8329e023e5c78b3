//! The opening handshake over sockets: subprotocols, the `accept_with` callback, timeouts,
//! bytes that come with a head, and refusals reaching the wire and the caller. Which request
//! or response is refused, with which status, is decided by `proto` and tested there on bytes
//! (`crates/proto/tests/handshake.rs`).

// `accept_with` callbacks return `Result<(), Rejection>`, whose error is a whole HTTP response;
// clippy flags each such closure as a large `Err` variant.

mod common;

use std::time::{Duration, Instant};

use common::{accept_one, bounded, listen};
use duplex::proto::handshake::HandshakeError;
use duplex::{accept_with, Rejection};
use duplex::{ClientBuilder, Config, Error, Message};
use duplex_testkit::frame::{masked, unmasked, BINARY, FIN, TEXT};
use duplex_testkit::http::{
    header, request_head, switching_protocols, upgrade_request, RawResponse, UPGRADE_HEADERS,
};
use duplex_testkit::net::{raw_client, raw_exchange, read_frame, read_head};
use duplex_testkit::{accept_key, ACCEPT};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn subprotocol_is_negotiated() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let mut offered = Vec::new();
            let ws = accept_with(tcp, Config::default(), |incoming| {
                offered = incoming.protocols().to_vec();
                assert_eq!(incoming.select_protocol(&["b"]), Some("b"));
                Ok(())
            })
            .await
            .unwrap();
            assert_eq!(offered, ["a", "b"]);
            ws
        });
        let (mut client, response) = ClientBuilder::new(&format!("ws://{addr}/chat"))
            .unwrap()
            .protocol("a")
            .protocol("b")
            .connect()
            .await
            .unwrap();
        let mut server = server.await.unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()["sec-websocket-protocol"], "b");
        assert_eq!(client.protocol(), Some("b"));
        assert_eq!(server.protocol(), Some("b"));
        // And the connection works.
        client.send(Message::text("over b")).await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("over b")
        );
    })
    .await
}

#[tokio::test]
async fn no_common_subprotocol_means_none_on_both_sides() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            accept_with(tcp, Config::default(), |incoming| {
                assert_eq!(incoming.select_protocol(&["z"]), None);
                Ok(())
            })
            .await
            .unwrap()
        });
        let (client, response) = ClientBuilder::new(&format!("ws://{addr}/"))
            .unwrap()
            .protocol("a")
            .protocol("b")
            .connect()
            .await
            .unwrap();
        let server = server.await.unwrap();
        assert!(response.headers().get("sec-websocket-protocol").is_none());
        assert_eq!(client.protocol(), None);
        assert_eq!(server.protocol(), None);
    })
    .await
}

#[tokio::test]
async fn callback_rejection_reaches_the_client() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            accept_with(tcp, Config::default(), |incoming| {
                if incoming.query_param("token").is_none() {
                    return Err(Rejection::new(StatusCode::UNAUTHORIZED, "no token"));
                }
                Ok(())
            })
            .await
        });
        let err = duplex::connect(&format!("ws://{addr}/private"))
            .await
            .expect_err("the upgrade must be refused");
        match err {
            Error::Handshake(HandshakeError::Status { status, body }) => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert_eq!(body, "no token");
            }
            other => panic!("expected a 401 status error, got {other:?}"),
        }
        match server.await.unwrap() {
            Err(Error::Rejected(status)) => assert_eq!(status, StatusCode::UNAUTHORIZED),
            other => panic!("expected Rejected(401), got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn callback_sees_path_query_and_headers() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let mut seen = None;
            let ws = accept_with(tcp, Config::default(), |incoming| {
                seen = Some((
                    incoming.path().to_owned(),
                    incoming.query_param("token").map(|t| t.into_owned()),
                    incoming.query_param("room").map(|t| t.into_owned()),
                    incoming.query_param("missing").map(|t| t.into_owned()),
                    incoming.header("x-client").map(str::to_owned),
                ));
                incoming.add_header(
                    http::header::SET_COOKIE,
                    http::HeaderValue::from_static("session=1"),
                );
                Ok(())
            })
            .await
            .unwrap();
            (ws, seen.unwrap())
        });
        let (_client, response) = ClientBuilder::new(&format!(
            "ws://{addr}/rooms/lobby?token=s3cr%20t&room=a%2Bb"
        ))
        .unwrap()
        .header(
            http::HeaderName::from_static("x-client"),
            http::HeaderValue::from_static("tests"),
        )
        .connect()
        .await
        .unwrap();
        let (_server, (path, token, room, missing, header)) = server.await.unwrap();
        assert_eq!(path, "/rooms/lobby");
        assert_eq!(token.as_deref(), Some("s3cr t"), "percent-decoded");
        assert_eq!(room.as_deref(), Some("a+b"));
        assert_eq!(missing, None);
        assert_eq!(header.as_deref(), Some("tests"));
        assert_eq!(response.headers()["set-cookie"], "session=1");
    })
    .await
}

/// Sends a raw request to a fresh `accept_with` server and returns the response and what
/// `accept_with` returned.
async fn raw_request(request: String) -> (RawResponse, Error) {
    let (addr, server) =
        accept_one(|tcp| async move { accept_with(tcp, Config::default(), |_| Ok(())).await });
    let response = raw_exchange(addr, request.as_bytes()).await;
    let err = server
        .await
        .unwrap()
        .expect_err("the server must refuse the request");
    (response, err)
}

/// Which request is refused with which status is proto's decision (`proto/tests/handshake.rs`);
/// here, that both kinds of refusal, a head refused while it is read and a request refused once
/// read, reach the wire and the caller.
#[tokio::test]
async fn refusals_are_answered_on_the_wire_and_returned() {
    bounded(async {
        let big = "x".repeat(10 * 1024);
        let mut headers = UPGRADE_HEADERS.to_vec();
        headers.push(("X-Big", &big));
        let (resp, err) = raw_request(request_head("GET", "/ws", &headers)).await;
        assert_eq!(resp.status, 431);
        assert!(
            matches!(err, Error::Handshake(HandshakeError::HeadTooLarge { .. })),
            "{err:?}"
        );

        let mut headers = UPGRADE_HEADERS.to_vec();
        headers[3] = ("Sec-WebSocket-Version", "8");
        let (resp, err) = raw_request(request_head("GET", "/ws", &headers)).await;
        assert_eq!(resp.status, 426);
        assert_eq!(resp.header("sec-websocket-version"), Some("13"));
        assert!(
            matches!(err, Error::Handshake(HandshakeError::Version)),
            "{err:?}"
        );
    })
    .await
}

#[tokio::test]
async fn valid_raw_request_is_upgraded() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let mut ws = duplex::accept(tcp).await.unwrap();
            ws.send(Message::text("hi")).await.unwrap();
        });
        let mut tcp = raw_client(addr, "/").await;
        let frame = read_frame(&mut tcp).await;
        assert!(frame.fin);
        assert_eq!(frame.opcode, 1);
        assert_eq!(frame.payload, b"hi");
        server.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn trickled_handshake_is_cut_off_by_handshake_timeout() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let config = Config::default().handshake_timeout(Duration::from_millis(300));
            let start = Instant::now();
            let result = accept_with(tcp, config, |_| Ok(())).await;
            (result, start.elapsed())
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        // One byte every 50 ms: the whole request would take several seconds.
        let request = upgrade_request("/");
        let trickle = async {
            for b in request.as_bytes() {
                if tcp.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (result, elapsed) = tokio::select! {
            joined = server => joined.unwrap(),
            () = trickle => panic!("the whole request was sent before the server gave up"),
        };
        assert!(
            matches!(result, Err(Error::Timeout(_))),
            "expected a timeout, got {result:?}"
        );
        assert!(result.unwrap_err().is_timeout());
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
            "gave up after {elapsed:?}"
        );
        // The server dropped the connection: the client sees it end.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest))
            .await
            .expect("the server must close the connection");
    })
    .await
}

#[tokio::test]
async fn plain_http_on_the_same_port() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let handshake = duplex::Handshake::read(tcp, Config::default())
                .await
                .unwrap();
            assert_eq!(handshake.request().uri().path(), "/healthz");
            handshake
                .respond(http::Response::new("ok\n".to_string()))
                .await
                .unwrap();
        });
        let resp = raw_exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, "ok\n");
        server.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_plain_route_reads_the_body_behind_the_head() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let mut handshake = duplex::Handshake::read(tcp, Config::default())
                .await
                .unwrap();
            let body = handshake.read_body(11).await.unwrap();
            handshake
                .respond(http::Response::new(format!("got {}", body.len())))
                .await
                .unwrap();
            body
        });
        // Head and the body's start in one write, its end in another.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head = request_head("POST", "/api", &[("Content-Length", "11")]);
        tcp.write_all(format!("{head}hello").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        tcp.write_all(b" world").await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        let resp = duplex_testkit::http::parse_response(&raw);
        assert_eq!(resp.body, "got 11");
        assert_eq!(&server.await.unwrap()[..], b"hello world");
    })
    .await
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let mut handshake = duplex::Handshake::read(tcp, Config::default())
                .await
                .unwrap();
            handshake.read_body(100).await.map(|_| ())
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head = request_head("POST", "/api", &[("Content-Length", "100")]);
        tcp.write_all(format!("{head}short").as_bytes())
            .await
            .unwrap();
        tcp.shutdown().await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(Error::Handshake(_))));
    })
    .await
}

#[tokio::test]
async fn frames_sent_right_behind_the_request_are_not_lost() {
    bounded(async {
        let (addr, server) = accept_one(|tcp| async move {
            let mut ws = duplex::accept(tcp).await.unwrap();
            let first = ws.recv().await.unwrap().unwrap();
            let second = ws.recv().await.unwrap().unwrap();
            (first, second)
        });
        // Request and two frames in a single write: the server reads them together.
        let mut bytes = upgrade_request("/").into_bytes();
        bytes.extend(masked(FIN | TEXT, b"early"));
        bytes.extend(masked(FIN | BINARY, &[1, 2, 3]));
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let (first, second) = server.await.unwrap();
        assert_eq!(first, Message::text("early"));
        assert_eq!(second, Message::binary(vec![1, 2, 3]));
    })
    .await
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_an_io_error() {
    bounded(async {
        let (listener, url) = listen().await;
        drop(listener);
        let err = duplex::connect(&format!("{url}/")).await.unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
    })
    .await
}

/// Without the `tls` feature, `wss://` is refused up front with a message naming the feature.
/// (The tests enable every feature through a dev-dependency; this one is for builds that
/// remove it.)
#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn wss_is_refused_without_tls() {
    bounded(async {
        let err = duplex::connect("wss://127.0.0.1:1/").await.unwrap_err();
        assert!(matches!(err, Error::Url(_)), "{err:?}");
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    })
    .await
}

/// With TLS, `wss://` goes as far as the network allows: here, a closed port.
#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_to_a_closed_port_is_an_io_error() {
    bounded(async {
        let err = duplex::connect("wss://127.0.0.1:1/").await.unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
    })
    .await
}

/// A hand-written server that reads one request head and answers with `response(key)`.
fn raw_server(
    response: impl FnOnce(&str) -> Vec<u8> + Send + 'static,
) -> (String, tokio::task::JoinHandle<TcpStream>) {
    let (addr, task) = accept_one(|mut tcp| async move {
        let head = read_head(&mut tcp).await;
        let key = header(&head, "sec-websocket-key").expect("no Sec-WebSocket-Key");
        tcp.write_all(&response(key)).await.unwrap();
        tcp
    });
    (format!("ws://{addr}"), task)
}

#[tokio::test]
/// Which response a client refuses is proto's decision (`proto/tests/handshake.rs`); here, that
/// a refusal reaches the caller.
async fn client_refuses_a_wrong_accept_key() {
    bounded(async {
        let (url, server) = raw_server(|_| switching_protocols(ACCEPT, "").into_bytes());
        let err = duplex::connect(&format!("{url}/")).await.unwrap_err();
        assert!(
            matches!(err, Error::Handshake(HandshakeError::Accept)),
            "{err:?}"
        );
        server.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn client_handshake_times_out_on_a_silent_server() {
    bounded(async {
        let (addr, server) = accept_one(|mut tcp| async move {
            let mut sink = Vec::new();
            let _ = tcp.read_to_end(&mut sink).await;
        });
        let started = Instant::now();
        let err = ClientBuilder::new(&format!("ws://{addr}/"))
            .unwrap()
            .config(Config::default().handshake_timeout(Duration::from_millis(300)))
            .connect()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // Dropping the client's socket ends the server task.
        server.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn frames_sent_right_behind_the_101_are_not_lost() {
    bounded(async {
        let (url, server) = raw_server(|key| {
            // The 101 and two frames in a single write: the client reads them together.
            let mut out = switching_protocols(&accept_key(key), "").into_bytes();
            out.extend(unmasked(FIN | TEXT, b"first"));
            out.extend(unmasked(FIN | BINARY, &[0xff; 300]));
            out
        });
        let (mut client, _) = duplex::connect(&format!("{url}/")).await.unwrap();
        let _tcp = server.await.unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::text("first")
        );
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::binary(vec![0xff; 300])
        );
    })
    .await
}
