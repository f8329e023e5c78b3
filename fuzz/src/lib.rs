//! The checks behind the fuzz targets, one public function per target.
//!
//! Each function takes the fuzzer's bytes, drives one part of the engine with them and asserts
//! its invariants: no panic, no memory past the configured limits, every frame the engine
//! emits re-parses into the same header, and the same result whether the bytes arrive whole
//! or in arbitrary pieces. The libFuzzer targets in `fuzz_targets/` call them, and so does
//! `crates/proto/tests/fuzz_corpus.rs`, which replays the committed corpus on the stable
//! toolchain as part of `cargo test` (it includes this file as a module, so it must only use
//! `duplex_proto`, `bytes` and `http`).
//!
//! Memory is measured with [`CountingAlloc`], a global allocator that counts live bytes per
//! thread: the fuzz targets and the corpus test install it; without it the memory checks are
//! skipped.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, BytesMut};
use duplex_proto::close::MAX_REASON_LEN;
use duplex_proto::deflate::codec::{Deflater, Inflater};
use duplex_proto::deflate::negotiate::{client_accept, client_offer, server_accept};
use duplex_proto::deflate::{DeflateConfig, DeflateParams, EXTENSION_NAME};
use duplex_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use duplex_proto::handshake::accept_key;
use duplex_proto::handshake::client::ClientHandshake;
use duplex_proto::handshake::extensions::{self, Extension};
use duplex_proto::handshake::head::{parse_request, parse_response, write_response, HeadLimits};
use duplex_proto::handshake::server::{reject_error, UpgradeRequest};
use duplex_proto::handshake::HandshakeError;
use duplex_proto::recv::Receiver;
use duplex_proto::{CloseFrame, Config, Connection, Error, Message, Role, State};

// ---------------------------------------------------------------------------------------------
// Memory accounting.

/// A global allocator that forwards to the system allocator and counts the bytes each thread
/// has live, and the peak since [`measure`] started.
#[derive(Debug)]
pub struct CountingAlloc;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grow(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(bytes);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrink(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain thread-local
// cells without destructors, so touching them never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            INSTALLED.store(true, Ordering::Relaxed);
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            INSTALLED.store(true, Ordering::Relaxed);
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            shrink(layout.size());
            grow(new_size);
        }
        p
    }
}

/// Runs `f` and returns its result with the most bytes this thread had allocated at once
/// during it, above what it had before (`None` when [`CountingAlloc`] is not installed).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Option<usize>) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    (out, INSTALLED.load(Ordering::Relaxed).then_some(peak))
}

fn assert_memory(what: &str, peak: Option<usize>, bound: usize) {
    if let Some(peak) = peak {
        assert!(
            peak <= bound,
            "{what}: {peak} bytes allocated at once, more than the bound of {bound}"
        );
    }
}

/// What zlib-rs keeps per codec, with room to spare: an inflate state is ~10 KiB plus its
/// window (at most 32 KiB), a deflate state at most ~350 KiB at 15 window bits.
const CODEC_STATES: usize = 1 << 20;

/// [`Inflater`] grows its output by at most this much past the limit.
const INFLATE_STEP: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Input helpers.

/// A small deterministic generator for split points, seeded from the input.
struct Splits(u32);

impl Splits {
    fn new(seed: u8) -> Self {
        Splits(0x9e37_79b9 ^ u32::from(seed).wrapping_mul(0x0101_0101))
    }

    fn next(&mut self) -> u32 {
        // xorshift32
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// The next piece length: mostly tiny, sometimes large.
    fn piece(&mut self) -> usize {
        let r = self.next();
        match r % 8 {
            0..=3 => 1 + (r >> 8) as usize % 4,
            4..=6 => 1 + (r >> 8) as usize % 64,
            _ => 1 + (r >> 8) as usize % 4096,
        }
    }

    /// Cuts `data` into pieces.
    fn cut<'a>(&mut self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.piece().min(data.len());
            out.push(&data[..n]);
            data = &data[n..];
        }
        out
    }
}

/// Limits the receive targets run with: small, so that an allocation sized by a default
/// (16 MiB) instead of the configured limit shows up.
fn limits(bits: u8) -> Config {
    let (frame, message) = match bits % 5 {
        0 => (125, 125),
        1 => (1024, 4096),
        2 => (4096, 1024),
        3 => (4096, 65536),
        _ => (65536, 1 << 20),
    };
    Config::default()
        .max_frame_size(frame)
        .max_message_size(message)
}

/// Deflate parameters for a connection, from one byte.
fn deflate_params(bits: u8) -> DeflateParams {
    DeflateParams {
        compress_window_bits: 9 + (bits & 0x7) % 7,
        compress_reset: bits & 0x08 != 0,
        decompress_window_bits: 9 + ((bits >> 4) & 0x7) % 7,
        decompress_reset: bits & 0x80 != 0,
        level: 1,
        threshold: 0,
    }
}

/// The parameters of the other end of a connection that agreed `p`.
fn mirror(p: &DeflateParams) -> DeflateParams {
    DeflateParams {
        compress_window_bits: p.decompress_window_bits,
        compress_reset: p.decompress_reset,
        decompress_window_bits: p.compress_window_bits,
        decompress_reset: p.compress_reset,
        level: p.level,
        threshold: p.threshold,
    }
}

fn other(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

// ---------------------------------------------------------------------------------------------
// Frames.

/// What decoding a stream gave: the messages in order, then the error that stopped it, if any.
type Events = Vec<Result<Message, Error>>;

/// Checks that a decoded message respects the limits.
fn check_message(msg: &Message, config: &Config) {
    match msg {
        Message::Text(_) | Message::Binary(_) => assert!(
            msg.len() <= config.max_message_size,
            "a message of {} bytes passed the limit of {}",
            msg.len(),
            config.max_message_size
        ),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
        Message::Close(Some(f)) => assert!(f.reason.len() <= MAX_REASON_LEN),
        Message::Close(None) => {}
    }
}

/// Feeds `pieces` to `receive`, one after the other, collecting everything decoded; checks
/// after each piece that what stays buffered is at most a frame.
fn drive(
    pieces: &[&[u8]],
    config: &Config,
    mut receive: impl FnMut(&mut BytesMut) -> Result<Option<Message>, Error>,
    mut finished: impl FnMut() -> bool,
    mut on_message: impl FnMut(&Message),
) -> Events {
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match receive(&mut buf) {
                Ok(Some(msg)) => {
                    check_message(&msg, config);
                    on_message(&msg);
                    events.push(Ok(msg));
                }
                Ok(None) => break,
                Err(e) => {
                    events.push(Err(e));
                    return events;
                }
            }
        }
        if finished() {
            return events;
        }
        // Between calls the buffer holds a partial header or a partial payload, never more.
        assert!(
            buf.len() < MAX_HEADER_LEN.max(config.max_frame_size),
            "{} bytes left buffered with frames limited to {}",
            buf.len(),
            config.max_frame_size
        );
    }
    events
}

/// `frame` target: frame headers at every frame boundary of a byte stream, and a
/// [`Receiver`] fed the stream whole, a byte at a time and in random pieces.
///
/// Input: one byte of settings (role, limits, deflate), one byte seeding the split points,
/// then the stream.
pub fn frame(data: &[u8]) {
    let [settings, seed, stream @ ..] = data else {
        return;
    };
    headers(stream);

    let role = if settings & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let config = limits((settings >> 1) & 0x7);
    let deflate = (settings & 0x80 != 0).then(|| deflate_params(seed.rotate_left(3)));
    let run = |pieces: &[&[u8]]| {
        let mut rx = Receiver::new(role, config);
        rx.set_deflate(deflate.as_ref());
        let events = {
            let rx = std::cell::RefCell::new(&mut rx);
            drive(
                pieces,
                &config,
                |buf| rx.borrow_mut().receive(buf),
                || rx.borrow().is_finished(),
                |_| {},
            )
        };
        assert!(rx.read_hint() <= config.max_frame_size);
        events
    };
    let (whole, peak) = measure(|| run(&[stream]));
    let bound = 4 * stream.len() + 2 * config.max_message_size + INFLATE_STEP + CODEC_STATES;
    assert_memory("receiver", peak, bound);

    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte at a time differs from whole");
    let pieces = Splits::new(*seed).cut(stream);
    assert_eq!(run(&pieces), whole, "random pieces differ from whole");
}

/// Frame header invariants at each frame boundary of `stream`.
fn headers(stream: &[u8]) {
    let mut pos = 0;
    while pos < stream.len() {
        let buf = &stream[pos..];
        let (head, len) = match FrameHeader::parse(buf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                assert!(buf.len() < MAX_HEADER_LEN);
                return;
            }
            Err(_) => {
                // Look for more headers past the bad byte.
                pos += 1;
                continue;
            }
        };
        let expect_len =
            2 + match buf[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            } + if head.mask.is_some() { 4 } else { 0 };
        assert_eq!(len, expect_len, "header length");
        assert!(head.payload_len >> 63 == 0);
        // Every proper prefix is "need more", the exact header parses the same.
        for cut in 0..len {
            assert_eq!(FrameHeader::parse(&buf[..cut]), Ok(None), "prefix of {cut}");
        }
        assert_eq!(FrameHeader::parse(&buf[..len]), Ok(Some((head, len))));
        // Encoding gives the minimal form, which parses back into the same header; when the
        // input already was minimal, it is byte for byte the input.
        let enc = head.encode();
        let enc = enc.as_slice();
        assert!(enc.len() <= len);
        assert_eq!(FrameHeader::parse(enc), Ok(Some((head, enc.len()))));
        if enc.len() == len {
            assert_eq!(enc, &buf[..len]);
        }
        let payload = usize::try_from(head.payload_len).unwrap_or(usize::MAX);
        pos = pos.saturating_add(len).saturating_add(payload);
    }
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// What a connection must send in answer to `events` when it echoes every data message back.
fn expected_replies(events: &Events) -> Vec<Message> {
    let mut out = Vec::new();
    for event in events {
        match event {
            Ok(Message::Ping(p)) => out.push(Message::Pong(p.clone())),
            Ok(Message::Pong(_)) => {}
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => out.push(msg.clone()),
            Ok(Message::Close(frame)) => {
                let echo = frame.as_ref().map(|f| CloseFrame::new(f.code, ""));
                out.push(Message::Close(echo));
                break;
            }
            Err(e) => {
                if let Some(code) = e.close_code() {
                    let reason = e.to_string();
                    let mut end = reason.len().min(MAX_REASON_LEN);
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    out.push(Message::Close(Some(CloseFrame::new(
                        code,
                        reason[..end].to_owned(),
                    ))));
                }
                break;
            }
        }
    }
    out
}

/// Re-parses every frame a sender of `role` queued: each header must parse and re-encode to
/// exactly the bytes sent, and follow the rules for `role`. Returns the bytes.
fn check_sent_frames(
    queue: &mut duplex_proto::send::SendQueue,
    role: Role,
    deflate: bool,
) -> Vec<u8> {
    let mut wire = Vec::with_capacity(queue.remaining());
    while queue.has_remaining() {
        let chunk = queue.chunk();
        wire.extend_from_slice(chunk);
        let n = chunk.len();
        queue.advance(n);
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let (head, len) = match FrameHeader::parse(rest) {
            Ok(Some(parsed)) => parsed,
            other => panic!("the sender queued a frame that does not parse: {other:?}"),
        };
        assert_eq!(
            head.encode().as_slice(),
            &rest[..len],
            "header re-encodes differently"
        );
        assert_eq!(
            head.mask.is_some(),
            role == Role::Client,
            "masking for {role:?}"
        );
        assert!(!head.rsv2 && !head.rsv3);
        if head.rsv1 {
            assert!(deflate && matches!(head.opcode, OpCode::Text | OpCode::Binary));
        }
        if head.opcode.is_control() {
            assert!(head.fin && head.payload_len <= 125);
        }
        let total = len as u64 + head.payload_len;
        assert!(
            total <= rest.len() as u64,
            "the sender queued a truncated frame"
        );
        rest = &rest[total as usize..];
    }
    wire
}

/// `connection` target: a whole [`Connection`], in either role, that echoes every message it
/// receives, fed the stream whole and in random pieces. Both runs must decode the same
/// messages and end the same way; what the connection sends (pongs, echoes, the close reply
/// or the failure's close frame) must re-parse frame by frame and decode, at the peer, into
/// exactly the replies the protocol requires.
///
/// Input: settings byte (role, limits, deflate on), deflate parameters byte, split seed, then
/// the stream.
pub fn connection(data: &[u8]) {
    let [settings, deflate_bits, seed, stream @ ..] = data else {
        return;
    };
    let role = if settings & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let config = limits((settings >> 1) & 0x7);
    let deflate = (settings & 0x80 != 0).then(|| deflate_params(*deflate_bits));

    let run = |pieces: &[&[u8]]| {
        let mut conn = Connection::new(role, config);
        conn.set_deflate(deflate);
        let events = {
            let conn = std::cell::RefCell::new(&mut conn);
            drive(
                pieces,
                &config,
                |buf| conn.borrow_mut().receive(buf),
                || conn.borrow_mut().state() == State::Closed,
                |msg| {
                    if msg.is_text() || msg.is_binary() {
                        let mut conn = conn.borrow_mut();
                        let sent = conn.send(msg.clone());
                        match conn.state() {
                            State::Open | State::CloseReceived => sent.expect("echo"),
                            _ => assert_eq!(sent, Err(Error::AlreadyClosed)),
                        }
                    }
                },
            )
        };
        if matches!(events.last(), Some(Err(_)) | Some(Ok(Message::Close(_)))) {
            assert_eq!(conn.state(), State::Closed);
        }
        let wire = check_sent_frames(conn.send_queue(), role, deflate.is_some());
        (events, wire)
    };
    let ((whole, wire), peak) = measure(|| run(&[stream]));
    // The input, its copy in the receive buffer, the echoes (each at most a message, copied
    // into the send queue, compressed or masked), and the codec states.
    let bound = 8 * stream.len() + 4 * config.max_message_size + INFLATE_STEP + 2 * CODEC_STATES;
    assert_memory("connection", peak, bound);

    // The peer decodes exactly the replies, and nothing is left over.
    let mut peer = Receiver::new(other(role), Config::default());
    peer.set_deflate(deflate.as_ref().map(mirror).as_ref());
    let mut buf = BytesMut::from(&wire[..]);
    let mut replies = Vec::new();
    loop {
        match peer.receive(&mut buf) {
            Ok(Some(msg)) => replies.push(msg),
            Ok(None) => break,
            Err(e) => panic!("the peer cannot decode what was sent: {e} after {replies:?}"),
        }
    }
    assert!(buf.is_empty(), "{} bytes after the last reply", buf.len());
    assert_eq!(replies, expected_replies(&whole));

    let pieces = Splits::new(*seed).cut(stream);
    let (split, split_wire) = run(&pieces);
    assert_eq!(split, whole, "random pieces differ from whole");
    if role == Role::Server {
        // Unmasked, so the bytes themselves must be the same.
        assert_eq!(split_wire, wire);
    }
}

// ---------------------------------------------------------------------------------------------
// Handshakes.

/// Cut points to try on a head of `len` bytes: all of a short one, a sample of a long one.
fn cuts(len: usize) -> Vec<usize> {
    if len <= 64 {
        (0..len).collect()
    } else {
        let mut v: Vec<usize> = (0..16).chain(len - 16..len).collect();
        v.extend((1..16).map(|i| len * i / 16));
        v
    }
}

fn head_limits() -> [HeadLimits; 2] {
    [
        HeadLimits::default(),
        HeadLimits {
            max_bytes: 256,
            max_headers: 8,
        },
    ]
}

/// Writes `resp`, parses it back and checks that it says the same.
fn response_roundtrip<B: AsRef<[u8]>>(resp: &http::Response<B>) {
    let mut out = Vec::new();
    write_response(resp, &mut out);
    let (back, len) = parse_response(&out, HeadLimits::default())
        .expect("our own response parses")
        .expect("our own response is complete");
    assert_eq!(back.status(), resp.status());
    for (name, value) in resp.headers() {
        assert!(
            back.headers().get_all(name).iter().any(|v| v == value),
            "header {name} lost"
        );
    }
    assert_eq!(&out[len..], resp.body().as_ref());
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let declared = back.headers()[http::header::CONTENT_LENGTH]
            .to_str()
            .unwrap();
        assert_eq!(declared, resp.body().as_ref().len().to_string());
    }
}

/// Checks a rejection: a client error status, and a response that writes and parses back.
fn check_rejection(err: &HandshakeError) {
    let resp = reject_error(err);
    // 4xx, or 505 for a request older than HTTP/1.1.
    assert!(
        resp.status().is_client_error()
            || resp.status() == http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        "{err} answered {}",
        resp.status()
    );
    response_roundtrip(&resp);
}

/// `handshake_request` target: a server reading a client's request head.
///
/// Parses with the default limits and with small ones, checks that the limits hold, that every
/// prefix of a complete head is "incomplete" (so a trickled request parses the same), then
/// validates it and checks the response (101 with the right accept key and a valid extension
/// answer, or a 4xx rejection) writes and parses back.
pub fn handshake_request(data: &[u8]) {
    for limits in head_limits() {
        let ((), peak) = measure(|| request_with(data, limits));
        // Headers are copied into `http` types once or twice, the response written once.
        assert_memory("request", peak, 16 * data.len() + 64 * 1024);
    }
}

fn request_with(data: &[u8], limits: HeadLimits) {
    let (req, len) = match parse_request(data, limits) {
        Ok(None) => {
            assert!(data.len() < limits.max_bytes);
            return;
        }
        Err(e) => return check_rejection(&e),
        Ok(Some(parsed)) => parsed,
    };
    assert!(len <= data.len() && len <= limits.max_bytes);
    assert!(req.headers().len() <= limits.max_headers);
    for cut in cuts(len) {
        assert!(
            matches!(parse_request(&data[..cut], limits), Ok(None)),
            "a prefix of {cut} of a {len}-byte head is not just incomplete"
        );
    }
    let (again, _) = parse_request(&data[..len], limits).unwrap().unwrap();
    assert_eq!(again.uri(), req.uri());
    assert_eq!(again.headers(), req.headers());

    let up = match UpgradeRequest::validate(&req) {
        Ok(up) => up,
        Err(e) => return check_rejection(&e),
    };
    let key = req.headers()[http::header::SEC_WEBSOCKET_KEY].as_bytes();
    let protocol = up.select_protocol(&["chat", "superchat"]);
    if let Some(p) = protocol {
        assert!(up.protocols().iter().any(|o| o == p));
    }
    let mut resp = up.accept(protocol);
    assert_eq!(
        resp.headers()[http::header::SEC_WEBSOCKET_ACCEPT].as_bytes(),
        accept_key(key).as_bytes()
    );
    for config in [
        DeflateConfig::default(),
        DeflateConfig::default()
            .window_bits(15)
            .no_context_takeover(true),
    ] {
        if let Some((answer, params)) = server_accept(up.extensions(), &config) {
            check_server_params(&params, &config);
            let text = answer.to_string();
            assert_eq!(extensions::parse(&text).unwrap(), vec![answer]);
            resp.headers_mut().insert(
                http::header::SEC_WEBSOCKET_EXTENSIONS,
                http::HeaderValue::from_str(&text).expect("a valid header value"),
            );
        }
    }
    response_roundtrip(&resp.map(|()| Vec::<u8>::new()));
}

fn check_server_params(p: &DeflateParams, config: &DeflateConfig) {
    assert!((9..=15).contains(&p.compress_window_bits));
    assert!(p.compress_window_bits <= config.window_bits);
    assert!((8..=15).contains(&p.decompress_window_bits));
    if config.no_context_takeover {
        assert!(p.compress_reset);
    }
}

/// The accept key of RFC 6455 section 1.3: a response holding it gets the right key for the
/// handshake in progress instead, so the fuzzer can get past the key check.
const RFC_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// `handshake_response` target: a client reading the server's answer to its request (which
/// offers two subprotocols and permessage-deflate).
///
/// Checks the limits and prefixes like [`handshake_request`]; a response that validates
/// names only what was offered, and the deflate parameters it agrees work in both directions.
pub fn handshake_response(data: &[u8]) {
    let uri: http::Uri = "ws://example.com/chat".parse().unwrap();
    for config in [
        DeflateConfig::default(),
        DeflateConfig::default()
            .window_bits(15)
            .no_context_takeover(true),
    ] {
        let hs = ClientHandshake::new(&uri)
            .unwrap()
            .protocol("chat")
            .protocol("superchat")
            .extension(client_offer(&config));
        let accept = accept_key(hs.key().as_bytes());
        let mut data = data.to_vec();
        let mut i = 0;
        while i + RFC_ACCEPT.len() <= data.len() {
            if &data[i..i + RFC_ACCEPT.len()] == RFC_ACCEPT {
                data[i..i + RFC_ACCEPT.len()].copy_from_slice(accept.as_bytes());
                i += RFC_ACCEPT.len();
            } else {
                i += 1;
            }
        }
        for limits in head_limits() {
            let ((), peak) = measure(|| response_with(&hs, &config, &data, limits));
            assert_memory("response", peak, 16 * data.len() + CODEC_STATES);
        }
    }
}

fn response_with(hs: &ClientHandshake, config: &DeflateConfig, data: &[u8], limits: HeadLimits) {
    let (resp, len) = match parse_response(data, limits) {
        Ok(None) => {
            assert!(data.len() < limits.max_bytes);
            return;
        }
        Err(_) => return,
        Ok(Some(parsed)) => parsed,
    };
    assert!(len <= data.len() && len <= limits.max_bytes);
    assert!(resp.headers().len() <= limits.max_headers);
    for cut in cuts(len) {
        assert!(
            matches!(parse_response(&data[..cut], limits), Ok(None)),
            "a prefix of {cut} of a {len}-byte head is not just incomplete"
        );
    }
    let Ok(negotiated) = hs.validate(&resp) else {
        return;
    };
    if let Some(p) = &negotiated.protocol {
        assert!(p == "chat" || p == "superchat");
    }
    for ext in &negotiated.extensions {
        assert!(ext.name.eq_ignore_ascii_case(EXTENSION_NAME));
        let Ok(params) = client_accept(ext, config) else {
            continue;
        };
        assert!((9..=15).contains(&params.compress_window_bits));
        assert!(params.compress_window_bits <= config.window_bits);
        assert!((8..=15).contains(&params.decompress_window_bits));
        // What the client compresses, a server with the mirrored parameters inflates.
        codec_roundtrip(
            &params,
            &mirror(&params),
            &[b"Hello, Hello, Hello", b"Hello"],
        );
    }
}

/// Compresses `messages` with `ours` and inflates them with `theirs`.
fn codec_roundtrip(ours: &DeflateParams, theirs: &DeflateParams, messages: &[&[u8]]) {
    let mut deflater = Deflater::new(ours);
    let mut inflater = Inflater::new(theirs);
    for msg in messages {
        let packed = deflater.compress(msg).expect("compress");
        let mut out = Vec::new();
        let max = msg.len();
        inflater
            .inflate(&packed, &mut out, max)
            .and_then(|()| inflater.finish(&mut out, max))
            .unwrap_or_else(|e| panic!("{ours:?} -> {theirs:?}: {e}"));
        assert_eq!(&out[..], *msg);
    }
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate.

fn deflate_config(bits: u8) -> DeflateConfig {
    DeflateConfig::default()
        .window_bits(9 + (bits & 0x7) % 7)
        .no_context_takeover(bits & 0x08 != 0)
        .peer_no_context_takeover(bits & 0x10 != 0)
}

/// `extensions` target: the `Sec-WebSocket-Extensions` grammar and permessage-deflate
/// negotiation.
///
/// Input: a byte of server settings, a byte of client settings, then a header value. Parsed
/// extensions print and re-parse to themselves; a server's answer to any offer is within its
/// settings and re-parses. Independently of the header, a duplex client's offer for the
/// client settings is accepted by a duplex server with the server settings, the client accepts
/// the answer, both agree on windows and context takeover, and messages (the header bytes)
/// cross in both directions.
pub fn extensions(data: &[u8]) {
    let [server_bits, client_bits, header @ ..] = data else {
        return;
    };
    let server = deflate_config(*server_bits);
    let client = deflate_config(*client_bits);
    if let Ok(text) = std::str::from_utf8(header) {
        if let Ok(exts) = extensions::parse(text) {
            for ext in &exts {
                assert_eq!(
                    extensions::parse(&ext.to_string()).unwrap(),
                    vec![ext.clone()]
                );
            }
            if let Some((answer, params)) = server_accept(&exts, &server) {
                check_server_params(&params, &server);
                assert_eq!(
                    extensions::parse(&answer.to_string()).unwrap(),
                    vec![answer]
                );
            }
        }
    }

    let offer: Vec<Extension> = extensions::parse(&client_offer(&client).to_string()).unwrap();
    let (answer, sp) = server_accept(&offer, &server).expect("the server takes our offer");
    let answer = extensions::parse(&answer.to_string()).unwrap();
    let cp = client_accept(&answer[0], &client).expect("the client takes our answer");
    assert!(cp.compress_window_bits <= sp.decompress_window_bits);
    assert!(sp.compress_window_bits <= cp.decompress_window_bits);
    // A side that resets its compressor may be decoded by a peer that keeps context, never the
    // other way round.
    assert!(cp.compress_reset || !sp.decompress_reset);
    assert!(sp.compress_reset || !cp.decompress_reset);
    let msgs: [&[u8]; 3] = [header, header, b"tail"];
    codec_roundtrip(&cp, &sp, &msgs);
    codec_roundtrip(&sp, &cp, &msgs);
}

/// `inflate` target: the permessage-deflate decompressor with an output limit.
///
/// Input: a settings byte (window, context takeover, limit), a split seed, then compressed
/// bytes, inflated as two consecutive messages, whole and in random frame-sized pieces. The
/// output never passes the limit by more than one step, memory stays within the limit plus
/// the codec state, and whole and pieces agree. Then the bytes themselves, compressed and
/// inflated, come back unchanged, and with a limit one byte short fail as too large.
pub fn inflate(data: &[u8]) {
    let [settings, seed, rest @ ..] = data else {
        return;
    };
    let bits = 9 + (settings & 0x7) % 7;
    let params = DeflateParams {
        compress_window_bits: bits,
        compress_reset: settings & 0x08 != 0,
        decompress_window_bits: bits,
        decompress_reset: settings & 0x08 != 0,
        level: [0, 1, 6, 9][usize::from(settings >> 6)],
        threshold: 0,
    };
    let max = [0, 1000, 64 * 1024, 1 << 20][usize::from((settings >> 4) & 3)];

    let run = |pieces: &[&[u8]]| {
        let mut inflater = Inflater::new(&params);
        let mut results = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::new();
            let mut result = Ok(());
            for piece in pieces {
                result = inflater.inflate(piece, &mut out, max);
                assert!(out.len() <= max + INFLATE_STEP);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                result = inflater.finish(&mut out, max);
            }
            assert!(
                out.capacity() <= max + 1 + 2 * INFLATE_STEP,
                "inflated into {} bytes of capacity with a limit of {max}",
                out.capacity()
            );
            match result {
                Ok(()) => {
                    assert!(out.len() <= max);
                    results.push(Ok(out));
                }
                Err(e) => {
                    if let Error::MessageTooLarge { size, max: m } = &e {
                        assert_eq!(*m, max);
                        assert!(*size > max as u64);
                    }
                    // The connection fails here: the inflater is not used again.
                    results.push(Err(e));
                    break;
                }
            }
        }
        results
    };
    let (whole, peak) = measure(|| run(&[rest]));
    assert_memory(
        "inflate",
        peak,
        2 * rest.len() + max + 2 * INFLATE_STEP + CODEC_STATES,
    );
    let pieces = Splits::new(*seed).cut(rest);
    let split = run(&pieces);
    // The outcome and the output agree; the error message may differ by where it was found.
    assert_eq!(whole.len(), split.len());
    for (w, s) in whole.iter().zip(&split) {
        match (w, s) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "whole and pieces inflate differently"),
            (Err(a), Err(b)) => assert_eq!(a.close_code(), b.close_code()),
            _ => panic!("whole gave {w:?}, pieces {s:?}"),
        }
    }

    // Round trip of the raw bytes, at the exact limit and one byte under it.
    let mut deflater = Deflater::new(&params);
    let packed = deflater.compress(rest).expect("compress");
    let mut inflater = Inflater::new(&params);
    let mut out = Vec::new();
    inflater
        .inflate(&packed, &mut out, rest.len())
        .and_then(|()| inflater.finish(&mut out, rest.len()))
        .expect("inflate what we compressed");
    assert_eq!(out, rest);
    if !rest.is_empty() {
        let mut inflater = Inflater::new(&params);
        let mut out = Vec::new();
        let short = rest.len() - 1;
        let result = inflater
            .inflate(&packed, &mut out, short)
            .and_then(|()| inflater.finish(&mut out, short));
        assert!(
            matches!(result, Err(Error::MessageTooLarge { .. })),
            "{result:?}"
        );
    }
}

/// A target's check.
pub type Check = fn(&[u8]);

/// The targets by name, for tools that replay a corpus.
pub const TARGETS: [(&str, Check); 6] = [
    ("frame", frame),
    ("connection", connection),
    ("handshake_request", handshake_request),
    ("handshake_response", handshake_response),
    ("extensions", extensions),
    ("inflate", inflate),
];
