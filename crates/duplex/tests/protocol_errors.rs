//! A peer that breaks the protocol: a hand-written client sends bad frames to a duplex server,
//! which must answer with a close frame carrying the right code, end the TCP connection, and
//! report an error with the same code to the application. And the same for a duplex client
//! facing a hand-written server.

// `accept_with` callbacks return `Result<(), Rejection>`, whose error is a whole HTTP response;
// clippy flags each such closure as a large `Err` variant.

mod common;

use common::{bounded, listen, masked_frame, raw_client, read_frame};
use duplex::proto::handshake::accept_key;
use duplex::{CloseCode, Config, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// Sends `bytes` after a hand-made handshake to a duplex server using `config`, and checks
/// that the server fails the connection with `code`, on the wire and in `recv()`.
async fn server_fails_with(what: &str, config: Config, bytes: Vec<u8>, code: u16) -> Error {
    let (listener, _) = listen().await;
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::accept_with(tcp, config, |_| Ok(())).await.unwrap();
        let err = match ws.recv().await {
            Some(Err(e)) => e,
            other => panic!("expected a protocol error, got {other:?}"),
        };
        // After the failure the stream ends (and the server closes the TCP connection).
        assert!(ws.recv().await.is_none());
        err
    });

    let mut tcp = raw_client(addr).await;
    tcp.write_all(&bytes).await.unwrap();

    // The server's close frame, with exactly this code in its first two payload bytes.
    let frame = read_frame(&mut tcp).await;
    assert!(frame.fin);
    assert_eq!(
        frame.opcode, CLOSE,
        "{what}: expected a close frame, got {frame:?}"
    );
    assert!(
        frame.payload.len() >= 2,
        "{what}: close frame without a code"
    );
    assert_eq!(
        frame.payload[..2],
        code.to_be_bytes(),
        "{what}: close code {} instead of {code}",
        u16::from_be_bytes([frame.payload[0], frame.payload[1]])
    );
    assert!(frame.payload.len() <= 125);
    std::str::from_utf8(&frame.payload[2..]).expect("the reason is UTF-8");

    // Then the server ends the connection: nothing more but EOF.
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "{what}: bytes after the close frame: {rest:?}"
    );

    let err = server.await.unwrap();
    assert!(matches!(err, Error::Protocol(_)), "{what}: {err:?}");
    assert_eq!(err.close_code(), Some(CloseCode(code)), "{what}: {err:?}");
    err
}

#[tokio::test]
async fn unmasked_frame_is_1002() {
    bounded(async {
        let unmasked = common::frame(TEXT, true, b"hello", None);
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
        let bad = masked_frame(TEXT, true, b"ok \xff\xfe");
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
        let mut bytes = masked_frame(TEXT, false, b"h\xc3");
        bytes.extend(masked_frame(CONTINUATION, true, b"(llo"));
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
        let bad = masked_frame(TEXT, true, b"caf\xc3");
        server_fails_with("truncated UTF-8", Config::default(), bad, 1007).await;
    })
    .await
}

#[tokio::test]
async fn message_over_max_message_size_is_1009() {
    bounded(async {
        let config = Config::default().max_message_size(1000);
        let big = masked_frame(BINARY, true, &[7; 2000]);
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
        let mut bytes = masked_frame(TEXT, false, &[b'a'; 600]);
        bytes.extend(masked_frame(CONTINUATION, true, &[b'b'; 600]));
        let err = server_fails_with("fragmented message too large", config, bytes, 1009).await;
        assert!(matches!(
            err,
            Error::Protocol(duplex::proto::Error::MessageTooLarge { .. })
        ));
    })
    .await
}

#[tokio::test]
async fn message_at_max_message_size_is_accepted() {
    bounded(async {
        let (listener, _) = listen().await;
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let config = Config::default().max_message_size(1000);
            let mut ws = duplex::accept_with(tcp, config, |_| Ok(())).await.unwrap();
            ws.recv().await.unwrap().unwrap()
        });
        let mut tcp = raw_client(addr).await;
        let mut bytes = masked_frame(BINARY, false, &[1; 400]);
        bytes.extend(masked_frame(CONTINUATION, true, &[2; 600]));
        tcp.write_all(&bytes).await.unwrap();
        let msg = server.await.unwrap();
        assert_eq!(msg.len(), 1000);
    })
    .await
}

/// A message trickled in empty continuation frames never grows past the size limit, and would
/// keep the server decoding frames for nothing: the fragment limit (default 1,024 small
/// frames) ends it with 1009.
#[tokio::test]
async fn ten_thousand_empty_continuation_frames_are_1009() {
    bounded(async {
        let mut bytes = masked_frame(TEXT, false, b"");
        for _ in 0..10_000 {
            bytes.extend(masked_frame(CONTINUATION, false, b""));
        }
        let err = server_fails_with("empty fragments", Config::default(), bytes, 1009).await;
        assert_eq!(err.close_code(), Some(CloseCode::TOO_BIG));
    })
    .await
}

#[tokio::test]
async fn frame_over_max_frame_size_is_1009() {
    bounded(async {
        let config = Config::default().max_frame_size(100);
        let big = masked_frame(BINARY, true, &[0; 200]);
        server_fails_with("frame too large", config, big, 1009).await;
    })
    .await
}

#[tokio::test]
async fn other_protocol_violations_are_1002() {
    bounded(async {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("reserved opcode", masked_frame(0x3, true, b"x")),
            ("ping over 125 bytes", masked_frame(PING, true, &[0; 126])),
            ("fragmented ping", masked_frame(PING, false, b"x")),
            (
                "continuation without a start",
                masked_frame(CONTINUATION, true, b"x"),
            ),
            ("new message inside a fragmented one", {
                let mut b = masked_frame(TEXT, false, b"a");
                b.extend(masked_frame(TEXT, true, b"b"));
                b
            }),
            ("RSV1 without an extension", {
                let mut b = masked_frame(TEXT, true, b"x");
                b[0] |= 0x40;
                b
            }),
            ("RSV2", {
                let mut b = masked_frame(TEXT, true, b"x");
                b[0] |= 0x20;
                b
            }),
            ("RSV3 on a control frame", {
                let mut b = masked_frame(PING, true, b"x");
                b[0] |= 0x10;
                b
            }),
            ("reserved control opcode", masked_frame(0xB, true, b"x")),
            (
                "close code 1005 on the wire",
                masked_frame(CLOSE, true, &1005u16.to_be_bytes()),
            ),
            ("one-byte close payload", masked_frame(CLOSE, true, &[3])),
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
        let (listener, url) = listen().await;
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            // The handshake by hand.
            let head = common::read_head(&mut tcp).await;
            let key = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_owned())
                })
                .expect("no Sec-WebSocket-Key");
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key.as_bytes())
            );
            tcp.write_all(response.as_bytes()).await.unwrap();
            // A server must not mask.
            tcp.write_all(&masked_frame(TEXT, true, b"masked"))
                .await
                .unwrap();
            // The client's close frame: masked, code 1002.
            let b0 = tcp.read_u8().await.unwrap();
            let b1 = tcp.read_u8().await.unwrap();
            assert_eq!(b0, 0x80 | CLOSE);
            assert_eq!(b1 & 0x80, 0x80, "a client must mask");
            let len = (b1 & 0x7f) as usize;
            let mut key = [0; 4];
            tcp.read_exact(&mut key).await.unwrap();
            let mut payload = vec![0; len];
            tcp.read_exact(&mut payload).await.unwrap();
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
            assert_eq!(payload[..2], 1002u16.to_be_bytes());
        });
        let (mut client, _) = duplex::connect(&format!("{url}/")).await.unwrap();
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
