//! Property tests: whatever one [`Connection`] encodes, the other decodes to the same messages,
//! however the bytes are split on the way; masking is undone exactly; and decoding any byte
//! stream, valid or not, does not depend on how it is split.

use bytes::{Bytes, BytesMut};
use duplex_proto::frame::OpCode;
use duplex_proto::mask::{apply_mask, apply_mask_at};
use duplex_proto::{CloseCode, CloseFrame, Config, Connection, Error, Message, Role, State};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// One thing the sending side does.
#[derive(Debug, Clone)]
enum Step {
    /// A text or binary message sent as one frame with `send`.
    Whole(Message),
    /// A ping or pong.
    Control(Message),
    /// A text or binary message sent in pieces with `Sender::send_fragment`: the payload is cut
    /// at the `cuts` (empty pieces included), and each control message is sent right after the
    /// piece its index picks (possibly between fragments).
    Fragmented {
        msg: Message,
        cuts: Vec<Index>,
        controls: Vec<(Index, Message)>,
    },
}

/// What the sending side does: some steps, then possibly a close.
#[derive(Debug, Clone)]
struct Plan {
    steps: Vec<Step>,
    close: Option<Option<CloseFrame>>,
}

/// Lengths that cross the interesting boundaries: 125/126 (7-bit vs 16-bit length), the
/// sender's 2 KiB copy threshold, 65535/65536 (16-bit vs 64-bit length).
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..200,
        1 => 2040usize..2060,
        1 => 65530usize..65542,
    ]
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..200).prop_map(Bytes::from),
        1 => (length(), any::<u8>()).prop_map(|(len, seed)| {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<u8>>()
                .into()
        }),
    ]
}

/// Arbitrary Unicode: any scalar value, so one to four bytes per character.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => vec(any::<char>(), 0..64).prop_map(|c| c.into_iter().collect()),
        1 => (vec(any::<char>(), 1..4), 100usize..20_000)
            .prop_map(|(c, n)| c.into_iter().cycle().take(n).collect()),
    ]
}

fn data() -> impl Strategy<Value = Message> {
    prop_oneof![
        text().prop_map(Message::text),
        binary().prop_map(Message::Binary),
    ]
}

fn control() -> impl Strategy<Value = Message> {
    prop_oneof![
        vec(any::<u8>(), 0..=125).prop_map(|p| Message::Ping(p.into())),
        vec(any::<u8>(), 0..=125).prop_map(|p| Message::Pong(p.into())),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => data().prop_map(Step::Whole),
        1 => control().prop_map(Step::Control),
        2 => (data(), vec(any::<Index>(), 0..6), vec((any::<Index>(), control()), 0..4))
            .prop_map(|(msg, cuts, controls)| Step::Fragmented { msg, cuts, controls }),
    ]
}

/// A close frame the application may send: a wire-valid code and a reason of at most 123
/// bytes, or no code at all.
fn close_frame() -> impl Strategy<Value = Option<CloseFrame>> {
    let code = prop_oneof![
        prop::sample::select(vec![
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014
        ]),
        3000u16..5000,
    ];
    prop_oneof![
        1 => Just(None),
        4 => (code, vec(any::<char>(), 0..60)).prop_map(|(code, chars)| {
            let mut reason = String::new();
            for c in chars {
                if reason.len() + c.len_utf8() > 123 {
                    break;
                }
                reason.push(c);
            }
            Some(CloseFrame::new(CloseCode(code), reason))
        }),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    (vec(step(), 0..8), proptest::option::of(close_frame()))
        .prop_map(|(steps, close)| Plan { steps, close })
}

/// How the wire is cut into reads: the sizes are used in turn, cyclically.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1]),
        Just(vec![usize::MAX]),
        vec(1usize..16, 1..8),
        vec(1usize..5000, 1..8),
    ]
}

/// Has `conn` do what `plan` says; returns the messages the peer should receive, in order.
fn send_plan(conn: &mut Connection, plan: &Plan) -> Vec<Message> {
    let mut expected = Vec::new();
    for step in &plan.steps {
        match step {
            Step::Whole(msg) | Step::Control(msg) => {
                conn.send(msg.clone()).unwrap();
                expected.push(msg.clone());
            }
            Step::Fragmented {
                msg,
                cuts,
                controls,
            } => {
                let opcode = if msg.is_text() {
                    OpCode::Text
                } else {
                    OpCode::Binary
                };
                let payload = msg.clone().into_payload();
                let mut bounds: Vec<usize> =
                    cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
                bounds.push(0);
                bounds.push(payload.len());
                bounds.sort_unstable();
                let pieces = bounds.len() - 1;
                let controls: Vec<(usize, &Message)> =
                    controls.iter().map(|(i, m)| (i.index(pieces), m)).collect();
                for (i, w) in bounds.windows(2).enumerate() {
                    let op = if i == 0 { opcode } else { OpCode::Continuation };
                    let fin = i + 1 == pieces;
                    conn.sender()
                        .send_fragment(op, payload.slice(w[0]..w[1]), fin)
                        .unwrap();
                    if fin {
                        expected.push(msg.clone());
                    }
                    for (_, c) in controls.iter().filter(|(at, _)| *at == i) {
                        conn.send((*c).clone()).unwrap();
                        expected.push((*c).clone());
                    }
                }
            }
        }
    }
    if let Some(frame) = &plan.close {
        conn.send(Message::Close(frame.clone())).unwrap();
        expected.push(Message::Close(frame.clone()));
    }
    expected
}

/// Everything `conn` has queued.
fn drain(conn: &mut Connection) -> Vec<u8> {
    duplex_testkit::drain(conn.send_queue())
}

/// Feeds `wire` to `conn` in reads of the `chunks` sizes (cyclically). Returns the messages
/// decoded, the error that stopped decoding if any, and the bytes left undecoded.
fn deliver(
    conn: &mut Connection,
    wire: &[u8],
    chunks: &[usize],
) -> (Vec<Message>, Option<Error>, usize) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match conn.receive(&mut buf) {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => break,
                Err(e) => return (out, Some(e), buf.len() + rest.len()),
            }
        }
    }
    (out, None, buf.len())
}

/// The message a peer that received `msg` answers with, if any.
fn reply(msg: &Message) -> Option<Message> {
    match msg {
        Message::Ping(p) => Some(Message::Pong(p.clone())),
        Message::Close(frame) => Some(Message::Close(
            frame.as_ref().map(|f| CloseFrame::new(f.code, "")),
        )),
        _ => None,
    }
}

fn check_roundtrip(
    from: Role,
    plan: &Plan,
    there: &[usize],
    back: &[usize],
) -> Result<(), TestCaseError> {
    let to = match from {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    let mut sender = Connection::new(from, Config::default());
    let mut receiver = Connection::new(to, Config::default());

    let expected = send_plan(&mut sender, plan);
    let (received, err, left) = deliver(&mut receiver, &drain(&mut sender), there);
    prop_assert_eq!(err, None);
    prop_assert_eq!(left, 0);
    prop_assert_eq!(&received, &expected);

    // The receiver answered every ping with its pong, and the close with its echo.
    let replies: Vec<Message> = expected.iter().filter_map(reply).collect();
    let (answered, err, left) = deliver(&mut sender, &drain(&mut receiver), back);
    prop_assert_eq!(err, None);
    prop_assert_eq!(left, 0);
    prop_assert_eq!(answered, replies);

    let end = if plan.close.is_some() {
        State::Closed
    } else {
        State::Open
    };
    prop_assert_eq!(sender.state(), end);
    prop_assert_eq!(receiver.state(), end);
    prop_assert!(drain(&mut sender).is_empty());
    Ok(())
}

/// One frame of a stream that may or may not be valid: a first byte that is usually a real
/// frame type, a payload that is usually sensible for it, masked (for a server) most of the
/// time.
fn soup_frame() -> impl Strategy<Value = Vec<u8>> {
    let b0 = prop_oneof![
        6 => prop::sample::select(vec![0x81u8, 0x82, 0x01, 0x02, 0x00, 0x80, 0x89, 0x8a, 0x88]),
        1 => any::<u8>(),
    ];
    let payload = prop_oneof![
        vec(any::<u8>(), 0..48),
        vec(any::<char>(), 0..16).prop_map(|c| c.into_iter().collect::<String>().into_bytes()),
        (
            prop::sample::select(vec![1000u16, 1001, 1005, 999, 3000]),
            "[a-z]{0,5}"
        )
            .prop_map(|(code, reason)| {
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(reason.as_bytes());
                p
            }),
    ];
    (b0, payload, prop::bool::weighted(0.95), any::<[u8; 4]>()).prop_map(
        |(b0, payload, masked, key)| {
            let mut out = vec![b0];
            let mask_bit = if masked { 0x80 } else { 0 };
            match payload.len() {
                n @ 0..=125 => out.push(mask_bit | n as u8),
                n => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
            }
            if masked {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            } else {
                out.extend_from_slice(&payload);
            }
            out
        },
    )
}

type Outcome = (Vec<Message>, Option<Error>, usize, Vec<u8>, State);

fn decode_soup(wire: &[u8], chunks: &[usize], config: Config) -> Outcome {
    let mut server = Connection::new(Role::Server, config);
    let (msgs, err, left) = deliver(&mut server, wire, chunks);
    let out = drain(&mut server);
    (msgs, err, left, out, server.state())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Client to server: the same messages come out, in order, for any split of the wire.
    #[test]
    fn client_to_server(plan in plan(), there in chunking(), back in chunking()) {
        check_roundtrip(Role::Client, &plan, &there, &back)?;
    }

    /// Server to client, likewise.
    #[test]
    fn server_to_client(plan in plan(), there in chunking(), back in chunking()) {
        check_roundtrip(Role::Server, &plan, &there, &back)?;
    }

    /// A client masks what it sends; undoing the mask gives the payload back, both by hand
    /// with the key from the header and through a server connection.
    #[test]
    fn masked_payload_unmasks_to_the_original(payload in binary(), chunks in chunking()) {
        let mut client = Connection::new(Role::Client, Config::default());
        client.send(Message::Binary(payload.clone())).unwrap();
        let wire = drain(&mut client);

        prop_assert_eq!(wire[0], 0x82);
        prop_assert!(wire[1] & 0x80 != 0, "client frames are masked");
        let start = match wire[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let key: [u8; 4] = wire[start..start + 4].try_into().unwrap();
        let on_wire = &wire[start + 4..];
        prop_assert_eq!(on_wire.len(), payload.len());
        let by_hand: Vec<u8> = on_wire.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        prop_assert_eq!(&by_hand[..], &payload[..]);
        let mut with_lib = on_wire.to_vec();
        apply_mask(&mut with_lib, key);
        prop_assert_eq!(&with_lib[..], &payload[..]);

        let mut server = Connection::new(Role::Server, Config::default());
        let (msgs, err, left) = deliver(&mut server, &wire, &chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(msgs, vec![Message::Binary(payload)]);
    }

    /// `apply_mask` is a bytewise XOR with the repeating key, undoes itself, and gives the same
    /// result when applied piecewise with `apply_mask_at`, at any alignment.
    #[test]
    fn mask_roundtrip(
        data in vec(any::<u8>(), 0..600),
        key in any::<[u8; 4]>(),
        shift in 0usize..8,
        mut cuts in vec(any::<Index>(), 0..5),
    ) {
        // `shift` moves the data within its allocation so every alignment is exercised.
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(&data);
        apply_mask(&mut buf[shift..], key);
        let xor: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        prop_assert_eq!(&buf[shift..], &xor[..]);

        let mut pieces = buf[shift..].to_vec();
        let mut bounds: Vec<usize> = cuts.drain(..).map(|c| c.index(data.len() + 1)).collect();
        bounds.push(0);
        bounds.push(data.len());
        bounds.sort_unstable();
        for w in bounds.windows(2) {
            apply_mask_at(&mut pieces[w[0]..w[1]], key, w[0]);
        }
        prop_assert_eq!(&pieces[..], &data[..]);

        apply_mask(&mut buf[shift..], key);
        prop_assert_eq!(&buf[shift..], &data[..]);
    }

    /// Any stream of frames, valid or not, decodes the same way (same messages, same error,
    /// same bytes queued) whole, one byte at a time, or in random pieces; it never panics; and
    /// a failure always queues exactly one close frame.
    #[test]
    fn decoding_does_not_depend_on_splits(
        frames in vec(soup_frame(), 0..12),
        chunks in vec(1usize..20, 1..6),
        small in any::<bool>(),
    ) {
        let wire: Vec<u8> = frames.concat();
        let config = if small {
            Config::default().max_frame_size(32).max_message_size(64)
        } else {
            Config::default()
        };
        let whole = decode_soup(&wire, &[usize::MAX], config);
        let bytewise = decode_soup(&wire, &[1], config);
        let pieces = decode_soup(&wire, &chunks, config);
        prop_assert_eq!(&whole.0, &bytewise.0);
        prop_assert_eq!(&whole.1, &bytewise.1);
        prop_assert_eq!(&whole.3, &bytewise.3);
        prop_assert_eq!(whole.4, bytewise.4);
        prop_assert_eq!(&whole.0, &pieces.0);
        prop_assert_eq!(&whole.1, &pieces.1);
        prop_assert_eq!(&whole.3, &pieces.3);
        prop_assert_eq!(whole.4, pieces.4);

        let (msgs, err, _, out, state) = whole;
        // What the server queued: a pong for every ping, then a close frame (the echo of a
        // received close, or the failure's code), all unmasked.
        let mut queued = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            prop_assert!(rest[1] <= 125, "only control frames are queued");
            let len = usize::from(rest[1]);
            queued.push((rest[0], rest[2..2 + len].to_vec()));
            rest = &rest[2 + len..];
        }
        let pongs: Vec<(u8, Vec<u8>)> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::Ping(p) => Some((0x8a, p.to_vec())),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&queued[..pongs.len()], &pongs[..]);
        let close = &queued[pongs.len()..];
        if let Some(err) = err {
            let code = err.close_code().expect("decoding errors are protocol errors");
            prop_assert_eq!(close.len(), 1);
            prop_assert_eq!(close[0].0, 0x88);
            prop_assert_eq!(&close[0].1[..2], &code.0.to_be_bytes()[..]);
            prop_assert!(std::str::from_utf8(&close[0].1[2..]).is_ok());
            prop_assert_eq!(state, State::Closed);
        } else if let Some(Message::Close(frame)) = msgs.last() {
            let echo = frame.as_ref().map(|f| f.code.0.to_be_bytes().to_vec()).unwrap_or_default();
            prop_assert_eq!(close, &[(0x88, echo)][..]);
            prop_assert_eq!(state, State::Closed);
        } else {
            prop_assert!(close.is_empty());
            prop_assert_eq!(state, State::Open);
        }
        // Text always comes out as valid UTF-8 (the type guarantees it; check the bytes).
        for msg in &msgs {
            if let Message::Text(t) = msg {
                prop_assert!(std::str::from_utf8(t.as_bytes()).is_ok());
            }
        }
    }
}
