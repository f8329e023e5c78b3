//! WebSockets over HTTP/2 (RFC 8441) between the library's client and server: several on one
//! connection over TLS and over h2c, with echo traffic larger than the flow-control windows and
//! permessage-deflate; the fallback to HTTP/1.1; a stream reset by either side closing only its
//! WebSocket; a plain GET and a refusal on the same connection. Node's `http2` module as the
//! independent peer is in `http2_node.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::bounded;
use duplex::http2::{self, Client, H2Error, Settings};
use duplex::tls::{self, TlsAcceptor};
use duplex::{
    ClientBuilder, Config, DeflateConfig, Error, Handshake, MaybeTlsStream, Message, Rejection,
    WebSocket,
};
use duplex_testkit::pki::TestPki;
use http::{StatusCode, Version};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How a server-side WebSocket ended, by path.
type Ended = (String, Result<(), String>);

/// A test server: HTTP/2 (TLS with ALPN, or h2c by preface) and HTTP/1.1 on one port.
struct Server {
    port: u16,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// One entry per WebSocket that ended on the server.
    ended: mpsc::UnboundedReceiver<Ended>,
}

fn config() -> Config {
    Config::default().deflate(Some(DeflateConfig::default()))
}

async fn serve(tls: Option<TlsAcceptor>, settings: Settings) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let (report, ended) = mpsc::unbounded_channel();
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let _ = connection(tcp, tls, settings, report).await;
            });
        }
    });
    Server {
        port,
        connections,
        ended,
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    settings: Settings,
    report: mpsc::UnboundedSender<Ended>,
) -> duplex::Result<()> {
    let config = config();
    let (stream, h2) = match tls {
        Some(acceptor) => {
            let tls = tls::handshake(&acceptor, tcp, Duration::from_secs(5)).await?;
            let stream = MaybeTlsStream::ServerTls(Box::new(tls));
            let h2 = stream.alpn_protocol() == Some(http2::ALPN_H2);
            (stream, h2)
        }
        None => {
            let h2 = http2::peek_preface(&tcp, config.handshake_timeout).await?;
            (MaybeTlsStream::Plain(tcp), h2)
        }
    };
    if !h2 {
        let handshake = Handshake::read(stream, config).await?;
        let path = handshake.request().uri().path().to_owned();
        let ws = handshake.upgrade(decide).await?;
        echo(path, ws, report).await;
        return Ok(());
    }
    let mut conn = http2::accept_with_settings(stream, config, settings).await?;
    while let Some(request) = conn.next().await {
        let request = request?;
        let report = report.clone();
        tokio::spawn(async move {
            let path = request.request().uri().path().to_owned();
            assert_eq!(
                duplex::is_upgrade_request(request.request()),
                request.is_websocket()
            );
            if !request.is_websocket() {
                let body = format!("hello over {:?}\n", request.request().version());
                return request.respond(http::Response::new(body)).await;
            }
            let mut ws = request.upgrade(decide).await?;
            if path == "/reset-by-server" {
                // Wait for one message, then reset the stream from this side.
                let _ = ws.recv().await;
                if let MaybeTlsStream::H2(stream) = ws.get_mut() {
                    stream.reset(0x2);
                }
                let _ = report.send((path, Err("reset here".into())));
                return Ok(());
            }
            echo(path, ws, report).await;
            Ok(())
        });
    }
    Ok(())
}

/// The same decision for both HTTP versions: a subprotocol if offered, 403 on `/forbidden`.
fn decide(incoming: &mut duplex::Incoming<'_>) -> Result<(), Rejection> {
    if incoming.path() == "/forbidden" {
        return Err(Rejection::new(StatusCode::FORBIDDEN, "not this one"));
    }
    incoming.select_protocol(&["echo.v1"]);
    Ok(())
}

async fn echo(
    path: String,
    mut ws: WebSocket<MaybeTlsStream>,
    report: mpsc::UnboundedSender<Ended>,
) {
    let outcome = async {
        while let Some(msg) = ws.recv().await {
            let msg = msg?;
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await?;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    let _ = report.send((path, outcome.map_err(|e| e.to_string())));
}

fn pki_acceptor(pki: &TestPki, h2: bool) -> TlsAcceptor {
    let config = tls::server_config_from_pem(pki.cert(), pki.key()).unwrap();
    TlsAcceptor::from(if h2 { tls::offer_http2(config) } else { config })
}

fn builder(url: &str, pki: Option<&TestPki>) -> ClientBuilder {
    let b = ClientBuilder::new(url)
        .unwrap()
        .protocol("echo.v1")
        .config(config());
    match pki {
        Some(pki) => b.ca_file(pki.ca()),
        None => b,
    }
}

/// A large message: many times the default stream window (65,535 bytes) even compressed (the
/// bytes are pseudo-random), so that flow control has to release capacity as the other side
/// reads, in both directions.
fn large() -> Message {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..1_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Message::binary(bytes)
}

/// Opens `paths.len()` WebSockets on one client connection, echoes text and a large message on
/// all of them at once, asks for a page on the same connection, closes them.
async fn multiplex(client: &Client, paths: &[&str]) {
    let mut sockets = Vec::new();
    for path in paths {
        let (ws, response) = client.websocket(path).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2);
        assert!(!response.headers().contains_key("sec-websocket-accept"));
        assert_eq!(ws.protocol(), Some("echo.v1"));
        assert!(ws.deflate().is_some(), "permessage-deflate negotiated");
        assert!(ws.get_ref().is_http2());
        sockets.push(ws);
    }
    let big = large();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let big = big.clone();
            tokio::spawn(async move {
                let text = Message::text(format!("hello from stream {i}"));
                ws.send(text.clone()).await.unwrap();
                assert_eq!(ws.recv().await.unwrap().unwrap(), text);
                ws.send(big.clone()).await.unwrap();
                assert_eq!(ws.recv().await.unwrap().unwrap(), big);
                ws
            })
        })
        .collect();
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.unwrap());
    }
    // An ordinary request on the same connection, while the WebSockets are open.
    let mut get = http::Request::new(Bytes::new());
    *get.uri_mut() = http::Uri::from_static("/page");
    let page = client.request(get).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.body().as_ref(), b"hello over HTTP/2.0\n");
    for mut ws in sockets {
        ws.close(None).await.unwrap();
        assert!(ws.recv().await.is_none());
    }
}

async fn expect_clean_ends(server: &mut Server, n: usize) {
    for _ in 0..n {
        let (path, outcome) = server.ended.recv().await.unwrap();
        assert_eq!(outcome, Ok(()), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_websockets_share_one_tls_connection() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let mut server = serve(Some(pki_acceptor(&pki, true)), Settings::default()).await;
        let url = format!("wss://localhost:{}/", server.port);
        let client = Client::connect(builder(&url, Some(&pki))).await.unwrap();
        assert!(client.is_tls());
        assert!(client.supports_websockets());
        multiplex(&client, &["/a", "/b", "/c", "/d"]).await;
        expect_clean_ends(&mut server, 4).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_websockets_share_one_h2c_connection() {
    bounded(async {
        let mut server = serve(None, Settings::default()).await;
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let client = Client::connect(builder(&url, None)).await.unwrap();
        assert!(!client.is_tls());
        multiplex(&client, &["/a", "/b", "/c"]).await;
        expect_clean_ends(&mut server, 3).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn more_websockets_than_the_stream_limit_wait_for_a_slot() {
    bounded(async {
        let mut server = serve(None, Settings::default().max_concurrent_streams(2)).await;
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let client = Client::connect(builder(&url, None)).await.unwrap();
        let (mut a, _) = client.websocket("/a").await.unwrap();
        let (b, _) = client.websocket("/b").await.unwrap();
        let third = {
            let client = client.clone();
            tokio::spawn(async move { client.websocket("/c").await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !third.is_finished(),
            "a third stream waits while two are open"
        );
        a.close(None).await.unwrap();
        assert!(a.recv().await.is_none());
        let (mut c, _) = third.await.unwrap().unwrap();
        c.send(Message::text("third")).await.unwrap();
        assert_eq!(c.recv().await.unwrap().unwrap(), Message::text("third"));
        drop(b);
        c.close(None).await.unwrap();
        let _ = server.ended.recv().await;
    })
    .await;
}

#[tokio::test]
async fn connect_with_http2_uses_it_when_the_server_allows_it() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let mut server = serve(Some(pki_acceptor(&pki, true)), Settings::default()).await;
        let url = format!("wss://localhost:{}/echo", server.port);
        let (mut ws, response) = builder(&url, Some(&pki))
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert!(ws.get_ref().is_http2() && ws.get_ref().is_tls());
        ws.send(Message::text("over h2")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("over h2"));
        ws.close(None).await.unwrap();
        assert!(ws.recv().await.is_none());
        expect_clean_ends(&mut server, 1).await;

        // ws:// with prior knowledge.
        let mut server = serve(None, Settings::default()).await;
        let url = format!("ws://127.0.0.1:{}/echo", server.port);
        let (mut ws, response) = builder(&url, None).http2(true).connect().await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        assert!(ws.get_ref().is_http2() && !ws.get_ref().is_tls());
        ws.send(Message::text("over h2c")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("over h2c"));
        ws.close(None).await.unwrap();
        expect_clean_ends(&mut server, 1).await;
    })
    .await;
}

async fn echo_over_http11(url: &str, pki: Option<&TestPki>) {
    let (mut ws, response) = builder(url, pki).http2(true).connect().await.unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(!ws.get_ref().is_http2());
    assert!(ws.deflate().is_some());
    let big = large();
    ws.send(big.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), big);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn falls_back_to_http11_when_the_h2_server_does_not_allow_websockets() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let settings = Settings::default().enable_connect_protocol(false);
        let mut server = serve(Some(pki_acceptor(&pki, true)), settings).await;
        let url = format!("wss://localhost:{}/echo", server.port);
        let client = Client::connect(builder(&url, Some(&pki))).await.unwrap();
        assert!(!client.supports_websockets());
        assert!(matches!(
            client.websocket("/echo").await,
            Err(Error::Http2(H2Error::ExtendedConnectDisabled))
        ));
        drop(client);
        echo_over_http11(&url, Some(&pki)).await;
        expect_clean_ends(&mut server, 1).await;
        // The client's connection, the fallback's HTTP/2 attempt, the fallback's connection.
        assert_eq!(server.connections.load(Ordering::SeqCst), 3);

        // h2c: the same, over a second cleartext connection.
        let mut server = serve(None, settings).await;
        echo_over_http11(&format!("ws://127.0.0.1:{}/echo", server.port), None).await;
        expect_clean_ends(&mut server, 1).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test]
async fn falls_back_on_the_same_connection_when_tls_chooses_http11() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let mut server = serve(Some(pki_acceptor(&pki, false)), Settings::default()).await;
        let url = format!("wss://localhost:{}/echo", server.port);
        echo_over_http11(&url, Some(&pki)).await;
        expect_clean_ends(&mut server, 1).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        let err = Client::connect(builder(&url, Some(&pki)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Http2(H2Error::NotNegotiated)), "{err}");
    })
    .await;
}

#[tokio::test]
async fn h2c_falls_back_to_http11_against_an_http11_only_server() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut refused = 0;
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                // Not an HTTP/1.1 request: answered 400 and closed.
                match duplex::accept(tcp).await {
                    Err(_) => refused += 1,
                    Ok(mut ws) => {
                        while let Some(Ok(msg)) = ws.recv().await {
                            if msg.is_text() || msg.is_binary() {
                                ws.send(msg).await.unwrap();
                            }
                        }
                        return refused;
                    }
                }
            }
        });
        let url = format!("ws://127.0.0.1:{port}/echo");
        let (mut ws, response) = ClientBuilder::new(&url)
            .unwrap()
            .http2(true)
            .connect()
            .await
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_11);
        ws.send(Message::text("plain")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("plain"));
        ws.close(None).await.unwrap();
        assert_eq!(server.await.unwrap(), 1, "the preface was refused once");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_by_the_peer_closes_only_its_websocket() {
    bounded(async {
        let mut server = serve(None, Settings::default()).await;
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let client = Client::connect(builder(&url, None)).await.unwrap();
        let (mut a, _) = client.websocket("/a").await.unwrap();
        let (mut reset_by_client, _) = client.websocket("/reset-by-client").await.unwrap();
        let (mut reset_by_server, _) = client.websocket("/reset-by-server").await.unwrap();
        let (mut b, _) = client.websocket("/b").await.unwrap();

        // The client resets one stream: its server-side WebSocket fails, alone.
        reset_by_client.send(Message::text("before")).await.unwrap();
        assert_eq!(
            reset_by_client.recv().await.unwrap().unwrap(),
            Message::text("before")
        );
        match reset_by_client.get_mut() {
            MaybeTlsStream::H2(stream) => stream.reset(0x8),
            other => panic!("not an HTTP/2 stream: {other:?}"),
        }
        let (path, outcome) = server.ended.recv().await.unwrap();
        assert_eq!(path, "/reset-by-client");
        let why = outcome.unwrap_err();
        assert!(why.contains("reset") || why.contains("CANCEL"), "{why}");
        assert!(reset_by_client.send(Message::text("after")).await.is_err());

        // The server resets another: the client's WebSocket fails, alone.
        reset_by_server
            .send(Message::text("reset me"))
            .await
            .unwrap();
        let err = reset_by_server.recv().await.unwrap().unwrap_err();
        match &err {
            Error::Io(io) => assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset, "{io}"),
            other => panic!("expected a reset, got {other:?}"),
        }
        let (path, _) = server.ended.recv().await.unwrap();
        assert_eq!(path, "/reset-by-server");

        // The others go on, and new ones open on the same connection.
        for ws in [&mut a, &mut b] {
            ws.send(large()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), large());
        }
        let (mut c, _) = client.websocket("/c").await.unwrap();
        c.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            c.recv().await.unwrap().unwrap(),
            Message::text("still here")
        );
        for mut ws in [a, b, c] {
            ws.close(None).await.unwrap();
        }
        expect_clean_ends(&mut server, 3).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_refusal_is_the_same_status_over_http2_and_the_connection_goes_on() {
    bounded(async {
        let mut server = serve(None, Settings::default()).await;
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let client = Client::connect(builder(&url, None)).await.unwrap();
        let err = client.websocket("/forbidden").await.unwrap_err();
        assert_eq!(err.http_status(), Some(StatusCode::FORBIDDEN), "{err}");
        assert!(err.to_string().contains("403"), "{err}");
        if let Error::Handshake(duplex::proto::handshake::HandshakeError::Status { body, .. }) =
            &err
        {
            assert_eq!(body, "not this one");
        }
        let (mut ws, _) = client.websocket("/ok").await.unwrap();
        ws.send(Message::text("fine")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("fine"));
        ws.close(None).await.unwrap();
        expect_clean_ends(&mut server, 1).await;

        // Over HTTP/1.1 the same callback answers the same status.
        let url = format!("ws://127.0.0.1:{}/forbidden", server.port);
        let err = builder(&url, None).connect().await.unwrap_err();
        assert_eq!(err.http_status(), Some(StatusCode::FORBIDDEN));
    })
    .await;
}

#[tokio::test]
async fn a_slow_reader_stalls_only_its_own_stream() {
    bounded(async {
        let mut server = serve(None, Settings::default()).await;
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let client = Client::connect(builder(&url, None)).await.unwrap();
        let (mut slow, _) = client.websocket("/slow").await.unwrap();
        let (mut fast, _) = client.websocket("/fast").await.unwrap();
        // The server echoes a large message on /slow, which this side does not read yet: the
        // stream window fills and the echo waits; /fast is not held up.
        slow.send(large()).await.unwrap();
        for i in 0..20 {
            let msg = Message::text(format!("fast {i}"));
            fast.send(msg.clone()).await.unwrap();
            assert_eq!(fast.recv().await.unwrap().unwrap(), msg);
        }
        assert_eq!(slow.recv().await.unwrap().unwrap(), large());
        slow.close(None).await.unwrap();
        fast.close(None).await.unwrap();
        expect_clean_ends(&mut server, 2).await;
    })
    .await;
}

#[tokio::test]
async fn a_graceful_shutdown_refuses_new_streams_and_lets_open_ones_finish() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = http2::accept(tcp, Config::default()).await.unwrap();
            let request = conn.next().await.unwrap().unwrap();
            let mut ws = request.upgrade(|_| Ok(())).await.unwrap();
            conn.graceful_shutdown();
            let echo = tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.recv().await {
                    if msg.is_text() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
            // A request that got in before the GOAWAY is refused (dropping it resets its
            // stream); the connection ends once its last stream has.
            while let Some(request) = conn.next().await {
                drop(request);
            }
            echo.await.unwrap();
        });
        let url = format!("ws://127.0.0.1:{port}/");
        let client = Client::connect(builder(&url, None)).await.unwrap();
        let (mut ws, _) = client.websocket("/open").await.unwrap();
        ws.send(Message::text("before")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("before"));
        let refused = client.websocket("/new").await.unwrap_err();
        assert!(matches!(refused, Error::Http2(_)), "{refused}");
        ws.send(Message::text("after")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("after"));
        ws.close(None).await.unwrap();
        assert!(ws.recv().await.is_none());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_http2_connection_without_streams_is_shut_down_when_idle() {
    bounded(async {
        let settings = Settings::default().idle_timeout(Some(Duration::from_millis(100)));
        let mut server = serve(None, settings).await;
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let client = Client::connect(builder(&url, None)).await.unwrap();
        // A WebSocket keeps it busy however long it is quiet.
        let (mut ws, _) = client.websocket("/quiet").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        ws.send(Message::text("still open")).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::text("still open")
        );
        ws.close(None).await.unwrap();
        expect_clean_ends(&mut server, 1).await;
        // Without streams it is closed after one or two idle timeouts.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(client.websocket("/late").await.is_err());
    })
    .await;
}

#[test]
fn the_preface_is_told_from_http11() {
    assert_eq!(http2::is_preface(http2::PREFACE), Some(true));
    assert_eq!(
        http2::is_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"),
        Some(true)
    );
    assert_eq!(http2::is_preface(b"PRI"), None);
    assert_eq!(http2::is_preface(b"GET /chat HTTP/1.1\r\n"), Some(false));
    assert_eq!(http2::is_preface(b"P"), None);
    assert_eq!(http2::is_preface(b"POST"), Some(false));
}
