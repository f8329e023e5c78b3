//! wss:// between the library's client and server, with certificates made at test time: a
//! private CA trusted explicitly, an untrusted certificate refused with a clear error, the
//! development opt-out accepting it, SNI and ALPN on the wire, and certificate file errors.

mod common;

use std::time::Duration;

use common::bounded;
use duplex::tls::{self, TlsError};
use duplex::{ClientBuilder, Error, Message};
use duplex_testkit::pki::TestPki;
use tokio::net::TcpListener;

/// What the server saw of the TLS connection.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
}

/// A TLS echo server for one connection, using duplex on both layers; returns the port and a
/// handle resolving to what it saw (or the error that ended it).
async fn tls_echo_server(pki: &TestPki) -> (u16, tokio::task::JoinHandle<Result<Seen, Error>>) {
    let acceptor = tls::acceptor_from_pem(pki.cert(), pki.key()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let tls = tls::handshake(&acceptor, tcp, Duration::from_secs(5)).await?;
        let (_, conn) = tls.get_ref();
        let seen = Seen {
            sni: conn.server_name().map(str::to_owned),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        };
        let mut ws = duplex::accept(tls).await?;
        while let Some(msg) = ws.recv().await {
            if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
                ws.send(msg).await?;
            }
        }
        Ok(seen)
    });
    (port, handle)
}

async fn echo_once(builder: ClientBuilder) -> Result<(), Error> {
    let (mut ws, _) = builder.connect().await?;
    assert!(ws.get_ref().is_tls());
    ws.send(Message::text("over TLS")).await?;
    assert_eq!(ws.recv().await.unwrap()?, Message::text("over TLS"));
    let big = Message::binary(vec![7u8; 300_000]);
    ws.send(big.clone()).await?;
    assert_eq!(ws.recv().await.unwrap()?, big);
    ws.close(None).await
}

#[tokio::test]
async fn wss_echo_with_a_private_ca_sends_sni_and_alpn() {
    bounded(async {
        let pki = TestPki::new(&["localhost", "127.0.0.1"]);
        let (port, server) = tls_echo_server(&pki).await;
        let builder = ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .unwrap()
            .no_proxy()
            .ca_file(pki.ca());
        echo_once(builder).await.unwrap();
        let seen = server.await.unwrap().unwrap();
        assert_eq!(seen.sni.as_deref(), Some("localhost"));
        assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    })
    .await
}

#[tokio::test]
async fn wss_to_an_ip_address_verifies_the_ip_and_sends_no_sni() {
    bounded(async {
        let pki = TestPki::new(&["127.0.0.1"]);
        let (port, server) = tls_echo_server(&pki).await;
        let builder = ClientBuilder::new(&format!("wss://127.0.0.1:{port}/"))
            .unwrap()
            .ca_file(pki.ca());
        echo_once(builder).await.unwrap();
        // RFC 6066 section 3: literal addresses are not sent as server names.
        assert_eq!(server.await.unwrap().unwrap().sni, None);
    })
    .await
}

#[tokio::test]
async fn untrusted_certificate_is_refused_with_a_clear_error() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let (port, server) = tls_echo_server(&pki).await;
        // The default roots (webpki) do not include the test CA.
        let err = ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::Tls(TlsError::UntrustedCertificate { .. })),
            "{err:?}"
        );
        assert!(
            text.contains("certificate of localhost is not trusted"),
            "{text}"
        );
        assert!(text.contains("UnknownIssuer"), "{text}");
        // The server's TLS handshake fails too (the client aborted it): no upgrade happened.
        assert!(matches!(server.await.unwrap(), Err(Error::Tls(_))));
    })
    .await
}

#[tokio::test]
async fn certificate_for_another_name_is_refused() {
    bounded(async {
        let pki = TestPki::new(&["example.test"]);
        let (port, _server) = tls_echo_server(&pki).await;
        let err = ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .unwrap()
            .ca_file(pki.ca())
            .connect()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not trusted") && text.contains("not valid for name"),
            "{text}"
        );
    })
    .await
}

#[tokio::test]
async fn insecure_opt_out_accepts_an_untrusted_certificate() {
    bounded(async {
        let pki = TestPki::new(&["example.test"]);
        let (port, server) = tls_echo_server(&pki).await;
        let builder = ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .unwrap()
            .danger_accept_invalid_certs(true);
        echo_once(builder).await.unwrap();
        server.await.unwrap().unwrap();
    })
    .await
}

#[tokio::test]
async fn only_the_given_ca_with_roots_none() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let (port, server) = tls_echo_server(&pki).await;
        let ca = tls::load_certs(pki.ca()).unwrap().remove(0);
        let builder = ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .unwrap()
            .tls_roots(tls::Roots::None)
            .add_root_certificate(ca);
        echo_once(builder).await.unwrap();
        server.await.unwrap().unwrap();
    })
    .await
}

#[tokio::test]
async fn split_halves_work_over_tls() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let (port, server) = tls_echo_server(&pki).await;
        let (ws, _) = ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .unwrap()
            .ca_file(pki.ca())
            .connect()
            .await
            .unwrap();
        let (mut reader, mut writer) = ws.split();
        let send = async {
            for i in 0..50 {
                writer.send(Message::text(format!("m{i}"))).await.unwrap();
            }
            writer
        };
        let recv = async {
            for i in 0..50 {
                assert_eq!(
                    reader.recv().await.unwrap().unwrap(),
                    Message::text(format!("m{i}"))
                );
            }
        };
        let (mut writer, ()) = tokio::join!(send, recv);
        writer.close(None).await.unwrap();
        while reader.recv().await.is_some() {}
        server.await.unwrap().unwrap();
    })
    .await
}

#[tokio::test]
async fn silent_client_is_cut_off_by_the_tls_handshake_timeout() {
    bounded(async {
        let pki = TestPki::new(&["localhost"]);
        let acceptor = tls::acceptor_from_pem(pki.cert(), pki.key()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let started = std::time::Instant::now();
        let err = tls::handshake(&acceptor, tcp, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout("TLS handshake")), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await
}

#[test]
fn certificate_file_errors_name_the_file() {
    let pki = TestPki::new(&["localhost"]);
    let missing = pki.dir().join("missing.pem");
    let err = tls::server_config_from_pem(&missing, pki.key()).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // A key file where the certificate should be, and the other way round.
    let err = tls::server_config_from_pem(pki.key(), pki.key()).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificates { .. }), "{err:?}");
    let err = tls::server_config_from_pem(pki.cert(), pki.cert()).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");

    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let err = tls::server_config_from_pem(&garbage, pki.key()).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");

    // And a CA file given to a client that does not exist fails the connection, naming it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(
            ClientBuilder::new("wss://127.0.0.1:9/")
                .unwrap()
                .ca_file(&missing)
                .connect_timeout(Duration::from_secs(2))
                .connect(),
        )
        .unwrap_err();
    // Port 9 (discard) is closed on loopback here: the connection fails first, or the CA file
    // does; either way it is a clear error, never a panic.
    assert!(
        matches!(err, Error::Io(_) | Error::Tls(TlsError::Read { .. })),
        "{err:?}"
    );
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_without_a_host_is_a_url_error() {
    let err = duplex::connect("wss:///nohost").await.unwrap_err();
    assert!(matches!(err, Error::Url(_)), "{err:?}");
}
