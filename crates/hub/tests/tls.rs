//! The hub over TLS: `wss://` chat and echo with a certificate made at test time.

mod common;

use common::{TestHub, WAIT};
use duplex::{ClientBuilder, Message};
use duplex_testkit::pki::TestPki;
use tokio::time::timeout;

#[tokio::test]
async fn echo_and_chat_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["localhost"]);
    let tls = duplex::tls::server_config_from_pem(pki.cert(), pki.key()).unwrap();
    let hub = TestHub::start(TestHub::config(&dir.path().join("data")).tls(tls)).await;
    let port = hub.addr.port();

    let client = |path: &str| {
        ClientBuilder::new(&format!("wss://localhost:{port}{path}"))
            .unwrap()
            .no_proxy()
            .ca_file(pki.ca())
    };
    timeout(WAIT, async {
        let (mut echo, _) = client("/echo").connect().await.unwrap();
        assert!(echo.get_ref().is_tls());
        echo.send(Message::text("secret")).await.unwrap();
        assert_eq!(echo.recv().await.unwrap().unwrap(), Message::text("secret"));

        let (mut alice, _) = client("/rooms/tls?name=alice").connect().await.unwrap();
        let (mut bob, _) = client("/rooms/tls?name=bob").connect().await.unwrap();
        // Bob is in the room once his join has been processed; a message from Alice after
        // that reaches him.
        bob.send(Message::text("hi")).await.unwrap();
        assert_eq!(alice.recv().await.unwrap().unwrap(), Message::text("hi"));
        alice.send(Message::text("over TLS")).await.unwrap();
        assert_eq!(
            bob.recv().await.unwrap().unwrap(),
            Message::text("over TLS")
        );

        // A plain-text client cannot talk to the TLS port.
        assert!(duplex::connect(&format!("ws://127.0.0.1:{port}/echo"))
            .await
            .is_err());
    })
    .await
    .expect("in time");
    hub.stop().await.unwrap();
}
