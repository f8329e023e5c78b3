//! Byte-level conformance tests: RFC 6455 rules checked by feeding raw frames to a
//! [`Connection`] (or its halves) and inspecting what it returns and what it queues on the wire.
//!
//! Modules are named after the section of RFC 6455 whose rules they check. Frames are built by
//! hand with the testkit's codec, and queued output is decoded by it too, so the tests do not
//! depend on the crate's own encoder.

use bytes::BytesMut;
use duplex_proto::frame::OpCode;
use duplex_proto::recv::Receiver;
use duplex_proto::send::Sender;
use duplex_proto::{
    Answers, CloseCode, CloseFrame, Config, Connection, Error, Message, Role, State,
};
use duplex_testkit::frame::{encode, masked, parse_frames, unmasked, Frame, MASK_KEY};

/// A well-formed frame sent *to* an endpoint of `role`: masked for a server, not for a client.
fn to(role: Role, b0: u8, payload: &[u8]) -> Vec<u8> {
    match role {
        Role::Server => masked(b0, payload),
        Role::Client => unmasked(b0, payload),
    }
}

const ROLES: [Role; 2] = [Role::Client, Role::Server];

/// Takes everything queued for sending, chunk by chunk as an I/O layer would.
fn drain(conn: &mut Connection) -> Vec<u8> {
    duplex_testkit::drain(conn.send_queue())
}

/// Decodes messages from `buf` until it needs more bytes.
fn pump(conn: &mut Connection, buf: &mut BytesMut, out: &mut Vec<Message>) -> Result<(), Error> {
    while let Some(msg) = conn.receive(buf)? {
        out.push(msg);
    }
    Ok(())
}

/// Feeds `input` in pieces of `chunk` bytes; returns the messages decoded and the error that
/// stopped decoding, if any.
fn feed(conn: &mut Connection, input: &[u8], chunk: usize) -> (Vec<Message>, Option<Error>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        if let Err(e) = pump(conn, &mut buf, &mut out) {
            return (out, Some(e));
        }
    }
    (out, None)
}

/// Feeds `input` whole and one byte at a time; both must give the same messages, no error,
/// and leave the connection open.
#[track_caller]
fn receive_ok(role: Role, config: Config, input: &[u8]) -> (Vec<Message>, Vec<Frame>) {
    let mut results = Vec::new();
    for chunk in [input.len(), 1] {
        let mut conn = Connection::new(role, config);
        let (msgs, err) = feed(&mut conn, input, chunk);
        assert_eq!(err, None, "chunk size {chunk}");
        results.push((msgs, parse_frames(&drain(&mut conn))));
    }
    let second = results.pop().unwrap();
    let first = results.pop().unwrap();
    assert_eq!(
        first.0, second.0,
        "messages differ when fed one byte at a time"
    );
    assert_eq!(
        first.1, second.1,
        "replies differ when fed one byte at a time"
    );
    first
}

/// Checks that `input` fails the connection with `expected`, whole and one byte at a time:
/// exactly one close frame with the error's code is queued (masked by a client, not by a
/// server), the connection is closed, nothing more is decoded and nothing more can be sent.
/// Returns the messages decoded before the failure.
#[track_caller]
fn assert_fails(role: Role, config: Config, input: &[u8], expected: Error) -> Vec<Message> {
    let code = expected.close_code().expect("a protocol error").0;
    let mut before = None;
    for chunk in [input.len(), 1] {
        let mut conn = Connection::new(role, config);
        let (msgs, err) = feed(&mut conn, input, chunk);
        assert_eq!(err.as_ref(), Some(&expected), "chunk size {chunk}");
        let frames = parse_frames(&drain(&mut conn));
        assert_eq!(frames.len(), 1, "one close frame queued: {frames:?}");
        let close = &frames[0];
        assert_eq!((close.fin, close.rsv, close.opcode), (true, 0, 0x8));
        assert_eq!(close.masked, role == Role::Client);
        assert_eq!(close.payload[..2], code.to_be_bytes(), "close code");
        assert!(close.payload.len() <= 125);
        assert!(std::str::from_utf8(&close.payload[2..]).is_ok());
        assert_eq!(conn.state(), State::Closed);

        // The connection is dead: a valid frame is not decoded, nothing can be sent.
        let mut late = BytesMut::from(&to(role, 0x81, b"late")[..]);
        assert_eq!(conn.receive(&mut late), Ok(None));
        assert_eq!(conn.send(Message::text("late")), Err(Error::AlreadyClosed));
        assert_eq!(conn.close(CloseCode::NORMAL, ""), Err(Error::AlreadyClosed));
        assert!(drain(&mut conn).is_empty());

        match &before {
            None => before = Some(msgs),
            Some(b) => assert_eq!(b, &msgs, "messages before the error differ by split"),
        }
    }
    before.unwrap()
}

fn text(s: &str) -> Message {
    Message::text(s)
}

mod section_5_7_examples {
    use super::*;

    #[test]
    fn unmasked_text_to_a_client() {
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (msgs, replies) = receive_ok(Role::Client, Config::default(), &wire);
        assert_eq!(msgs, [text("Hello")]);
        assert!(replies.is_empty());
    }

    #[test]
    fn masked_text_to_a_server() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(wire.to_vec(), masked(0x81, b"Hello"));
        let (msgs, replies) = receive_ok(Role::Server, Config::default(), &wire);
        assert_eq!(msgs, [text("Hello")]);
        assert!(replies.is_empty());
    }

    #[test]
    fn fragmented_text() {
        let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let (msgs, _) = receive_ok(Role::Client, Config::default(), &wire);
        assert_eq!(msgs, [text("Hello")]);

        // Every two-piece split gives the same single message.
        for cut in 0..=wire.len() {
            let mut conn = Connection::new(Role::Client, Config::default());
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            pump(&mut conn, &mut buf, &mut out).unwrap();
            buf.extend_from_slice(&wire[cut..]);
            pump(&mut conn, &mut buf, &mut out).unwrap();
            assert_eq!(out, [text("Hello")], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn ping_gets_pong_with_same_payload() {
        // Unmasked ping to a client: the exact RFC bytes.
        let wire = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (msgs, replies) = receive_ok(Role::Client, Config::default(), &wire);
        assert_eq!(msgs, [Message::Ping("Hello".into())]);
        assert_eq!(replies.len(), 1);
        let pong = &replies[0];
        assert_eq!((pong.fin, pong.opcode, pong.masked), (true, 0xa, true));
        assert_eq!(pong.payload, b"Hello");

        // Masked ping to a server: the pong is queued unmasked, byte for byte.
        let mut server = Connection::new(Role::Server, Config::default());
        let (msgs, err) = feed(&mut server, &masked(0x89, b"Hello"), 100);
        assert_eq!((msgs, err), (vec![Message::Ping("Hello".into())], None));
        assert_eq!(
            drain(&mut server),
            [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(server.state(), State::Open);
    }

    #[test]
    fn masked_pong_is_delivered_and_not_answered() {
        let wire = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (msgs, replies) = receive_ok(Role::Server, Config::default(), &wire);
        assert_eq!(msgs, [Message::Pong("Hello".into())]);
        assert!(replies.is_empty());
    }

    #[test]
    fn binary_256_bytes_with_16_bit_length() {
        let payload: Vec<u8> = (0..=255u8).collect();
        let mut wire = vec![0x82, 0x7e, 0x01, 0x00];
        wire.extend_from_slice(&payload);
        let (msgs, _) = receive_ok(Role::Client, Config::default(), &wire);
        assert_eq!(msgs, [Message::binary(payload.clone())]);
        // The same message masked, to a server.
        let (msgs, _) = receive_ok(Role::Server, Config::default(), &masked(0x82, &payload));
        assert_eq!(msgs, [Message::binary(payload)]);
    }

    #[test]
    fn binary_64k_with_64_bit_length() {
        let payload: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut wire = vec![0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        wire.extend_from_slice(&payload);
        let (msgs, _) = receive_ok(Role::Client, Config::default(), &wire);
        assert_eq!(msgs, [Message::binary(payload.clone())]);
        let (msgs, _) = receive_ok(Role::Server, Config::default(), &masked(0x82, &payload));
        assert_eq!(msgs, [Message::binary(payload)]);
    }

    #[test]
    fn sender_encodes_the_rfc_frames() {
        let mut tx = Sender::new(Role::Server);
        tx.send(text("Hello")).unwrap();
        tx.send_fragment(OpCode::Text, "Hel".into(), false).unwrap();
        tx.send_fragment(OpCode::Continuation, "lo".into(), true)
            .unwrap();
        tx.send(Message::Ping("Hello".into())).unwrap();
        tx.send(Message::binary(vec![0u8; 256])).unwrap();
        tx.send(Message::binary(vec![0u8; 65536])).unwrap();
        let wire = duplex_testkit::drain(tx.queue());
        let mut expect = b"\x81\x05Hello\x01\x03Hel\x80\x02lo\x89\x05Hello".to_vec();
        expect.extend_from_slice(&[0x82, 0x7e, 0x01, 0x00]);
        expect.extend_from_slice(&[0u8; 256]);
        expect.extend_from_slice(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        expect.extend_from_slice(&[0u8; 65536]);
        assert_eq!(wire, expect);
    }

    #[test]
    fn client_and_server_talk() {
        let mut client = Connection::new(Role::Client, Config::default());
        let mut server = Connection::new(Role::Server, Config::default());
        client.send(text("Hello")).unwrap();
        client.send(Message::Ping("p".into())).unwrap();
        let (msgs, err) = feed(&mut server, &drain(&mut client), 3);
        assert_eq!(err, None);
        assert_eq!(msgs, [text("Hello"), Message::Ping("p".into())]);
        server.send(text("World")).unwrap();
        let (msgs, err) = feed(&mut client, &drain(&mut server), 2);
        assert_eq!(err, None);
        assert_eq!(msgs, [Message::Pong("p".into()), text("World")]);
    }
}

mod section_5_1_masking {
    use super::*;

    #[test]
    fn server_rejects_unmasked_frame_with_1002() {
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_fails(Role::Server, Config::default(), &wire, Error::UnmaskedFrame);

        // The exact bytes queued: an unmasked close, code 1002, the error as the reason.
        let mut server = Connection::new(Role::Server, Config::default());
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(server.receive(&mut buf), Err(Error::UnmaskedFrame));
        let reason = b"unmasked frame from a client";
        let mut expect = vec![0x88, 2 + reason.len() as u8, 0x03, 0xea];
        expect.extend_from_slice(reason);
        assert_eq!(drain(&mut server), expect);
        assert_eq!(server.state(), State::Closed);
    }

    #[test]
    fn server_rejects_unmasked_control_frames_too() {
        for b0 in [0x89, 0x8a, 0x88] {
            assert_fails(
                Role::Server,
                Config::default(),
                &unmasked(b0, b""),
                Error::UnmaskedFrame,
            );
        }
    }

    #[test]
    fn unmasked_check_happens_on_the_header() {
        // Only the two header bytes of a large unmasked frame: the error is immediate.
        let mut server = Connection::new(Role::Server, Config::default());
        let mut buf = BytesMut::from(&[0x82u8, 0x7e, 0x10, 0x00][..]);
        assert_eq!(server.receive(&mut buf), Err(Error::UnmaskedFrame));
    }

    #[test]
    fn client_rejects_masked_frame_with_1002() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_fails(Role::Client, Config::default(), &wire, Error::MaskedFrame);
        assert_fails(
            Role::Client,
            Config::default(),
            &masked(0x89, b""),
            Error::MaskedFrame,
        );
    }

    #[test]
    fn client_masks_every_frame_and_server_none() {
        let messages = [
            text("Hello"),
            Message::binary(vec![1u8; 3000]),
            Message::Ping("ping".into()),
            Message::Pong("".into()),
            Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))),
        ];
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default());
            for msg in messages.clone() {
                conn.send(msg).unwrap();
            }
            let frames = parse_frames(&drain(&mut conn));
            assert_eq!(frames.len(), messages.len());
            for (frame, msg) in frames.iter().zip(messages.clone()) {
                assert_eq!(frame.masked, role == Role::Client, "{role:?} {msg:?}");
                assert_eq!(frame.payload, msg.into_payload());
            }
        }
    }

    #[test]
    fn client_masking_keys_vary() {
        let mut conn = Connection::new(Role::Client, Config::default());
        for _ in 0..8 {
            conn.send(Message::binary(vec![0u8; 4])).unwrap();
        }
        let wire = drain(&mut conn);
        // Each frame: 2 header bytes, 4 key bytes, 4 payload bytes (zeros masked = the key).
        let keys: std::collections::HashSet<&[u8]> = wire.chunks(10).map(|f| &f[2..6]).collect();
        assert!(keys.len() > 1, "the masking key must not be constant");
        for f in wire.chunks(10) {
            assert_eq!(f[2..6], f[6..10]);
        }
    }

    #[test]
    fn masked_payload_split_at_every_offset() {
        // The key must stay in phase when the payload arrives in pieces of any size.
        let payload: Vec<u8> = (0..40u8).collect();
        let wire = masked(0x82, &payload);
        for chunk in 1..=wire.len() {
            let mut server = Connection::new(Role::Server, Config::default());
            let (msgs, err) = feed(&mut server, &wire, chunk);
            assert_eq!(err, None);
            assert_eq!(msgs, [Message::binary(payload.clone())], "chunk {chunk}");
        }
    }
}

mod section_5_2_base_framing {
    use super::*;

    #[test]
    fn reserved_opcodes_fail_with_1002() {
        for op in [0x3u8, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            for role in ROLES {
                assert_fails(
                    role,
                    Config::default(),
                    &to(role, 0x80 | op, b"x"),
                    Error::ReservedOpcode(op),
                );
            }
        }
    }

    #[test]
    fn reserved_opcode_after_a_valid_message() {
        let mut wire = unmasked(0x81, b"ok");
        wire.extend(unmasked(0x83, b""));
        let before = assert_fails(
            Role::Client,
            Config::default(),
            &wire,
            Error::ReservedOpcode(3),
        );
        assert_eq!(before, [text("ok")]);
    }

    #[test]
    fn rsv_bits_fail_with_1002() {
        for rsv in [0x40u8, 0x20, 0x10, 0x70] {
            for op in [0x1u8, 0x2, 0x8, 0x9, 0xa] {
                for role in ROLES {
                    assert_fails(
                        role,
                        Config::default(),
                        &to(role, 0x80 | rsv | op, b""),
                        Error::ReservedBits,
                    );
                }
            }
        }
        // On a continuation frame too.
        let mut wire = unmasked(0x01, b"a");
        wire.extend(unmasked(0x80 | 0x40, b"b"));
        assert_fails(Role::Client, Config::default(), &wire, Error::ReservedBits);
    }

    #[test]
    fn rsv1_allowed_only_when_negotiated_and_only_on_first_data_frame() {
        let params = duplex_proto::deflate::negotiate::params_for_test(Default::default());
        // RFC 7692 section 7.2.3.1: "Hello" compressed, RSV1 set.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut rx = Receiver::new(Role::Client, Config::default());
        rx.set_deflate(Some(&params));
        let mut buf = BytesMut::from(&unmasked(0xc2, &hello)[..]);
        assert_eq!(
            rx.receive(&mut buf),
            Ok(Some(Message::binary(&b"Hello"[..])))
        );
        // Never on control frames.
        let mut buf = BytesMut::from(&unmasked(0xc9, b"")[..]);
        assert_eq!(rx.receive(&mut buf), Err(Error::ReservedBits));
        // Never on continuation frames.
        let mut rx = Receiver::new(Role::Client, Config::default());
        rx.set_deflate(Some(&params));
        let mut buf = BytesMut::from(&unmasked(0x42, b"x")[..]);
        buf.extend_from_slice(&unmasked(0xc0, b"y"));
        assert_eq!(rx.receive(&mut buf), Err(Error::ReservedBits));
    }

    #[test]
    fn length_with_most_significant_bit_fails_with_1002() {
        for role in ROLES {
            let mut wire = vec![0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
            if role == Role::Server {
                wire[1] |= 0x80;
                wire.extend_from_slice(&MASK_KEY);
            }
            assert_fails(role, Config::default(), &wire, Error::InvalidLength);
            // Detected as soon as the length bytes are there, before the mask key.
            let mut conn = Connection::new(role, Config::default());
            let mut buf = BytesMut::from(&wire[..10]);
            assert_eq!(conn.receive(&mut buf), Err(Error::InvalidLength));
        }
        let mut wire = vec![0x82, 0x7f];
        wire.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_fails(Role::Client, Config::default(), &wire, Error::InvalidLength);
    }

    #[test]
    fn empty_frames() {
        let mut wire = unmasked(0x81, b"");
        wire.extend(unmasked(0x82, b""));
        wire.extend(unmasked(0x89, b""));
        wire.extend(unmasked(0x8a, b""));
        let (msgs, replies) = receive_ok(Role::Client, Config::default(), &wire);
        assert_eq!(
            msgs,
            [
                text(""),
                Message::binary(Vec::new()),
                Message::Ping("".into()),
                Message::Pong("".into())
            ]
        );
        assert_eq!(replies.len(), 1);
        assert_eq!((replies[0].opcode, replies[0].payload.len()), (0xa, 0));
    }

    #[test]
    fn partial_frame_consumes_nothing_it_cannot_use() {
        // A header split before the extended length: nothing happens until it is all there.
        let wire = unmasked(0x82, &[9u8; 300]);
        let mut conn = Connection::new(Role::Client, Config::default());
        let mut buf = BytesMut::from(&wire[..3]);
        assert_eq!(conn.receive(&mut buf), Ok(None));
        assert_eq!(buf.len(), 3);
        buf.extend_from_slice(&wire[3..100]);
        assert_eq!(conn.receive(&mut buf), Ok(None));
        assert_eq!(conn.receiver().read_hint(), 300 - 96);
        buf.extend_from_slice(&wire[100..]);
        assert_eq!(
            conn.receive(&mut buf),
            Ok(Some(Message::binary(vec![9u8; 300])))
        );
        assert!(buf.is_empty());
        assert_eq!(conn.receiver().read_hint(), 0);
    }
}

mod section_5_4_fragmentation {
    use super::*;

    #[test]
    fn many_fragments_including_empty_ones() {
        for role in ROLES {
            let mut wire = to(role, 0x02, b"");
            wire.extend(to(role, 0x00, b"ab"));
            wire.extend(to(role, 0x00, b""));
            wire.extend(to(role, 0x00, b"cde"));
            wire.extend(to(role, 0x80, b""));
            let (msgs, _) = receive_ok(role, Config::default(), &wire);
            assert_eq!(msgs, [Message::binary(&b"abcde"[..])]);
        }
    }

    #[test]
    fn ping_between_fragments_is_delivered_then_message_reassembled() {
        for role in ROLES {
            let mut wire = to(role, 0x01, b"Hel");
            wire.extend(to(role, 0x89, b"ping"));
            wire.extend(to(role, 0x00, b"l"));
            wire.extend(to(role, 0x8a, b"pong"));
            wire.extend(to(role, 0x80, b"o"));
            let (msgs, replies) = receive_ok(role, Config::default(), &wire);
            assert_eq!(
                msgs,
                [
                    Message::Ping("ping".into()),
                    Message::Pong("pong".into()),
                    text("Hello")
                ]
            );
            assert_eq!(replies.len(), 1);
            assert_eq!(
                (replies[0].opcode, &replies[0].payload[..]),
                (0xa, &b"ping"[..])
            );
        }
    }

    #[test]
    fn continuation_without_start_fails_with_1002() {
        for role in ROLES {
            for b0 in [0x80, 0x00] {
                assert_fails(
                    role,
                    Config::default(),
                    &to(role, b0, b"lo"),
                    Error::UnexpectedContinuation,
                );
            }
            // After a complete message, too.
            let mut wire = to(role, 0x81, b"done");
            wire.extend(to(role, 0x80, b"more"));
            let before = assert_fails(
                role,
                Config::default(),
                &wire,
                Error::UnexpectedContinuation,
            );
            assert_eq!(before, [text("done")]);
        }
    }

    #[test]
    fn new_data_frame_inside_fragmented_message_fails_with_1002() {
        for role in ROLES {
            for (first, second) in [(0x01, 0x81), (0x01, 0x01), (0x02, 0x81), (0x01, 0x82)] {
                let mut wire = to(role, first, b"Hel");
                wire.extend(to(role, second, b"lo"));
                assert_fails(role, Config::default(), &wire, Error::ExpectedContinuation);
            }
        }
    }

    #[test]
    fn sender_fragments_and_refuses_misuse() {
        let mut conn = Connection::new(Role::Server, Config::default());
        let tx = conn.sender();
        assert_eq!(
            tx.send_fragment(OpCode::Continuation, "x".into(), true),
            Err(Error::InvalidFragmentSequence(
                "continuation without a first fragment"
            ))
        );
        tx.send_fragment(OpCode::Binary, "a".into(), false).unwrap();
        assert!(matches!(
            tx.send(text("interleaved")),
            Err(Error::InvalidFragmentSequence(_))
        ));
        assert!(matches!(
            tx.send_fragment(OpCode::Text, "b".into(), false),
            Err(Error::InvalidFragmentSequence(_))
        ));
        assert!(matches!(
            tx.send_fragment(OpCode::Ping, "".into(), true),
            Err(Error::InvalidFragmentSequence(_))
        ));
        // Control frames may be interleaved.
        tx.send(Message::Ping("p".into())).unwrap();
        tx.send_fragment(OpCode::Continuation, "b".into(), true)
            .unwrap();
        tx.send(text("x")).unwrap();
        assert_eq!(
            drain(&mut conn),
            b"\x02\x01a\x89\x01p\x80\x01b\x81\x01x".to_vec()
        );
    }
}

mod section_5_5_control_frames {
    use super::*;

    #[test]
    fn control_frame_longer_than_125_fails_with_1002() {
        for role in ROLES {
            for b0 in [0x89, 0x8a, 0x88] {
                let mut payload = vec![b'x'; 126];
                payload[..2].copy_from_slice(&1000u16.to_be_bytes());
                assert_fails(
                    role,
                    Config::default(),
                    &to(role, b0, &payload),
                    Error::ControlTooLong(126),
                );
            }
        }
        // Found from the header alone, before any of the payload.
        let mut conn = Connection::new(Role::Client, Config::default());
        let mut buf = BytesMut::from(&[0x89u8, 0x7e, 0x00, 0x7e][..]);
        assert_eq!(conn.receive(&mut buf), Err(Error::ControlTooLong(126)));
    }

    #[test]
    fn control_frame_of_125_bytes_is_fine() {
        let payload = vec![0x5a; 125];
        let (msgs, replies) = receive_ok(Role::Server, Config::default(), &masked(0x89, &payload));
        assert_eq!(msgs, [Message::Ping(payload.clone().into())]);
        assert_eq!(replies[0].payload, payload);
    }

    #[test]
    fn fragmented_control_frame_fails_with_1002() {
        for role in ROLES {
            for op in [0x9u8, 0xa, 0x8] {
                assert_fails(
                    role,
                    Config::default(),
                    &to(role, op, b"x"),
                    Error::FragmentedControl,
                );
            }
            // Inside a fragmented message as well.
            let mut wire = to(role, 0x01, b"a");
            wire.extend(to(role, 0x09, b""));
            assert_fails(role, Config::default(), &wire, Error::FragmentedControl);
        }
    }

    #[test]
    fn sender_refuses_long_control_payloads() {
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default());
            let long = bytes::Bytes::from(vec![0u8; 126]);
            assert_eq!(
                conn.send(Message::Ping(long.clone())),
                Err(Error::ControlPayloadTooLong(126))
            );
            assert_eq!(
                conn.send(Message::Pong(long)),
                Err(Error::ControlPayloadTooLong(126))
            );
            assert!(Error::ControlPayloadTooLong(126).is_local());
            assert!(drain(&mut conn).is_empty());
            assert_eq!(conn.state(), State::Open);
            conn.send(Message::Ping(vec![0u8; 125].into())).unwrap();
        }
    }
}

mod section_5_6_utf8 {
    use super::*;

    /// Ten valid bytes, then 0xff, then nine more: 20 bytes.
    fn bad_payload() -> Vec<u8> {
        let mut p = b"Hello, wor".to_vec();
        p.push(0xff);
        p.extend_from_slice(b"ld!!!!!!!");
        assert_eq!(p.len(), 20);
        p
    }

    #[test]
    fn invalid_utf8_fails_with_1007() {
        for role in ROLES {
            for payload in [
                &b"\xff"[..],
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", // surrogate
                b"\xf4\x90\x80\x80",                                         // > U+10FFFF
                b"\xc0\xaf",                                                 // overlong
                b"abc\xe2\x82",                                              // truncated at the end
            ] {
                assert_fails(
                    role,
                    Config::default(),
                    &to(role, 0x81, payload),
                    Error::InvalidUtf8,
                );
            }
        }
    }

    #[test]
    fn fails_on_first_invalid_byte_of_a_partial_frame() {
        for role in ROLES {
            let wire = to(role, 0x81, &bad_payload());
            let header = wire.len() - 20;

            // Only 12 of the 20 payload bytes have arrived: already an error.
            let mut conn = Connection::new(role, Config::default());
            let mut buf = BytesMut::from(&wire[..header + 12]);
            assert_eq!(conn.receive(&mut buf), Err(Error::InvalidUtf8));
            let frames = parse_frames(&drain(&mut conn));
            assert_eq!(frames[0].payload[..2], 1007u16.to_be_bytes());

            // Precisely: fine with the ten valid bytes, an error with the 0xff.
            let mut conn = Connection::new(role, Config::default());
            let mut buf = BytesMut::from(&wire[..header + 10]);
            assert_eq!(conn.receive(&mut buf), Ok(None));
            buf.extend_from_slice(&wire[header + 10..header + 11]);
            assert_eq!(conn.receive(&mut buf), Err(Error::InvalidUtf8));
        }
    }

    #[test]
    fn fails_on_first_invalid_byte_of_a_middle_fragment() {
        for role in ROLES {
            let mut wire = to(role, 0x01, "κόσμε".as_bytes());
            let first = wire.len();
            wire.extend(to(role, 0x00, &bad_payload()));
            let header = wire.len() - first - 20;
            // The final fragment never arrives.
            let mut conn = Connection::new(role, Config::default());
            let mut buf = BytesMut::from(&wire[..first + header + 12]);
            assert_eq!(conn.receive(&mut buf), Err(Error::InvalidUtf8));
            assert_eq!(conn.state(), State::Closed);

            let mut conn = Connection::new(role, Config::default());
            let mut buf = BytesMut::from(&wire[..first + header + 10]);
            assert_eq!(conn.receive(&mut buf), Ok(None));
            buf.extend_from_slice(&wire[first + header + 10..first + header + 11]);
            assert_eq!(conn.receive(&mut buf), Err(Error::InvalidUtf8));
        }
    }

    #[test]
    fn code_point_split_across_fragments_and_reads() {
        let s = "€𝄞κ";
        let b = s.as_bytes();
        for role in ROLES {
            // Fragments cut in the middle of every code point.
            let mut wire = to(role, 0x01, &b[..1]);
            wire.extend(to(role, 0x00, &b[1..4]));
            wire.extend(to(role, 0x00, &b[4..6]));
            wire.extend(to(role, 0x80, &b[6..]));
            let (msgs, _) = receive_ok(role, Config::default(), &wire);
            assert_eq!(msgs, [text(s)]);
        }
    }

    #[test]
    fn invalid_byte_across_a_fragment_boundary_fails_when_it_arrives() {
        let mut wire = unmasked(0x01, b"ok \xe2\x82");
        wire.extend(unmasked(0x00, b"\x28 rest"));
        let mut conn = Connection::new(Role::Client, Config::default());
        let end = wire.len() - 5; // up to the invalid continuation byte 0x28
        let mut buf = BytesMut::from(&wire[..end - 1]);
        assert_eq!(conn.receive(&mut buf), Ok(None));
        buf.extend_from_slice(&wire[end - 1..end]);
        assert_eq!(conn.receive(&mut buf), Err(Error::InvalidUtf8));
    }

    #[test]
    fn message_ending_inside_a_code_point_fails_with_1007() {
        let mut wire = unmasked(0x01, "€".as_bytes());
        wire.extend(unmasked(0x80, &"€".as_bytes()[..2]));
        assert_fails(Role::Client, Config::default(), &wire, Error::InvalidUtf8);
    }

    #[test]
    fn text_is_utf8_even_if_the_caller_rewrites_unconsumed_bytes() {
        // API misuse: payload bytes already validated (but still in the caller's buffer, as the
        // frame is incomplete) are overwritten, or the buffer is swapped for another, before
        // the frame completes. Nothing sensible can come out, but a `Text` holding invalid
        // UTF-8 must not either: `Utf8Bytes::as_str` relies on it.
        let mut conn = Connection::new(Role::Client, Config::default());
        let mut buf = BytesMut::from(&[0x81, 0x03, b'a', b'b'][..]);
        assert_eq!(conn.receive(&mut buf), Ok(None));
        buf[0] = 0xff;
        buf.extend_from_slice(b"c");
        assert_eq!(conn.receive(&mut buf), Err(Error::InvalidUtf8));

        let mut conn = Connection::new(Role::Client, Config::default());
        let mut buf = BytesMut::from(&[0x81, 0x03, b'a', b'b'][..]);
        assert_eq!(conn.receive(&mut buf), Ok(None));
        let mut other = BytesMut::from(&b"\xe2\x82c"[..]);
        assert_eq!(conn.receive(&mut other), Err(Error::InvalidUtf8));
    }

    #[test]
    fn binary_messages_are_not_validated() {
        let (msgs, _) = receive_ok(
            Role::Client,
            Config::default(),
            &unmasked(0x82, b"\xff\xfe"),
        );
        assert_eq!(msgs, [Message::binary(&b"\xff\xfe"[..])]);
    }

    #[test]
    fn validation_restarts_with_each_message() {
        // A binary message that ends inside a "code point" does not taint the next text.
        let mut wire = unmasked(0x02, b"\xe2");
        wire.extend(unmasked(0x80, b"\x82"));
        wire.extend(unmasked(0x81, b"fine"));
        let (msgs, _) = receive_ok(Role::Client, Config::default(), &wire);
        assert_eq!(msgs, [Message::binary(&b"\xe2\x82"[..]), text("fine")]);
    }
}

mod section_7_closing {
    use super::*;

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    }

    #[test]
    fn close_with_code_and_reason_is_echoed_with_the_same_code() {
        for role in ROLES {
            let wire = to(role, 0x88, &close_payload(1000, b"bye"));
            let mut conn = Connection::new(role, Config::default());
            let (msgs, err) = feed(&mut conn, &wire, 1);
            assert_eq!(err, None);
            assert_eq!(
                msgs,
                [Message::Close(Some(CloseFrame::new(
                    CloseCode::NORMAL,
                    "bye"
                )))]
            );
            assert_eq!(conn.state(), State::Closed);
            let out = drain(&mut conn);
            let frames = parse_frames(&out);
            assert_eq!(frames.len(), 1);
            assert_eq!(
                (frames[0].opcode, frames[0].masked),
                (0x8, role == Role::Client)
            );
            assert_eq!(frames[0].payload, 1000u16.to_be_bytes());
            if role == Role::Server {
                assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
            }
        }
    }

    #[test]
    fn every_valid_code_is_accepted_and_echoed() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            let mut conn = Connection::new(Role::Server, Config::default());
            let (msgs, err) = feed(&mut conn, &masked(0x88, &close_payload(code, b"")), 64);
            assert_eq!(err, None, "{code}");
            assert_eq!(
                msgs,
                [Message::Close(Some(CloseFrame::new(CloseCode(code), "")))]
            );
            let mut expect = vec![0x88, 0x02];
            expect.extend_from_slice(&code.to_be_bytes());
            assert_eq!(drain(&mut conn), expect, "{code}");
        }
    }

    #[test]
    fn close_without_payload_is_echoed_empty() {
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default());
            let (msgs, err) = feed(&mut conn, &to(role, 0x88, b""), 64);
            assert_eq!((msgs, err), (vec![Message::Close(None)], None));
            let out = drain(&mut conn);
            let frames = parse_frames(&out);
            assert_eq!(frames.len(), 1);
            assert_eq!((frames[0].opcode, frames[0].payload.len()), (0x8, 0));
            if role == Role::Server {
                assert_eq!(out, [0x88, 0x00]);
            }
            assert_eq!(conn.state(), State::Closed);
        }
    }

    #[test]
    fn one_byte_close_payload_fails_with_1002() {
        for role in ROLES {
            assert_fails(
                role,
                Config::default(),
                &to(role, 0x88, &[0x03]),
                Error::InvalidClosePayload,
            );
        }
    }

    #[test]
    fn invalid_close_codes_fail_with_1002() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            for role in ROLES {
                assert_fails(
                    role,
                    Config::default(),
                    &to(role, 0x88, &close_payload(code, b"")),
                    Error::InvalidCloseCode(code),
                );
            }
        }
    }

    #[test]
    fn close_reason_with_invalid_utf8_fails_with_1007() {
        for role in ROLES {
            assert_fails(
                role,
                Config::default(),
                &to(role, 0x88, &close_payload(1000, b"bad \xff reason")),
                Error::InvalidUtf8,
            );
            assert_fails(
                role,
                Config::default(),
                &to(
                    role,
                    0x88,
                    &close_payload(1000, "€".as_bytes().split_at(2).0),
                ),
                Error::InvalidUtf8,
            );
        }
    }

    #[test]
    fn nothing_is_decoded_or_sent_after_a_close() {
        for role in ROLES {
            let mut wire = to(role, 0x88, &close_payload(1001, b""));
            let after = to(role, 0x81, b"after");
            wire.extend_from_slice(&after);
            wire.extend(to(role, 0x89, b""));
            let mut conn = Connection::new(role, Config::default());
            let mut buf = BytesMut::from(&wire[..]);
            assert_eq!(
                conn.receive(&mut buf),
                Ok(Some(Message::Close(Some(CloseFrame::new(
                    CloseCode::GOING_AWAY,
                    ""
                )))))
            );
            assert_eq!(conn.receive(&mut buf), Ok(None));
            assert_eq!(conn.receive(&mut buf), Ok(None));
            // The bytes after the close frame are left alone.
            assert_eq!(buf.len(), after.len() + to(role, 0x89, b"").len());
            assert!(conn.receiver().is_finished());
            assert_eq!(conn.state(), State::Closed);
            let echo = drain(&mut conn);
            assert_eq!(parse_frames(&echo).len(), 1);

            assert_eq!(conn.send(text("x")), Err(Error::AlreadyClosed));
            assert_eq!(
                conn.send(Message::Ping("".into())),
                Err(Error::AlreadyClosed)
            );
            assert_eq!(
                conn.close(CloseCode::NORMAL, "again"),
                Err(Error::AlreadyClosed)
            );
            assert_eq!(
                conn.sender().send_fragment(OpCode::Text, "x".into(), true),
                Err(Error::AlreadyClosed)
            );
            assert!(Error::AlreadyClosed.is_local());
            assert!(drain(&mut conn).is_empty());
        }
    }

    #[test]
    fn initiating_close_then_peer_close() {
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default());
            assert_eq!(conn.state(), State::Open);
            conn.close(CloseCode::NORMAL, "done").unwrap();
            assert_eq!(conn.state(), State::CloseSent);
            let frames = parse_frames(&drain(&mut conn));
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].payload, close_payload(1000, b"done"));
            assert_eq!(conn.send(text("x")), Err(Error::AlreadyClosed));

            // Data still in flight from the peer is delivered; its pings are not answered
            // (nothing follows a close frame).
            let mut wire = to(role, 0x81, b"in flight");
            wire.extend(to(role, 0x89, b"ping"));
            let (msgs, err) = feed(&mut conn, &wire, 1);
            assert_eq!(err, None);
            assert_eq!(msgs, [text("in flight"), Message::Ping("ping".into())]);
            assert_eq!(conn.state(), State::CloseSent);
            assert!(drain(&mut conn).is_empty());

            // The peer's close completes the handshake; no second close frame is queued.
            let (msgs, err) = feed(&mut conn, &to(role, 0x88, &close_payload(1000, b"")), 1);
            assert_eq!(err, None);
            assert_eq!(
                msgs,
                [Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]
            );
            assert_eq!(conn.state(), State::Closed);
            assert!(drain(&mut conn).is_empty());
        }
    }

    #[test]
    fn both_sides_close_at_once() {
        let mut client = Connection::new(Role::Client, Config::default());
        let mut server = Connection::new(Role::Server, Config::default());
        client.close(CloseCode::NORMAL, "c").unwrap();
        server.close(CloseCode::GOING_AWAY, "s").unwrap();
        let to_server = drain(&mut client);
        let to_client = drain(&mut server);
        let (msgs, err) = feed(&mut server, &to_server, 1);
        assert_eq!(err, None);
        assert_eq!(
            msgs,
            [Message::Close(Some(CloseFrame::new(
                CloseCode::NORMAL,
                "c"
            )))]
        );
        let (msgs, err) = feed(&mut client, &to_client, 1);
        assert_eq!(err, None);
        assert_eq!(
            msgs,
            [Message::Close(Some(CloseFrame::new(
                CloseCode::GOING_AWAY,
                "s"
            )))]
        );
        assert_eq!(
            (client.state(), server.state()),
            (State::Closed, State::Closed)
        );
        assert!(drain(&mut client).is_empty() && drain(&mut server).is_empty());
    }

    #[test]
    fn full_closing_handshake_between_two_connections() {
        let mut client = Connection::new(Role::Client, Config::default());
        let mut server = Connection::new(Role::Server, Config::default());
        client.close(CloseCode::NORMAL, "bye").unwrap();
        let (msgs, _) = feed(&mut server, &drain(&mut client), 5);
        assert_eq!(
            msgs,
            [Message::Close(Some(CloseFrame::new(
                CloseCode::NORMAL,
                "bye"
            )))]
        );
        assert_eq!(server.state(), State::Closed);
        let (msgs, _) = feed(&mut client, &drain(&mut server), 5);
        assert_eq!(
            msgs,
            [Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]
        );
        assert_eq!(client.state(), State::Closed);
    }

    #[test]
    fn protocol_error_after_close_sent_queues_no_second_close() {
        let mut conn = Connection::new(Role::Server, Config::default());
        conn.close(CloseCode::NORMAL, "").unwrap();
        drain(&mut conn);
        let mut buf = BytesMut::from(&unmasked(0x81, b"unmasked")[..]);
        assert_eq!(conn.receive(&mut buf), Err(Error::UnmaskedFrame));
        assert!(drain(&mut conn).is_empty());
        assert_eq!(conn.state(), State::Closed);
    }

    #[test]
    fn close_between_fragments_ends_the_connection() {
        let mut wire = unmasked(0x01, b"Hel");
        wire.extend(unmasked(0x88, &close_payload(1000, b"")));
        wire.extend(unmasked(0x80, b"lo"));
        let mut conn = Connection::new(Role::Client, Config::default());
        let (msgs, err) = feed(&mut conn, &wire, 1);
        assert_eq!(err, None);
        assert_eq!(
            msgs,
            [Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]
        );
        assert_eq!(conn.state(), State::Closed);
    }

    #[test]
    fn local_only_codes_are_never_sent() {
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default());
            for code in [1005u16, 1006, 1015, 0, 999, 1004, 2000, 5000] {
                assert_eq!(
                    conn.close(CloseCode(code), ""),
                    Err(Error::UnsendableCloseCode(code))
                );
                assert_eq!(
                    conn.send(Message::Close(Some(CloseFrame::new(CloseCode(code), "")))),
                    Err(Error::UnsendableCloseCode(code))
                );
            }
            assert_eq!(
                conn.close(CloseCode::NORMAL, &"x".repeat(124)),
                Err(Error::ReasonTooLong(124))
            );
            // Refused closes leave the connection open and send nothing.
            assert!(drain(&mut conn).is_empty());
            assert_eq!(conn.state(), State::Open);
            conn.send(text("still open")).unwrap();
            conn.close(CloseCode::NORMAL, &"x".repeat(123)).unwrap();
            assert_eq!(conn.state(), State::CloseSent);
            let frames = parse_frames(&drain(&mut conn));
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[1].payload.len(), 125);
        }
    }

    #[test]
    fn close_without_code_can_be_sent() {
        let mut conn = Connection::new(Role::Server, Config::default());
        conn.send(Message::Close(None)).unwrap();
        assert_eq!(drain(&mut conn), [0x88, 0x00]);
        assert_eq!(conn.state(), State::CloseSent);
    }

    #[test]
    fn answers_left_to_a_writer_pass_through_close_received() {
        let mut conn = Connection::new(Role::Client, Config::default());
        conn.set_answers(Answers::ByWriter);
        let mut buf = BytesMut::from(&unmasked(0x88, &close_payload(1000, b""))[..]);
        assert!(conn.receive(&mut buf).unwrap().unwrap().is_close());
        assert_eq!(conn.state(), State::CloseReceived);
        assert!(conn.answer_owed());
        assert_eq!(conn.state(), State::Closed);
        let frames = parse_frames(&drain(&mut conn));
        assert_eq!(frames[0].payload, 1000u16.to_be_bytes());
    }

    #[test]
    fn failure_close_frame_fits_a_control_frame() {
        // `assert_fails` checks that the close frame fits in 125 bytes with a UTF-8 reason;
        // here for one of the longest error messages, MessageTooLarge with huge numbers.
        let config = Config::default().max_frame_size(usize::MAX);
        let config = config.max_message_size(1);
        let mut wire = vec![0x82, 0x7f];
        wire.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        assert_fails(
            Role::Client,
            config,
            &wire,
            Error::MessageTooLarge {
                size: u64::MAX >> 1,
                max: 1,
            },
        );
    }
}

mod limits {
    use super::*;

    #[test]
    fn frame_larger_than_max_frame_size_fails_with_1009() {
        let config = Config::default().max_frame_size(10);
        for role in ROLES {
            let (msgs, _) = receive_ok(role, config, &to(role, 0x82, &[0u8; 10]));
            assert_eq!(msgs.len(), 1);
            assert_fails(
                role,
                config,
                &to(role, 0x82, &[0u8; 11]),
                Error::FrameTooLarge { size: 11, max: 10 },
            );
            // A single fragment over the limit, too.
            let mut wire = to(role, 0x01, b"short");
            wire.extend(to(role, 0x80, &[b'a'; 11]));
            assert_fails(
                role,
                config,
                &wire,
                Error::FrameTooLarge { size: 11, max: 10 },
            );
        }
    }

    #[test]
    fn ten_thousand_empty_continuation_frames_fail_with_1009() {
        let config = Config::default();
        for role in ROLES {
            let mut wire = to(role, 0x01, b"");
            for _ in 0..10_000 {
                wire.extend(to(role, 0x00, b""));
            }
            let max = config.max_fragments;
            let mut conn = Connection::new(role, config);
            let (msgs, err) = feed(&mut conn, &wire, wire.len());
            assert!(msgs.is_empty());
            assert_eq!(err, Some(Error::TooManyFragments { max }));
            let frames = parse_frames(&drain(&mut conn));
            assert_eq!(frames[0].payload[..2], 1009u16.to_be_bytes());
        }
    }

    #[test]
    fn fragments_of_64_bytes_or_more_do_not_count_against_the_fragment_limit() {
        // Autobahn 9.3.1 sends 4 MiB in 64-byte fragments: 65,536 frames.
        let config = Config::default().max_fragments(2);
        for role in ROLES {
            let mut wire = to(role, 0x02, &[1; 64]);
            for _ in 0..100 {
                wire.extend(to(role, 0x00, &[1; 64]));
            }
            wire.extend(to(role, 0x00, b"a"));
            wire.extend(to(role, 0x00, b"b"));
            wire.extend(to(role, 0x80, &[2; 64]));
            let (msgs, _) = receive_ok(role, config, &wire);
            assert_eq!(
                msgs,
                [Message::Binary(
                    vec![1; 64 * 101]
                        .into_iter()
                        .chain(*b"ab")
                        .chain([2; 64])
                        .collect::<Vec<u8>>()
                        .into()
                )]
            );
        }
    }

    #[test]
    fn message_larger_than_max_message_size_fails_with_1009() {
        let config = Config::default().max_message_size(10);
        for role in ROLES {
            assert_fails(
                role,
                config,
                &to(role, 0x81, &[b'a'; 11]),
                Error::MessageTooLarge { size: 11, max: 10 },
            );
            // Exactly at the limit across fragments is fine.
            let mut wire = to(role, 0x01, &[b'a'; 6]);
            wire.extend(to(role, 0x89, b"control frames do not count"));
            wire.extend(to(role, 0x80, &[b'a'; 4]));
            let (msgs, _) = receive_ok(role, config, &wire);
            assert_eq!(msgs.last(), Some(&text("aaaaaaaaaa")));
            // One byte more, spread over fragments, is not.
            let mut wire = to(role, 0x01, &[b'a'; 6]);
            wire.extend(to(role, 0x00, &[b'a'; 4]));
            wire.extend(to(role, 0x80, &[b'a'; 1]));
            assert_fails(
                role,
                config,
                &wire,
                Error::MessageTooLarge { size: 11, max: 10 },
            );
        }
    }

    #[test]
    fn huge_announced_length_fails_from_the_header_alone() {
        // A header announcing 2^63-1 bytes, and nothing else: the error is immediate, with no
        // payload (or buffer for it) involved.
        let len = u64::MAX >> 1;
        for role in ROLES {
            let wire = match role {
                Role::Client => encode(0x82, len, &[], None),
                Role::Server => encode(0x82, len, &[], Some(MASK_KEY)),
            };
            let mut conn = Connection::new(role, Config::default());
            let mut buf = BytesMut::from(&wire[..]);
            let capacity = buf.capacity();
            assert_eq!(
                conn.receive(&mut buf),
                Err(Error::FrameTooLarge {
                    size: len,
                    max: Config::default().max_frame_size
                })
            );
            assert_eq!(buf.capacity(), capacity);
            assert_eq!(conn.receiver().read_hint(), 0);
            let frames = parse_frames(&drain(&mut conn));
            assert_eq!(frames[0].payload[..2], 1009u16.to_be_bytes());

            // A continuation announcing it, inside a fragmented message, too.
            let mut wire = to(role, 0x01, b"a");
            wire.extend(match role {
                Role::Client => encode(0x80, len, &[], None),
                Role::Server => encode(0x80, len, &[], Some(MASK_KEY)),
            });
            assert_fails(
                role,
                Config::default(),
                &wire,
                Error::FrameTooLarge {
                    size: len,
                    max: Config::default().max_frame_size,
                },
            );
        }
    }

    #[test]
    fn defaults() {
        let config = Config::default();
        assert_eq!(config.max_frame_size, 16 << 20);
        assert_eq!(config.max_message_size, 64 << 20);
        let mut rx = Receiver::new(Role::Server, config.max_frame_size(5));
        assert_eq!(rx.config().max_frame_size, 5);
        let mut buf = BytesMut::from(&masked(0x82, &[0; 6])[..]);
        assert_eq!(
            rx.receive(&mut buf),
            Err(Error::FrameTooLarge { size: 6, max: 5 })
        );
        assert!(rx.is_finished());
    }

    #[test]
    fn error_codes() {
        use Error::*;
        for (err, code) in [
            (ReservedBits, 1002),
            (ReservedOpcode(3), 1002),
            (FragmentedControl, 1002),
            (ControlTooLong(126), 1002),
            (UnmaskedFrame, 1002),
            (MaskedFrame, 1002),
            (UnexpectedContinuation, 1002),
            (ExpectedContinuation, 1002),
            (InvalidLength, 1002),
            (InvalidClosePayload, 1002),
            (InvalidCloseCode(0), 1002),
            (InvalidUtf8, 1007),
            (FrameTooLarge { size: 1, max: 0 }, 1009),
            (MessageTooLarge { size: 1, max: 0 }, 1009),
        ] {
            assert_eq!(err.close_code(), Some(CloseCode(code)), "{err}");
            assert!(!err.is_local(), "{err}");
        }
    }
}
