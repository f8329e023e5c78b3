//! A peer that breaks the protocol: a hand-written client sends bad frames to a duplex server,
//! which must answer with a close frame carrying the right code, end the TCP connection, and
//! report an error with the same code to the application. And the same for a duplex client
//! facing a hand-written server.

// `accept_with` callbacks return `Result<(), Rejection>`, whose error is a whole HTTP response;
// clippy flags each such closure as a large `Err` variant.

mod common;

use common::{accept_one, bounded, serve_one};
use duplex::{CloseCode, Config, Error};
use duplex_testkit::frame::{
    masked, unmasked, BINARY, CLOSE, CONTINUATION, FIN, PING, RSV1, RSV2, RSV3, TEXT,
};
use duplex_testkit::net::{expect_close, raw_accept, raw_client, read_client_frame};
use tokio::io::AsyncWriteExt;

/// Sends `bytes` after a hand-made handshake to a duplex server using `config`, and checks
/// that the server fails the connection with `code`, on the wire (a close frame with that code
/// and a UTF-8 reason, then the end of the connection) and in `recv()`.
async fn server_fails_with(what: &str, config: Config, bytes: Vec<u8>, code: u16) -> Error {
    let (addr, server) = serve_one(config, |mut ws| async move {
        let err = match ws.recv().await {
            Some(Err(e)) => e,
            other => panic!("expected a protocol error, got {other:?}"),
        };
        // After the failure the stream ends (and the server closes the TCP connection).
        assert!(ws.recv().await.is_none());
        err
    });
    let mut tcp = raw_client(addr, "/").await;
    tcp.write_all(&bytes).await.unwrap();
    expect_close(&mut tcp, what, code).await;

    let err = server.await.unwrap();
    assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
    assert_eq!(err.close_code(), Some(CloseCode(code)), "{what}: {err:?}");
    err
}

#[tokio::test]
async fn unmasked_frame_is_1002() {
    bounded(async {
        let unmasked = unmasked(FIN | TEXT, b"hello");
        let err = server_fails_with("unmasked frame", Config::default(), unmasked, 1002).await;
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::UnmaskedFrame)
        ));
    })
    .await
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    bounded(async {
        let bad = masked(FIN | TEXT, b"ok \xff\xfe");
        let err = server_fails_with("invalid UTF-8", Config::default(), bad, 1007).await;
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::InvalidUtf8)
        ));
    })
    .await
}

#[tokio::test]
async fn invalid_utf8_across_fragments_is_1007() {
    bounded(async {
        // "\xc3" starts a two-byte sequence; the next fragment does not continue it.
        let mut bytes = masked(TEXT, b"h\xc3");
        bytes.extend(masked(FIN | CONTINUATION, b"(llo"));
        server_fails_with(
            "invalid UTF-8 across fragments",
            Config::default(),
            bytes,
            1007,
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn text_ending_inside_a_character_is_1007() {
    bounded(async {
        let bad = masked(FIN | TEXT, b"caf\xc3");
        server_fails_with("truncated UTF-8", Config::default(), bad, 1007).await;
    })
    .await
}

#[tokio::test]
async fn message_over_max_message_size_is_1009() {
    bounded(async {
        let config = Config::default().max_message_size(1000);
        let big = masked(FIN | BINARY, &[7; 2000]);
        let err = server_fails_with("message too large", config, big, 1009).await;
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::MessageTooLarge { .. })
        ));
    })
    .await
}

#[tokio::test]
async fn fragmented_message_over_max_message_size_is_1009() {
    bounded(async {
        // Each fragment is within the limit; together they are not.
        let config = Config::default().max_message_size(1000);
        let mut bytes = masked(TEXT, &[b'a'; 600]);
        bytes.extend(masked(FIN | CONTINUATION, &[b'b'; 600]));
        let err = server_fails_with("fragmented message too large", config, bytes, 1009).await;
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::MessageTooLarge { .. })
        ));
    })
    .await
}

/// A message trickled in empty continuation frames never grows past the size limit, and would
/// keep the server decoding frames for nothing: the fragment limit (default 1,024 small
/// frames) ends it with 1009.
#[tokio::test]
async fn ten_thousand_empty_continuation_frames_are_1009() {
    bounded(async {
        let mut bytes = masked(TEXT, b"");
        for _ in 0..10_000 {
            bytes.extend(masked(CONTINUATION, b""));
        }
        let err = server_fails_with("empty fragments", Config::default(), bytes, 1009).await;
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::TooManyFragments { max: 1024 })
        ));
    })
    .await
}

#[tokio::test]
async fn message_at_max_message_size_is_accepted() {
    bounded(async {
        let config = Config::default().max_message_size(1000);
        let (addr, server) =
            serve_one(
                config,
                |mut ws| async move { ws.recv().await.unwrap().unwrap() },
            );
        let mut tcp = raw_client(addr, "/").await;
        let mut bytes = masked(BINARY, &[1; 400]);
        bytes.extend(masked(FIN | CONTINUATION, &[2; 600]));
        tcp.write_all(&bytes).await.unwrap();
        let msg = server.await.unwrap();
        assert_eq!(msg.len(), 1000);
    })
    .await
}

#[tokio::test]
async fn frame_over_max_frame_size_is_1009() {
    bounded(async {
        let config = Config::default().max_frame_size(100);
        let big = masked(FIN | BINARY, &[0; 200]);
        server_fails_with("frame too large", config, big, 1009).await;
    })
    .await
}

#[tokio::test]
async fn other_protocol_violations_are_1002() {
    bounded(async {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("reserved opcode", masked(FIN | 0x3, b"x")),
            ("ping over 125 bytes", masked(FIN | PING, &[0; 126])),
            ("fragmented ping", masked(PING, b"x")),
            (
                "continuation without a start",
                masked(FIN | CONTINUATION, b"x"),
            ),
            ("new message inside a fragmented one", {
                let mut b = masked(TEXT, b"a");
                b.extend(masked(FIN | TEXT, b"b"));
                b
            }),
            ("RSV1 without an extension", masked(FIN | RSV1 | TEXT, b"x")),
            ("RSV2", masked(FIN | RSV2 | TEXT, b"x")),
            ("RSV3 on a control frame", masked(FIN | RSV3 | PING, b"x")),
            ("reserved control opcode", masked(FIN | 0xB, b"x")),
            (
                "close code 1005 on the wire",
                masked(FIN | CLOSE, &1005u16.to_be_bytes()),
            ),
            ("one-byte close payload", masked(FIN | CLOSE, &[3])),
        ];
        for (what, bytes) in cases {
            server_fails_with(what, Config::default(), bytes, 1002).await;
        }
    })
    .await
}

#[tokio::test]
async fn masked_frame_from_a_server_is_1002_at_the_client() {
    bounded(async {
        let (addr, server) = accept_one(|mut tcp| async move {
            raw_accept(&mut tcp).await;
            // A server must not mask.
            tcp.write_all(&masked(FIN | TEXT, b"masked")).await.unwrap();
            // The client's close frame: masked, code 1002.
            let close = read_client_frame(&mut tcp).await;
            assert_eq!((close.fin, close.opcode), (true, CLOSE));
            assert_eq!(close.close_code(), Some(1002));
        });
        let (mut client, _) = duplex::connect(&format!("ws://{addr}/")).await.unwrap();
        let err = match client.recv().await {
            Some(Err(e)) => e,
            other => panic!("expected a protocol error, got {other:?}"),
        };
        assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL));
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::MaskedFrame)
        ));
        server.await.unwrap();
    })
    .await
}
