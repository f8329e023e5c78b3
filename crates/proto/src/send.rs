//! The sending half of a connection: encodes messages into frames and queues their bytes.
//!
//! Bytes wait in a [`SendQueue`], which implements [`bytes::Buf`] with `chunks_vectored`, so an
//! I/O layer writes header and payload together with one vectored write. Small frames are
//! copied into one contiguous buffer (one write for many frames); large unmasked payloads are
//! queued by reference and never copied.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::codec::{Deflater, Shareable};
use crate::deflate::DeflateParams;
use crate::error::Error;
use crate::frame::{FrameHeader, OpCode};
use crate::mask::apply_mask;
use crate::message::Message;
use crate::Role;

/// Payloads up to this size are copied next to their header: one small copy is cheaper than
/// one more I/O vector, and consecutive small frames coalesce into a single write.
const COPY_THRESHOLD: usize = 2048;

/// Above this capacity an emptied coalescing buffer is freed rather than kept, so a connection
/// that once sent a large burst does not hold the memory while idle; below it, a busy
/// connection's bursts of small frames reuse one buffer. (The async layer hands an emptied
/// buffer to a pool anyway, so an idle connection holds none.)
const KEEP_CAPACITY: usize = 64 * 1024;

/// Bytes waiting to be written, in order.
///
/// ```
/// use bytes::Buf;
/// use duplex_proto::{Connection, Message, Role};
/// let mut conn = Connection::new(Role::Server, Default::default());
/// conn.send(Message::text("Hello")).unwrap();
/// let out = conn.send_queue();
/// assert_eq!(out.chunk(), [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
/// out.advance(out.remaining());
/// assert!(!out.has_remaining());
/// ```
#[derive(Debug, Default)]
pub struct SendQueue {
    /// Frozen chunks, written before `tail`.
    chunks: VecDeque<Bytes>,
    /// Where headers and small payloads are appended.
    tail: BytesMut,
    /// Bytes in `chunks`.
    chunked: usize,
}

impl SendQueue {
    /// Appends raw bytes (for instance a frame encoded once and shared by many connections).
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if bytes.len() <= COPY_THRESHOLD {
            self.tail.extend_from_slice(&bytes);
        } else {
            self.seal_tail();
            self.chunked += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.chunked += sealed.len();
            self.chunks.push_back(sealed);
        }
    }

    /// Hands out the buffer of an empty queue, for the caller to keep elsewhere while the
    /// connection is idle (the queue allocates again when next used, unless
    /// [`SendQueue::provide`] gives it one).
    ///
    /// ```
    /// use duplex_proto::send::SendQueue;
    /// let mut queue = SendQueue::default();
    /// queue.push_bytes(bytes::Bytes::from_static(b"hi"));
    /// assert!(queue.take_spare().is_none()); // not empty yet
    /// bytes::Buf::advance(&mut queue, 2);
    /// let spare = queue.take_spare().unwrap();
    /// assert!(spare.is_empty() && spare.capacity() > 0);
    /// ```
    pub fn take_spare(&mut self) -> Option<bytes::BytesMut> {
        (self.is_empty() && self.tail.capacity() > 0).then(|| std::mem::take(&mut self.tail))
    }

    /// Whether the queue has a buffer to append small frames to.
    pub fn has_buffer(&self) -> bool {
        self.tail.capacity() > 0
    }

    /// Gives the queue an empty buffer to append to, if it has none (a reused buffer saves
    /// an allocation); otherwise `buf` is dropped.
    pub fn provide(&mut self, buf: bytes::BytesMut) {
        if self.tail.capacity() == 0 && buf.is_empty() {
            self.tail = buf;
        }
    }

    /// Drops everything waiting (a peer that reads nothing is given up on); the buffer is
    /// kept for reuse.
    ///
    /// ```
    /// use duplex_proto::send::SendQueue;
    /// let mut queue = SendQueue::default();
    /// queue.push_bytes(bytes::Bytes::from_static(b"never read"));
    /// queue.discard();
    /// assert!(queue.is_empty());
    /// ```
    pub fn discard(&mut self) {
        let all = self.len();
        self.advance(all);
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.chunked + self.tail.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Buf for SendQueue {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(c) => c,
            None => &self.tail,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                if cnt == self.tail.len() {
                    // All written: the next frames start at the front of the buffer again.
                    // Advancing would give up the written bytes' room until a reserve
                    // reclaims it, which costs a reallocation per message once the buffer
                    // has been shared (with a sealed chunk, or by the read buffer it came
                    // from).
                    self.tail.clear();
                } else {
                    self.tail.advance(cnt);
                }
                break;
            };
            let n = cnt.min(front.len());
            front.advance(n);
            self.chunked -= n;
            cnt -= n;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        if self.tail.is_empty() && self.tail.capacity() > KEEP_CAPACITY {
            self.tail = BytesMut::new();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in self
            .chunks
            .iter()
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[..]))
        {
            if n == dst.len() {
                break;
            }
            if !chunk.is_empty() {
                dst[n] = std::io::IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }
}

/// The sending half of a WebSocket connection.
///
/// It owns the close state of its direction: once a close frame is queued nothing more can be
/// sent. [`Sender::react`] gives the answers the protocol obliges (pong for ping, close for
/// close), so a receiving half that lives elsewhere (another task) only has to hand it the
/// messages it received.
#[derive(Debug)]
pub struct Sender {
    role: Role,
    queue: SendQueue,
    close_sent: bool,
    /// `Some(is_text)` while the application is sending a fragmented message.
    fragmenting: Option<bool>,
    /// Boxed: most connections do not negotiate compression.
    deflater: Option<Box<Deflater>>,
}

/// What a [`Sender`] keeps while nothing is queued (see [`Sender::into_idle`]).
#[derive(Debug)]
pub struct IdleSender {
    role: Role,
    deflater: Option<Box<Deflater>>,
}

impl IdleSender {
    /// The sender again, with an empty queue.
    pub fn resume(self) -> Sender {
        Sender {
            deflater: self.deflater,
            ..Sender::new(self.role)
        }
    }
}

impl Sender {
    /// A sender for `role`: clients mask every frame, servers never do.
    pub fn new(role: Role) -> Self {
        Sender {
            role,
            queue: SendQueue::default(),
            close_sent: false,
            fragmenting: None,
            deflater: None,
        }
    }

    /// Turns on permessage-deflate with the agreed parameters: data messages at least as
    /// large as the threshold are compressed (RSV1 set). Fragments sent with
    /// [`Sender::send_fragment`] and prepared frames go uncompressed, which the extension
    /// allows per message.
    pub fn set_deflate(&mut self, params: Option<&DeflateParams>) {
        self.deflater = params.map(|p| Box::new(Deflater::new(p)));
    }

    /// Queues a message as one frame. Sending [`Message::Close`] starts the close handshake.
    pub fn send(&mut self, msg: Message) -> Result<(), Error> {
        match msg {
            Message::Text(t) => self.send_data(OpCode::Text, t.into_bytes()),
            Message::Binary(b) => self.send_data(OpCode::Binary, b),
            Message::Ping(p) => self.send_control(OpCode::Ping, p),
            Message::Pong(p) => self.send_control(OpCode::Pong, p),
            Message::Close(frame) => self.close(frame),
        }
    }

    fn send_data(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        self.check_open()?;
        if self.fragmenting.is_some() {
            return Err(Error::InvalidFragmentSequence(
                "a fragmented message is still being sent",
            ));
        }
        let mut head = FrameHeader::new(opcode, payload.len() as u64);
        let payload = match self.deflater.as_mut() {
            Some(d) if d.wants(payload.len()) => {
                let packed = Bytes::from(d.compress(&payload)?);
                head.rsv1 = true;
                head.payload_len = packed.len() as u64;
                packed
            }
            _ => payload,
        };
        self.write_frame(head, payload);
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), Error> {
        self.check_open()?;
        if payload.len() > 125 {
            return Err(Error::ControlPayloadTooLong(payload.len()));
        }
        self.write_frame(FrameHeader::new(opcode, payload.len() as u64), payload);
        Ok(())
    }

    /// Queues one fragment of a message the application sends in pieces.
    ///
    /// The first fragment has opcode [`OpCode::Text`] or [`OpCode::Binary`], the following ones
    /// [`OpCode::Continuation`]; `fin` marks the last. Control messages may be sent between
    /// fragments; other data messages may not.
    ///
    /// ```
    /// use duplex_proto::{frame::OpCode, Role, send::Sender};
    /// let mut tx = Sender::new(Role::Server);
    /// tx.send_fragment(OpCode::Text, "Hel".into(), false).unwrap();
    /// tx.send_fragment(OpCode::Continuation, "lo".into(), true).unwrap();
    /// assert_eq!(tx.buffered(), 9); // RFC 6455 section 5.7: 01 03 Hel 80 02 lo
    /// ```
    pub fn send_fragment(
        &mut self,
        opcode: OpCode,
        payload: Bytes,
        fin: bool,
    ) -> Result<(), Error> {
        self.check_open()?;
        match (opcode, self.fragmenting) {
            (OpCode::Text | OpCode::Binary, None) => {}
            (OpCode::Continuation, Some(_)) => {}
            (OpCode::Continuation, None) => {
                return Err(Error::InvalidFragmentSequence(
                    "continuation without a first fragment",
                ))
            }
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(Error::InvalidFragmentSequence(
                    "a fragmented message is still being sent",
                ))
            }
            (_, _) => {
                return Err(Error::InvalidFragmentSequence(
                    "control frames cannot be fragmented",
                ))
            }
        }
        self.fragmenting = if fin {
            None
        } else {
            Some(self.fragmenting.unwrap_or(opcode == OpCode::Text))
        };
        let mut head = FrameHeader::new(opcode, payload.len() as u64);
        head.fin = fin;
        self.write_frame(head, payload);
        Ok(())
    }

    /// Queues a close frame (`None` sends one without a code). Only the first close is sent.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        self.check_open()?;
        let payload = match &frame {
            Some(f) => {
                f.validate()?;
                f.to_payload()
            }
            None => Bytes::new(),
        };
        self.write_frame(
            FrameHeader::new(OpCode::Close, payload.len() as u64),
            payload,
        );
        self.close_sent = true;
        Ok(())
    }

    /// Queues what the protocol obliges in answer to a received message: a pong with the same
    /// payload for a ping, and the echo of the code for a close (RFC 6455 section 5.5.1), unless
    /// a close was already sent.
    pub fn react(&mut self, received: &Message) {
        if self.close_sent {
            return;
        }
        match received {
            Message::Ping(payload) => {
                let payload = payload.clone();
                self.write_frame(
                    FrameHeader::new(OpCode::Pong, payload.len() as u64),
                    payload,
                );
            }
            Message::Close(frame) => {
                let echo = frame.as_ref().map(|f| CloseFrame::new(f.code, ""));
                // The peer's code passed validation on receipt, so this cannot fail.
                let _ = self.close(echo);
            }
            _ => {}
        }
    }

    /// Fails the connection because of `err`: queues a close frame with the error's code and
    /// message (unless a close was already sent). Local errors send nothing.
    pub fn fail(&mut self, err: &Error) {
        if let Some(code) = err.close_code() {
            let _ = self.close(Some(CloseFrame::truncated(code, &err.to_string())));
        }
    }

    /// Starts the closing handshake because the endpoint is going away (1001), if not done yet.
    pub fn going_away(&mut self) {
        let _ = self.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "")));
    }

    /// How this sender compresses when its output can be shared with other connections (see
    /// [`Deflater::shareable`]): `None` without permessage-deflate or with context takeover.
    pub fn shareable_deflate(&self) -> Option<Shareable> {
        self.deflater.as_ref().and_then(|d| d.shareable())
    }

    /// Queues bytes that already form complete frames, for a message encoded once and sent to
    /// many connections. The caller guarantees they are valid for this connection's role
    /// (unmasked frames from a server).
    pub fn send_raw(&mut self, frames: Bytes) -> Result<(), Error> {
        self.check_open()?;
        if self.fragmenting.is_some() {
            return Err(Error::InvalidFragmentSequence(
                "a fragmented message is still being sent",
            ));
        }
        self.queue.push_bytes(frames);
        Ok(())
    }

    /// The sender reduced to what it keeps while nothing is queued (its role and compressor),
    /// for a connection set aside while idle; `Err(self)` when bytes are queued, a fragmented
    /// message is unfinished or a close frame was sent. [`IdleSender::resume`] gives the
    /// sender back.
    ///
    /// ```
    /// use duplex_proto::send::Sender;
    /// use duplex_proto::{Message, Role};
    /// let mut tx = Sender::new(Role::Server);
    /// tx.send(Message::text("queued")).unwrap();
    /// let tx = tx.into_idle().unwrap_err(); // not while something is queued
    /// assert_eq!(tx.buffered(), 8);
    /// ```
    pub fn into_idle(self) -> Result<IdleSender, Sender> {
        if !self.queue.is_empty() || self.fragmenting.is_some() || self.close_sent {
            return Err(self);
        }
        Ok(IdleSender {
            role: self.role,
            deflater: self.deflater,
        })
    }

    /// Whether a message sent in fragments ([`Sender::send_fragment`]) is unfinished.
    pub fn is_fragmenting(&self) -> bool {
        self.fragmenting.is_some()
    }

    /// Whether a close frame has been queued.
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        self.queue.len()
    }

    /// The queue of bytes to write; advance it by what was written.
    pub fn queue(&mut self) -> &mut SendQueue {
        &mut self.queue
    }

    /// `Err(AlreadyClosed)` once a close frame was queued: nothing more may be sent.
    pub fn check_open(&self) -> Result<(), Error> {
        if self.close_sent {
            Err(Error::AlreadyClosed)
        } else {
            Ok(())
        }
    }

    fn write_frame(&mut self, mut head: FrameHeader, payload: Bytes) {
        let q = &mut self.queue;
        match self.role {
            Role::Server => {
                q.tail.extend_from_slice(head.encode().as_slice());
                q.push_bytes(payload);
            }
            Role::Client => {
                // RFC 6455 section 5.3: the key must be unpredictable so that a script cannot
                // choose the bytes that appear on the wire (proxy cache poisoning).
                let key: [u8; 4] = rand::random();
                head.mask = Some(key);
                q.tail.reserve(14 + payload.len());
                q.tail.extend_from_slice(head.encode().as_slice());
                let start = q.tail.len();
                q.tail.put_slice(&payload);
                apply_mask(&mut q.tail[start..], key);
            }
        }
    }
}

/// Encodes one unmasked, final frame into bytes that can be queued on many server connections
/// with [`Sender::send_raw`]: the broadcast path encodes a message once.
///
/// ```
/// use duplex_proto::{send::encode_frame, frame::OpCode};
/// assert_eq!(&encode_frame(OpCode::Text, b"Hello")[..], [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
/// ```
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    encode_head(FrameHeader::new(opcode, payload.len() as u64), payload)
}

/// Like [`encode_frame`], for a payload compressed with permessage-deflate (RSV1 set): the
/// frame of a broadcast compressed once for every connection whose [`Shareable`] parameters
/// produced it.
///
/// ```
/// use duplex_proto::{send::encode_compressed_frame, frame::OpCode};
/// // RFC 7692 section 7.2.3.1: "Hello" compressed, in one frame.
/// let packed = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
/// assert_eq!(encode_compressed_frame(OpCode::Text, &packed)[..2], [0xc1, 0x07]);
/// ```
pub fn encode_compressed_frame(opcode: OpCode, packed: &[u8]) -> Bytes {
    let mut head = FrameHeader::new(opcode, packed.len() as u64);
    head.rsv1 = true;
    encode_head(head, packed)
}

fn encode_head(head: FrameHeader, payload: &[u8]) -> Bytes {
    let head = head.encode();
    let mut out = BytesMut::with_capacity(head.as_slice().len() + payload.len());
    out.put_slice(head.as_slice());
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(tx: &mut Sender) -> Vec<u8> {
        let q = tx.queue();
        let mut out = Vec::new();
        while q.has_remaining() {
            let c = q.chunk().to_vec();
            q.advance(c.len());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn rfc_fragments_and_ping() {
        let mut tx = Sender::new(Role::Server);
        tx.send_fragment(OpCode::Text, "Hel".into(), false).unwrap();
        tx.send(Message::Ping("Hello".into())).unwrap(); // control frames may interleave
        tx.send_fragment(OpCode::Continuation, "lo".into(), true)
            .unwrap();
        assert_eq!(
            drain(&mut tx),
            b"\x01\x03Hel\x89\x05Hello\x80\x02lo".to_vec()
        );
    }

    #[test]
    fn fragment_misuse_is_refused() {
        let mut tx = Sender::new(Role::Server);
        assert!(tx
            .send_fragment(OpCode::Continuation, Bytes::new(), true)
            .is_err());
        tx.send_fragment(OpCode::Binary, Bytes::new(), false)
            .unwrap();
        assert!(tx.send(Message::text("x")).is_err());
        assert!(tx.send_fragment(OpCode::Ping, Bytes::new(), true).is_err());
    }

    #[test]
    fn large_payload_is_not_copied() {
        let mut tx = Sender::new(Role::Server);
        let payload = Bytes::from(vec![7u8; 100_000]);
        tx.send(Message::Binary(payload.clone())).unwrap();
        let mut slices = [std::io::IoSlice::new(&[]); 4];
        let q = tx.queue();
        assert_eq!(q.chunks_vectored(&mut slices), 2);
        assert_eq!(slices[1].as_ptr(), payload.as_ptr());
        assert_eq!(q.remaining(), 10 + 100_000);
    }

    /// A buffer that came from elsewhere (here: the rest of a read buffer, shared with the
    /// bytes split off it) serves message after message without shrinking: written frames
    /// give their room back, so steady traffic never reallocates.
    #[test]
    fn a_drained_queue_keeps_its_room() {
        let mut read_buf = BytesMut::with_capacity(4096);
        read_buf.extend_from_slice(&[0; 100]);
        let _message = read_buf.split().freeze();
        let mut tx = Sender::new(Role::Server);
        tx.queue().provide(read_buf);
        let room = tx.queue().tail.capacity();
        let start = tx.queue().tail.as_ptr();
        for _ in 0..1_000 {
            tx.send(Message::binary(vec![1u8; 1000])).unwrap();
            drain(&mut tx);
            assert_eq!(tx.queue().tail.capacity(), room);
        }
        assert_eq!(
            tx.queue().tail.as_ptr(),
            start,
            "the buffer was reallocated"
        );
    }

    #[test]
    fn client_frames_are_masked() {
        let mut tx = Sender::new(Role::Client);
        tx.send(Message::text("Hello")).unwrap();
        let wire = drain(&mut tx);
        assert_eq!(&wire[..2], [0x81, 0x85]);
        let key = [wire[2], wire[3], wire[4], wire[5]];
        let mut payload = wire[6..].to_vec();
        apply_mask(&mut payload, key);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn nothing_after_close() {
        let mut tx = Sender::new(Role::Server);
        tx.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")))
            .unwrap();
        assert_eq!(tx.send(Message::text("late")), Err(Error::AlreadyClosed));
        tx.react(&Message::Ping(Bytes::new()));
        assert_eq!(drain(&mut tx), b"\x88\x05\x03\xe8bye".to_vec());
    }

    #[test]
    fn unsendable_close_codes() {
        let mut tx = Sender::new(Role::Server);
        for code in [1005, 1006, 1015, 999] {
            assert_eq!(
                tx.close(Some(CloseFrame::new(CloseCode(code), ""))),
                Err(Error::UnsendableCloseCode(code))
            );
        }
        assert!(!tx.is_close_sent());
    }
}
