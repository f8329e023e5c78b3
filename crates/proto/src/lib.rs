//! # duplex-proto
//!
//! A sans-I/O implementation of the WebSocket protocol (RFC 6455): bytes in, messages out,
//! bytes to send queued. It never touches a socket or a clock, so every rule of the RFC is
//! testable with byte slices and the engine runs under any runtime.
//!
//! - [`frame`]: frame header decode/encode; [`mask`]: payload masking; [`utf8`]: incremental
//!   UTF-8 validation.
//! - [`handshake`]: the opening handshake for both roles, with [`http`] types.
//! - [`recv::Receiver`] and [`send::Sender`]: the two directions of a connection;
//!   [`Connection`] ties them together.
//! - [`Error`]: one error type; each protocol error knows its close code.
//!
//! ```
//! use bytes::{Buf, BytesMut};
//! use duplex_proto::{Connection, Message, Role};
//!
//! let mut client = Connection::new(Role::Client, Default::default());
//! let mut server = Connection::new(Role::Server, Default::default());
//! client.send(Message::text("Hello")).unwrap();
//!
//! // Move the client's bytes to the server, as a socket would.
//! let out = client.send_queue();
//! let mut wire = BytesMut::from(out.copy_to_bytes(out.remaining()).as_ref());
//! assert_eq!(server.receive(&mut wire).unwrap(), Some(Message::text("Hello")));
//! ```
#![deny(missing_docs, missing_debug_implementations)]

pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod recv;
pub mod send;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Answers, Connection, IdleConnection, State};
pub use error::Error;
pub use message::{Message, Utf8Bytes};

/// Which end of the connection this is: clients mask what they send, servers require it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The endpoint that sent the upgrade request.
    Client,
    /// The endpoint that accepted it.
    Server,
}

/// Limits a connection enforces on what it receives.
///
/// ```
/// use duplex_proto::Config;
/// let config = Config::default().max_message_size(1 << 20);
/// assert_eq!(config.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted; a larger one closes the connection with 1009.
    pub max_frame_size: usize,
    /// Largest message accepted (all fragments together); a larger one closes with 1009.
    pub max_message_size: usize,
    /// Most frames of under 64 bytes ([`recv::SMALL_FRAME`]) one message may come in; one more
    /// closes with 1009. A peer trickling a message in empty or tiny frames makes the receiver
    /// work per frame for no data, and never has to finish the message; larger frames are
    /// bounded by [`Config::max_message_size`] already.
    pub max_fragments: usize,
}

impl Default for Config {
    /// 16 MiB frames and 64 MiB messages: room for the largest messages real applications send
    /// (and Autobahn's 16 MiB cases), while a peer cannot make a connection buffer more than
    /// 64 MiB. Memory is committed only as bytes actually arrive, never from a length a header
    /// announces. At most 1,024 small fragments per message: far more than any sender that
    /// fragments for a reason (streaming, interleaving pings) produces.
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_fragments: 1024,
        }
    }
}

impl Config {
    /// Sets the largest accepted frame payload.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets the largest accepted message.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the most small fragments per message ([`Config::max_fragments`]).
    pub fn max_fragments(mut self, frames: usize) -> Self {
        self.max_fragments = frames;
        self
    }
}
