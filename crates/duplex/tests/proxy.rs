//! Client connections through proxies written here, on loopback: an HTTP CONNECT proxy with
//! Basic credentials and a SOCKS5 proxy with and without username/password, for `ws://` and
//! for `wss://` (whose TLS runs end to end through the tunnel).

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine;
use common::bounded;
use duplex::proxy::ProxyError;
use duplex::{ClientBuilder, Error, Message};
use duplex_testkit::pki::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A duplex echo server accepting `n` connections; returns its address.
async fn echo_server(n: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..n {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut ws = duplex::accept(tcp).await?;
                while let Some(msg) = ws.recv().await {
                    if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
                        ws.send(msg).await?;
                    }
                }
                Ok::<_, Error>(())
            });
        }
    });
    addr
}

/// Connects to `url` through `proxy`, which must fail; returns the error.
async fn connect_err(url: &str, proxy: &str) -> Error {
    ClientBuilder::new(url)
        .unwrap()
        .proxy(proxy)
        .connect()
        .await
        .expect_err("the connection must fail")
}

/// What a test proxy saw.
#[derive(Debug, Default, Clone)]
struct Log {
    /// The CONNECT request head, or the SOCKS destination as "host:port".
    requests: Vec<String>,
    /// The decoded Basic credentials, or the SOCKS username/password.
    credentials: Vec<(String, String)>,
    /// Every byte relayed from the client to the destination.
    relayed: Vec<u8>,
}

type Shared = Arc<Mutex<Log>>;

/// Relays both ways, recording what the client sent.
async fn relay(client: TcpStream, target: TcpStream, log: Shared) {
    let (mut cr, mut cw) = client.into_split();
    let (mut tr, mut tw) = target.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            log.lock().unwrap().relayed.extend_from_slice(&buf[..n]);
            if tw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = tw.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut tr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// An HTTP proxy answering CONNECT, requiring `creds` if given.
async fn http_proxy(creds: Option<(&'static str, &'static str)>) -> (u16, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Shared::default();
    let shared = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let log = shared.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(client.read_u8().await.unwrap());
                }
                let head = String::from_utf8(head).unwrap();
                log.lock().unwrap().requests.push(head.clone());
                let given = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Proxy-Authorization: Basic "))
                    .map(|b64| {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(b64.trim())
                            .unwrap();
                        let raw = String::from_utf8(raw).unwrap();
                        let (u, p) = raw.split_once(':').unwrap();
                        (u.to_owned(), p.to_owned())
                    });
                if let Some(given) = &given {
                    log.lock().unwrap().credentials.push(given.clone());
                }
                if let Some((user, pass)) = creds {
                    if given != Some((user.into(), pass.into())) {
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                                  Proxy-Authenticate: Basic realm=\"test\"\r\n\
                                  Content-Length: 0\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                }
                let target = head.split_whitespace().nth(1).unwrap().to_owned();
                let Ok(upstream) = TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                relay(client, upstream, log).await;
            });
        }
    });
    (port, log)
}

/// A SOCKS5 proxy (RFC 1928), requiring username/password (RFC 1929) if `creds` is given.
async fn socks5_proxy(creds: Option<(&'static str, &'static str)>) -> (u16, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Shared::default();
    let shared = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else {
                return;
            };
            let log = shared.clone();
            tokio::spawn(async move {
                assert_eq!(c.read_u8().await.unwrap(), 5);
                let n = c.read_u8().await.unwrap() as usize;
                let mut methods = vec![0; n];
                c.read_exact(&mut methods).await.unwrap();
                let want = if creds.is_some() { 2 } else { 0 };
                if !methods.contains(&want) {
                    c.write_all(&[5, 0xff]).await.unwrap();
                    return;
                }
                c.write_all(&[5, want]).await.unwrap();
                if let Some((user, pass)) = creds {
                    assert_eq!(c.read_u8().await.unwrap(), 1);
                    let mut u = vec![0; c.read_u8().await.unwrap() as usize];
                    c.read_exact(&mut u).await.unwrap();
                    let mut p = vec![0; c.read_u8().await.unwrap() as usize];
                    c.read_exact(&mut p).await.unwrap();
                    let (u, p) = (String::from_utf8(u).unwrap(), String::from_utf8(p).unwrap());
                    let ok = u == user && p == pass;
                    log.lock().unwrap().credentials.push((u, p));
                    c.write_all(&[1, if ok { 0 } else { 1 }]).await.unwrap();
                    if !ok {
                        return;
                    }
                }
                let mut req = [0u8; 4];
                c.read_exact(&mut req).await.unwrap();
                assert_eq!(&req[..3], &[5, 1, 0]);
                let host = match req[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        c.read_exact(&mut ip).await.unwrap();
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => {
                        let mut name = vec![0; c.read_u8().await.unwrap() as usize];
                        c.read_exact(&mut name).await.unwrap();
                        String::from_utf8(name).unwrap()
                    }
                    4 => {
                        let mut ip = [0u8; 16];
                        c.read_exact(&mut ip).await.unwrap();
                        format!("[{}]", std::net::Ipv6Addr::from(ip))
                    }
                    other => panic!("address type {other}"),
                };
                let port = c.read_u16().await.unwrap();
                let target = format!("{host}:{port}");
                log.lock().unwrap().requests.push(target.clone());
                // "localhost" may resolve to ::1 first, where nothing listens: use IPv4.
                let dial = target.replace("localhost", "127.0.0.1");
                let Ok(upstream) = TcpStream::connect(&dial).await else {
                    c.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
                    return;
                };
                c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])
                    .await
                    .unwrap();
                relay(c, upstream, log).await;
            });
        }
    });
    (port, log)
}

async fn echo_through(builder: ClientBuilder) -> Result<(), Error> {
    let (mut ws, _) = builder.connect().await?;
    for text in ["through", "the", "proxy"] {
        ws.send(Message::text(text)).await?;
        assert_eq!(ws.recv().await.unwrap()?, Message::text(text));
    }
    ws.close(None).await
}

#[tokio::test]
async fn http_connect_with_basic_credentials() {
    bounded(async {
        let target = echo_server(1).await;
        let (proxy_port, log) = http_proxy(Some(("alice", "p@ss:word"))).await;
        // Reserved characters in the password are percent-encoded in the URL.
        let builder = ClientBuilder::new(&format!("ws://{target}/chat"))
            .unwrap()
            .proxy(&format!(
                "http://alice:p%40ss%3Aword@127.0.0.1:{proxy_port}"
            ));
        echo_through(builder).await.unwrap();
        let log = log.lock().unwrap().clone();
        assert!(
            log.requests[0]
                .starts_with(&format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n")),
            "{:?}",
            log.requests[0]
        );
        assert_eq!(log.credentials, [("alice".into(), "p@ss:word".into())]);
        // The WebSocket handshake went through the tunnel.
        let relayed = String::from_utf8_lossy(&log.relayed);
        assert!(relayed.starts_with("GET /chat HTTP/1.1\r\n"), "{relayed}");
    })
    .await
}

#[tokio::test]
async fn http_proxy_refusal_reports_its_status() {
    bounded(async {
        let target = echo_server(1).await;
        let (proxy_port, _log) = http_proxy(Some(("alice", "right"))).await;
        let err = connect_err(
            &format!("ws://{target}/"),
            &format!("http://alice:wrong@127.0.0.1:{proxy_port}"),
        )
        .await;
        assert!(
            matches!(err, Error::Proxy(ProxyError::Refused { .. })),
            "{err:?}"
        );
        assert_eq!(
            err.http_status(),
            Some(http::StatusCode::PROXY_AUTHENTICATION_REQUIRED)
        );
        assert!(err.to_string().contains("407"), "{err}");
        assert!(!err.to_string().contains("wrong"), "password leaked: {err}");
    })
    .await
}

#[tokio::test]
async fn wss_through_an_http_proxy_is_encrypted_end_to_end() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let acceptor = duplex::tls::acceptor_from_pem(pki.cert(), pki.key()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = duplex::tls::handshake(&acceptor, tcp, std::time::Duration::from_secs(5))
                .await
                .unwrap();
            let mut ws = duplex::accept(tls).await.unwrap();
            while let Some(Ok(msg)) = ws.recv().await {
                if msg.is_text() {
                    ws.send(msg).await.unwrap();
                }
            }
        });
        let (proxy_port, log) = http_proxy(None).await;
        let builder = ClientBuilder::new(&format!("wss://localhost:{port}/secret-path"))
            .unwrap()
            .ca_file(pki.ca())
            .proxy(&format!("127.0.0.1:{proxy_port}"));
        echo_through(builder).await.unwrap();
        let log = log.lock().unwrap().clone();
        assert!(log.requests[0].starts_with(&format!("CONNECT localhost:{port} HTTP/1.1")));
        // The proxy saw a TLS handshake record, and never the WebSocket handshake in clear.
        assert_eq!(log.relayed[0], 0x16, "not a TLS handshake record");
        let relayed = String::from_utf8_lossy(&log.relayed);
        assert!(!relayed.contains("secret-path") && !relayed.contains("Upgrade"));
    })
    .await
}

#[tokio::test]
async fn socks5h_without_credentials_lets_the_proxy_resolve_the_name() {
    bounded(async {
        let target = echo_server(1).await;
        let (proxy_port, log) = socks5_proxy(None).await;
        let builder = ClientBuilder::new(&format!("ws://localhost:{}/", target.port()))
            .unwrap()
            .proxy(&format!("socks5h://127.0.0.1:{proxy_port}"));
        echo_through(builder).await.unwrap();
        assert_eq!(
            log.lock().unwrap().requests,
            [format!("localhost:{}", target.port())]
        );
    })
    .await
}

#[tokio::test]
async fn socks5_with_credentials_sends_an_address() {
    bounded(async {
        let target = echo_server(1).await;
        let (proxy_port, log) = socks5_proxy(Some(("bob", "hunter2"))).await;
        let builder = ClientBuilder::new(&format!("ws://{target}/"))
            .unwrap()
            .proxy(&format!("socks5://bob:hunter2@127.0.0.1:{proxy_port}"));
        echo_through(builder).await.unwrap();
        let log = log.lock().unwrap().clone();
        assert_eq!(log.requests, [target.to_string()]);
        assert_eq!(log.credentials, [("bob".into(), "hunter2".into())]);
    })
    .await
}

#[tokio::test]
async fn socks5_refusals_are_clear_errors() {
    bounded(async {
        let target = echo_server(0).await;
        let (proxy_port, _log) = socks5_proxy(Some(("bob", "hunter2"))).await;
        // Wrong password.
        let err = connect_err(
            &format!("ws://{target}/"),
            &format!("socks5://bob:guess@127.0.0.1:{proxy_port}"),
        )
        .await;
        assert!(matches!(err, Error::Proxy(ProxyError::Socks(_))), "{err:?}");
        assert!(
            err.to_string().contains("wrong user name or password"),
            "{err}"
        );
        // No credentials where the proxy requires them.
        let err = connect_err(
            &format!("ws://{target}/"),
            &format!("socks5://127.0.0.1:{proxy_port}"),
        )
        .await;
        assert!(
            err.to_string()
                .contains("no acceptable authentication method"),
            "{err}"
        );
        // A destination the proxy cannot reach (nothing listens on port 1).
        let (open_port, _log) = socks5_proxy(None).await;
        let err = connect_err(
            "ws://127.0.0.1:1/",
            &format!("socks5://127.0.0.1:{open_port}"),
        )
        .await;
        assert!(err.to_string().contains("connection refused"), "{err}");
    })
    .await
}

#[tokio::test]
async fn an_invalid_proxy_url_fails_the_connection_clearly() {
    bounded(async {
        let err = connect_err("ws://127.0.0.1:1/", "ftp://user:topsecret@proxy").await;
        assert!(
            matches!(err, Error::Proxy(ProxyError::Url { .. })),
            "{err:?}"
        );
        assert!(!err.to_string().contains("topsecret"), "{err}");
    })
    .await
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_proxy_error() {
    bounded(async {
        let err = connect_err("ws://127.0.0.1:2/", "http://127.0.0.1:1").await;
        assert!(matches!(err, Error::Proxy(ProxyError::Io(_))), "{err:?}");
    })
    .await
}
