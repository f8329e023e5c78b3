//! The receiving half of a connection: decodes frames from a byte buffer, reassembles
//! fragmented messages, validates text as it arrives, and enforces the limits.
//!
//! Decoding is resumable: a partially received frame leaves its bytes in the caller's buffer and
//! its progress in [`Receiver`], so feeding bytes in any split, down to one at a time, gives the
//! same messages, and an I/O layer that is cancelled between reads loses nothing.

use bytes::{Buf, BytesMut};

use crate::close::CloseFrame;
use crate::deflate::codec::Inflater;
use crate::deflate::DeflateParams;
use crate::error::Error;
use crate::frame::{FrameHeader, OpCode};
use crate::mask::apply_mask_at;
use crate::message::{Message, Utf8Bytes};
use crate::utf8::Utf8Validator;
use crate::{Config, Role};

#[derive(Debug)]
enum Decode {
    /// Waiting for a frame header.
    Head,
    /// The header was consumed; the payload starts at the front of the buffer. `done` payload
    /// bytes at the front are already unmasked (and validated, for text).
    Payload {
        head: FrameHeader,
        done: usize,
        /// Validate the raw payload as UTF-8 (uncompressed text).
        text: bool,
    },
    /// A close frame was received or the peer broke the protocol: nothing more is read.
    Finished,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// Sent with permessage-deflate: `data` is empty and `inflated` holds the output so far.
    compressed: bool,
    /// Raw payload so far (uncompressed messages), or compressed bytes received (for the limit).
    data: BytesMut,
    received: u64,
    /// Frames so far that carried fewer than [`SMALL_FRAME`] bytes.
    small_frames: usize,
    inflated: Vec<u8>,
}

/// Frames of a fragmented message shorter than this count against
/// [`Config::max_fragments`]; longer ones are bounded by the message size limit already.
pub const SMALL_FRAME: u64 = 64;

/// The receiving half of a WebSocket connection.
///
/// ```
/// use bytes::BytesMut;
/// use duplex_proto::{recv::Receiver, Config, Message, Role};
/// let mut rx = Receiver::new(Role::Client, Config::default());
/// // RFC 6455 section 5.7: "Hel" and "lo" in two fragments, fed in two odd pieces.
/// let mut buf = BytesMut::from(&b"\x01\x03He"[..]);
/// assert_eq!(rx.receive(&mut buf), Ok(None));
/// buf.extend_from_slice(b"l\x80\x02lo");
/// assert_eq!(rx.receive(&mut buf), Ok(Some(Message::text("Hello"))));
/// ```
#[derive(Debug)]
pub struct Receiver {
    role: Role,
    config: Config,
    decode: Decode,
    /// A fragmented message being assembled (boxed: most messages come in one frame, and an
    /// idle connection should not carry room for one).
    partial: Option<Box<Partial>>,
    utf8: Utf8Validator,
    /// Text bytes were validated while still in the caller's buffer, which safe code can
    /// rewrite before the frame completes: the finished message must be checked again.
    exposed: bool,
    /// Boxed: most connections do not negotiate compression.
    inflater: Option<Box<Inflater>>,
}

/// What a [`Receiver`] keeps between messages (see [`Receiver::into_idle`]).
#[derive(Debug)]
pub struct IdleReceiver {
    role: Role,
    config: Config,
    inflater: Option<Box<Inflater>>,
}

impl IdleReceiver {
    /// The receiver again, ready for the next message.
    pub fn resume(self) -> Receiver {
        Receiver {
            inflater: self.inflater,
            ..Receiver::new(self.role, self.config)
        }
    }
}

impl Receiver {
    /// A receiver for `role`: servers require masked frames, clients refuse them.
    pub fn new(role: Role, config: Config) -> Self {
        Receiver {
            role,
            config,
            decode: Decode::Head,
            partial: None,
            utf8: Utf8Validator::default(),
            exposed: false,
            inflater: None,
        }
    }

    /// Decodes the next message from the front of `buf`, consuming the bytes it used.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete message yet (read more bytes, append
    /// them and call again), or after the connection finished. Control frames are returned as
    /// they arrive, even between the fragments of a message. An error means the peer broke the
    /// protocol: the connection is failed and nothing more is decoded.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        let result = self.decode(buf);
        if result.is_err() {
            self.decode = Decode::Finished;
            self.partial = None;
        }
        result
    }

    /// Whether the receiver stopped: a close frame arrived or the peer broke the protocol.
    pub fn is_finished(&self) -> bool {
        matches!(self.decode, Decode::Finished)
    }

    /// Whether the receiver is between messages: no frame and no fragmented message half
    /// received, and not finished. With an empty read buffer, nothing is then in progress.
    pub fn is_between_messages(&self) -> bool {
        matches!(self.decode, Decode::Head) && self.partial.is_none()
    }

    /// The receiver reduced to what it keeps between messages (its role, limits and
    /// decompressor), for a connection set aside while idle; `Err(self)` when a message is in
    /// progress or the receiver finished. [`IdleReceiver::resume`] gives the receiver back.
    ///
    /// ```
    /// use duplex_proto::recv::Receiver;
    /// use duplex_proto::Role;
    /// let rx = Receiver::new(Role::Server, Default::default());
    /// let idle = rx.into_idle().unwrap();
    /// assert!(std::mem::size_of_val(&idle) < std::mem::size_of::<Receiver>());
    /// let rx = idle.resume();
    /// assert!(rx.is_between_messages());
    /// ```
    pub fn into_idle(self) -> Result<IdleReceiver, Receiver> {
        if !self.is_between_messages() {
            return Err(self);
        }
        Ok(IdleReceiver {
            role: self.role,
            config: self.config,
            inflater: self.inflater,
        })
    }

    /// How many more bytes the frame being received needs (0 between frames): a hint for how
    /// much buffer space the next read should have.
    pub fn read_hint(&self) -> usize {
        match &self.decode {
            Decode::Payload { head, done, .. } => (head.payload_len as usize).saturating_sub(*done),
            _ => 0,
        }
    }

    /// Which end this receiver is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits this receiver enforces.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Turns on permessage-deflate with the agreed parameters: RSV1 on the first frame of a
    /// data message then means "compressed" (RFC 7692 section 6).
    pub fn set_deflate(&mut self, params: Option<&DeflateParams>) {
        self.inflater = params.map(|p| Box::new(Inflater::new(p)));
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        loop {
            match &mut self.decode {
                Decode::Finished => return Ok(None),
                Decode::Head => {
                    let Some((head, len)) = FrameHeader::parse(buf)? else {
                        return Ok(None);
                    };
                    let text = self.check(&head)?;
                    buf.advance(len);
                    self.decode = Decode::Payload {
                        head,
                        done: 0,
                        text,
                    };
                }
                Decode::Payload { head, done, text } => {
                    let len = head.payload_len as usize;
                    let ready = buf.len().min(len);
                    if ready > *done {
                        let fresh = &mut buf[*done..ready];
                        if let Some(key) = head.mask {
                            apply_mask_at(fresh, key, *done);
                        }
                        if *text {
                            self.utf8.feed(fresh).map_err(|_| Error::InvalidUtf8)?;
                        }
                        *done = ready;
                    }
                    if ready < len {
                        self.exposed |= *text && *done > 0;
                        return Ok(None);
                    }
                    let head = *head;
                    let payload = buf.split_to(len);
                    self.decode = Decode::Head;
                    if let Some(msg) = self.complete(head, payload)? {
                        return Ok(Some(msg));
                    }
                }
            }
        }
    }

    /// Checks a header against the connection's rules before its payload is read. Returns
    /// whether the payload is text to validate.
    fn check(&mut self, head: &FrameHeader) -> Result<bool, Error> {
        // "MUST be 0 unless an extension is negotiated that defines meanings for non-zero
        // values" (RFC 6455 section 5.2).
        if head.rsv2 || head.rsv3 || (head.rsv1 && self.inflater.is_none()) {
            return Err(Error::ReservedBits);
        }
        // "The server MUST close the connection upon receiving a frame that is not masked" and
        // "A client MUST close a connection if it detects a masked frame" (section 5.1).
        match (self.role, head.mask.is_some()) {
            (Role::Server, false) => return Err(Error::UnmaskedFrame),
            (Role::Client, true) => return Err(Error::MaskedFrame),
            _ => {}
        }
        if head.opcode.is_control() {
            // "All control frames MUST have a payload length of 125 bytes or less and MUST NOT
            // be fragmented" (section 5.5).
            if !head.fin {
                return Err(Error::FragmentedControl);
            }
            if head.payload_len > 125 {
                return Err(Error::ControlTooLong(head.payload_len));
            }
            if head.rsv1 {
                return Err(Error::ReservedBits);
            }
            return Ok(false);
        }
        if head.payload_len > self.config.max_frame_size as u64 {
            return Err(Error::FrameTooLarge {
                size: head.payload_len,
                max: self.config.max_frame_size,
            });
        }
        let (text, compressed, so_far) = match (head.opcode, &self.partial) {
            (OpCode::Continuation, None) => return Err(Error::UnexpectedContinuation),
            (OpCode::Continuation, Some(p)) => {
                // RFC 7692 section 6.1: RSV1 is set on the first frame of a message only.
                if head.rsv1 {
                    return Err(Error::ReservedBits);
                }
                if head.payload_len < SMALL_FRAME && p.small_frames >= self.config.max_fragments {
                    return Err(Error::TooManyFragments {
                        max: self.config.max_fragments,
                    });
                }
                (p.text, p.compressed, p.received)
            }
            (_, Some(_)) => return Err(Error::ExpectedContinuation),
            (op, None) => {
                self.utf8.reset();
                self.exposed = false;
                (op == OpCode::Text, head.rsv1, 0)
            }
        };
        let size = so_far + head.payload_len;
        if size > self.config.max_message_size as u64 {
            return Err(Error::MessageTooLarge {
                size,
                max: self.config.max_message_size,
            });
        }
        // Compressed text is validated after decompression.
        Ok(text && !compressed)
    }

    fn complete(&mut self, head: FrameHeader, payload: BytesMut) -> Result<Option<Message>, Error> {
        match head.opcode {
            // A whole message in one uncompressed frame, the common case: nothing to assemble.
            OpCode::Binary if head.fin && !head.rsv1 => Ok(Some(Message::Binary(payload.freeze()))),
            OpCode::Text if head.fin && !head.rsv1 => self.text(payload.freeze()).map(Some),
            OpCode::Text | OpCode::Binary => {
                let mut partial = Partial {
                    text: head.opcode == OpCode::Text,
                    compressed: head.rsv1,
                    data: BytesMut::new(),
                    received: 0,
                    small_frames: 0,
                    inflated: Vec::new(),
                };
                self.append(&mut partial, payload)?;
                if head.fin {
                    return Ok(Some(self.finish(partial)?));
                }
                self.partial = Some(Box::new(partial));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(Error::UnexpectedContinuation);
                };
                self.append(&mut partial, payload)?;
                if head.fin {
                    return Ok(Some(self.finish(*partial)?));
                }
                self.partial = Some(partial);
                Ok(None)
            }
            OpCode::Ping => Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Close => {
                let frame = CloseFrame::parse(payload.freeze())?;
                self.decode = Decode::Finished;
                self.partial = None;
                Ok(Some(Message::Close(frame)))
            }
        }
    }

    /// Adds one frame's payload to a message: kept as is, or decompressed (and the new text
    /// validated at once, so bad UTF-8 fails on the frame that carries it).
    fn append(&mut self, partial: &mut Partial, payload: BytesMut) -> Result<(), Error> {
        partial.received += payload.len() as u64;
        if (payload.len() as u64) < SMALL_FRAME {
            partial.small_frames += 1;
        }
        if !partial.compressed {
            if partial.data.is_empty() {
                partial.data = payload;
            } else {
                partial.data.unsplit(payload);
            }
            return Ok(());
        }
        let Some(inflater) = self.inflater.as_mut() else {
            return Err(Error::ReservedBits);
        };
        let before = partial.inflated.len();
        inflater.inflate(
            &payload,
            &mut partial.inflated,
            self.config.max_message_size,
        )?;
        if partial.text {
            self.utf8
                .feed(&partial.inflated[before..])
                .map_err(|_| Error::InvalidUtf8)?;
        }
        Ok(())
    }

    fn finish(&mut self, mut partial: Partial) -> Result<Message, Error> {
        let data = if partial.compressed {
            let Some(inflater) = self.inflater.as_mut() else {
                return Err(Error::ReservedBits);
            };
            let before = partial.inflated.len();
            inflater.finish(&mut partial.inflated, self.config.max_message_size)?;
            if partial.text {
                self.utf8
                    .feed(&partial.inflated[before..])
                    .map_err(|_| Error::InvalidUtf8)?;
            }
            bytes::Bytes::from(partial.inflated)
        } else {
            partial.data.freeze()
        };
        if !partial.text {
            return Ok(Message::Binary(data));
        }
        self.text(data)
    }

    /// A text message's payload, validated as it arrived, as a message.
    fn text(&self, data: bytes::Bytes) -> Result<Message, Error> {
        if !self.utf8.is_complete() {
            return Err(Error::InvalidUtf8);
        }
        if self.exposed {
            // The incremental validator saw some of these bytes while they sat, unconsumed, in
            // the caller's buffer, which safe code can rewrite (or swap) before the frame
            // completes. `Utf8Bytes` promises UTF-8 to `as_str`, so check once more.
            return Utf8Bytes::try_from(data)
                .map(Message::Text)
                .map_err(|_| Error::InvalidUtf8);
        }
        Ok(Message::Text(Utf8Bytes::from_validated(data)))
    }
}
