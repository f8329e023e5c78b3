//! Messages encoded once and sent to many connections (broadcast, fan-out).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use duplex_proto::deflate::codec::Shareable;
use duplex_proto::frame::OpCode;
use duplex_proto::send::{encode_compressed_frame, encode_frame};
use duplex_proto::{Message, Role, Utf8Bytes};

use crate::{Error, Result};

/// Prepared frames are unmasked: only a server may send them.
pub(crate) fn check_role(role: Role) -> Result<()> {
    match role {
        Role::Server => Ok(()),
        Role::Client => Err(Error::Usage(
            "prepared messages are unmasked and can only be sent by a server",
        )),
    }
}

/// A message whose frame bytes are encoded once and shared (reference-counted) by every server
/// connection it is sent to: fanning out to N subscribers costs N reference-count increments,
/// not N encodings or copies. A pointer in size, so that a queue of them (one per subscriber)
/// costs little while it is empty.
///
/// Only server connections can send prepared frames (a client must mask each frame with its own
/// key). To a connection that negotiated permessage-deflate without context takeover on its
/// side (`server_no_context_takeover`, which a server with
/// [`DeflateConfig::no_context_takeover`](duplex_proto::deflate::DeflateConfig) always asks
/// for), the message goes compressed, and it is compressed once for all such connections with
/// the same level and window; to the others it goes uncompressed, which the extension allows
/// per message.
///
/// ```
/// use duplex::PreparedMessage;
/// let prepared = PreparedMessage::text("hello everyone");
/// assert_eq!(prepared.frame_len(), 2 + 14);
/// let copy = prepared.clone(); // shares the same bytes
/// assert_eq!(copy.message(), &duplex::Message::text("hello everyone"));
/// ```
#[derive(Debug, Clone)]
pub struct PreparedMessage(Arc<Prepared>);

#[derive(Debug)]
struct Prepared {
    frame: Bytes,
    message: Message,
    /// The compressed frame for the first compression parameters asked for (`None` when
    /// compressing did not make it smaller): almost always the only ones, since a hub's
    /// connections share one configuration.
    compressed: OnceLock<Compressed>,
    /// Compressed frames for any other parameters.
    others: Mutex<Vec<Compressed>>,
}

type Compressed = (Shareable, Option<Bytes>);

impl PreparedMessage {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::new(Message::Text(text.into()))
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::new(Message::Binary(data.into()))
    }

    fn new(message: Message) -> Self {
        let (opcode, payload) = data(&message);
        PreparedMessage(Arc::new(Prepared {
            frame: encode_frame(opcode, payload),
            message,
            compressed: OnceLock::new(),
            others: Mutex::new(Vec::new()),
        }))
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.0.message
    }

    /// Size of the encoded frame in bytes.
    pub fn frame_len(&self) -> usize {
        self.0.frame.len()
    }

    /// The frame for a connection that compresses with `deflate` (see
    /// [`duplex_proto::send::Sender::shareable_deflate`]): compressed for the first connection
    /// that needs these parameters, the same bytes for every later one.
    pub(crate) fn frame_for(&self, deflate: Option<Shareable>) -> Bytes {
        let (opcode, payload) = data(&self.0.message);
        let Some(params) = deflate.filter(|d| d.wants(payload.len())) else {
            return self.0.frame.clone();
        };
        let compress = || {
            let packed = params.compress(payload).ok()?;
            // Incompressible data (random bytes, media) grows a little: send it as it is.
            (packed.len() < payload.len()).then(|| encode_compressed_frame(opcode, &packed))
        };
        let first = self.0.compressed.get_or_init(|| (params, compress()));
        let frame = if first.0 == params {
            first.1.clone()
        } else {
            let mut others = self.0.others.lock().unwrap_or_else(PoisonError::into_inner);
            match others.iter().find(|(p, _)| *p == params) {
                Some((_, frame)) => frame.clone(),
                None => {
                    let frame = compress();
                    others.push((params, frame.clone()));
                    frame
                }
            }
        };
        frame.unwrap_or_else(|| self.0.frame.clone())
    }
}

/// The opcode and payload of a prepared message, which is always a data message.
fn data(message: &Message) -> (OpCode, &[u8]) {
    match message {
        Message::Text(t) => (OpCode::Text, t.as_bytes()),
        Message::Binary(b) => (OpCode::Binary, &b[..]),
        _ => unreachable!("only data messages are constructed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_proto::deflate::codec::Deflater;
    use duplex_proto::deflate::{negotiate, DeflateConfig};

    fn shareable(config: DeflateConfig) -> Shareable {
        let params = negotiate::params_for_test(config.no_context_takeover(true));
        Deflater::new(&params).shareable().unwrap()
    }

    #[test]
    fn compresses_once_per_parameters() {
        let text = "a chat message that every member of the room receives, ".repeat(4);
        let prepared = PreparedMessage::text(text.clone());
        let default = shareable(DeflateConfig::default());
        let first = prepared.frame_for(Some(default));
        // RSV1 set, and shorter than the plain frame.
        assert_eq!(first[0], 0xc1);
        assert!(first.len() < prepared.frame_len());
        // Every later connection with the same parameters gets the same bytes, not a copy.
        let again = prepared.clone().frame_for(Some(default));
        assert_eq!(again.as_ptr(), first.as_ptr());
        // Other parameters get their own compression, also kept.
        let small = shareable(DeflateConfig::default().window_bits(9).level(9));
        let other = prepared.frame_for(Some(small));
        assert_eq!(other.as_ptr(), prepared.frame_for(Some(small)).as_ptr());
        assert_ne!(other.as_ptr(), first.as_ptr());
        // No compression, or context takeover: the plain frame.
        assert_eq!(prepared.frame_for(None), prepared.0.frame);
    }

    #[test]
    fn small_or_incompressible_messages_go_plain() {
        let default = shareable(DeflateConfig::default());
        let tiny = PreparedMessage::text("hi");
        assert_eq!(tiny.frame_for(Some(default)), tiny.0.frame);
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..512)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let binary = PreparedMessage::binary(noise);
        assert_eq!(binary.frame_for(Some(default)), binary.0.frame);
    }
}
