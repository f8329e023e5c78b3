//! Messages encoded once and sent to many connections (broadcast, fan-out).

use std::sync::Arc;

use bytes::Bytes;
use duplex_proto::frame::OpCode;
use duplex_proto::send::encode_frame;
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
/// key); they are sent uncompressed.
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
}

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
        let (opcode, payload) = match &message {
            Message::Text(t) => (OpCode::Text, t.as_bytes()),
            Message::Binary(b) => (OpCode::Binary, &b[..]),
            _ => unreachable!("only data messages are constructed"),
        };
        PreparedMessage(Arc::new(Prepared {
            frame: encode_frame(opcode, payload),
            message,
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

    pub(crate) fn frame(&self) -> Bytes {
        self.0.frame.clone()
    }
}
