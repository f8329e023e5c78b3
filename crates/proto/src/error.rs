//! The engine's one error type.
//!
//! Errors come in two kinds, told apart by [`Error::is_local`]: the peer broke the protocol
//! (the connection fails, and [`Error::close_code`] is the code sent to the peer), or the
//! application misused the API (nothing is sent; the connection is unaffected unless it was
//! already closed).

use crate::close::CloseCode;
use crate::handshake::HandshakeError;

/// Everything that can go wrong in the protocol engine.
///
/// ```
/// use duplex_proto::{CloseCode, Error};
/// assert_eq!(Error::InvalidUtf8.close_code(), Some(CloseCode::INVALID_DATA));
/// assert_eq!(Error::MessageTooLarge { size: 10, max: 5 }.close_code(), Some(CloseCode::TOO_BIG));
/// assert_eq!(Error::AlreadyClosed.close_code(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An RSV bit was set that no negotiated extension defines.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// The opcode is one RFC 6455 reserves (3-7, 11-15).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame had FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame carried more than 125 bytes.
    #[error("control frame payload of {0} bytes (at most 125 allowed)")]
    ControlTooLong(u64),
    /// A client sent an unmasked frame (RFC 6455 section 5.1).
    #[error("unmasked frame from a client")]
    UnmaskedFrame,
    /// A server sent a masked frame (RFC 6455 section 5.1).
    #[error("masked frame from a server")]
    MaskedFrame,
    /// A continuation frame arrived with no fragmented message to continue.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived inside a fragmented message.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A 64-bit payload length had its most significant bit set.
    #[error("payload length with the most significant bit set")]
    InvalidLength,
    /// A close frame payload of exactly one byte.
    #[error("close frame with a one-byte payload")]
    InvalidClosePayload,
    /// A close code that is not valid on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message or close reason that is not UTF-8.
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A compressed message could not be decompressed (or compressed).
    #[error("permessage-deflate: {0}")]
    Compression(String),
    /// A frame longer than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The length the frame header announced.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message longer than the configured limit.
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The message's length so far, counting the frame that broke the limit.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A fragmented message came in more small frames than the configured limit
    /// ([`crate::Config::max_fragments`]).
    #[error("message in more than {max} small fragments")]
    TooManyFragments {
        /// The configured limit.
        max: usize,
    },
    /// The application tried to send a control frame with more than 125 bytes.
    #[error("control frame payload of {0} bytes (at most 125 allowed)")]
    ControlPayloadTooLong(usize),
    /// The application tried to send a close code that is not valid on the wire (1005, 1006,
    /// 1015 or outside the registered ranges).
    #[error("close code {0} may not be sent")]
    UnsendableCloseCode(u16),
    /// The application tried to send a close reason longer than 123 bytes.
    #[error("close reason of {0} bytes (at most 123 allowed)")]
    ReasonTooLong(usize),
    /// The application broke the order of fragments it sends.
    #[error("invalid fragment sequence: {0}")]
    InvalidFragmentSequence(&'static str),
    /// The application tried to send after the connection closed.
    #[error("the connection is already closed")]
    AlreadyClosed,
    /// The opening handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

impl Error {
    /// The close code this error sends to the peer, or `None` for errors that send nothing
    /// (misuse of the API, handshake failures, where no WebSocket exists yet).
    pub fn close_code(&self) -> Option<CloseCode> {
        use Error::*;
        match self {
            ReservedBits
            | ReservedOpcode(_)
            | FragmentedControl
            | ControlTooLong(_)
            | UnmaskedFrame
            | MaskedFrame
            | UnexpectedContinuation
            | ExpectedContinuation
            | InvalidLength
            | InvalidClosePayload
            | InvalidCloseCode(_) => Some(CloseCode::PROTOCOL),
            InvalidUtf8 | Compression(_) => Some(CloseCode::INVALID_DATA),
            FrameTooLarge { .. } | MessageTooLarge { .. } | TooManyFragments { .. } => {
                Some(CloseCode::TOO_BIG)
            }
            ControlPayloadTooLong(_)
            | ReasonTooLong(_)
            | UnsendableCloseCode(_)
            | InvalidFragmentSequence(_)
            | AlreadyClosed
            | Handshake(_) => None,
        }
    }

    /// Whether the application caused this error (rather than the peer).
    pub fn is_local(&self) -> bool {
        use Error::*;
        matches!(
            self,
            ControlPayloadTooLong(_)
                | ReasonTooLong(_)
                | InvalidFragmentSequence(_)
                | AlreadyClosed
                | UnsendableCloseCode(_)
        )
    }
}
