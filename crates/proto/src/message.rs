//! Messages as the application sees them, and text that is known to be UTF-8.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::close::CloseFrame;

/// Text that is guaranteed to be valid UTF-8, backed by reference-counted [`Bytes`] so that a
/// received text message is handed out without copying.
///
/// ```
/// use duplex_proto::Utf8Bytes;
/// let text = Utf8Bytes::from("hello");
/// assert_eq!(text.as_str(), "hello");
/// assert_eq!(&*text, "hello"); // derefs to &str
/// assert!(Utf8Bytes::try_from(bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Text from a static string, without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// The text as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor either starts from a `str`/`String`, validates the bytes
        // (`TryFrom<Bytes>`, `TryFrom<Vec<u8>>`), or is `from_validated`, which the receiver
        // calls only on bytes its validator checked where no other code could write them
        // (see `Receiver::finish`); `Bytes` are immutable afterwards.
        // Re-validating here would cost a full pass over every message each time it is read.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Wraps bytes that the receiver validated itself, in a buffer nobody else could write to
    /// since.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// Gives up the UTF-8 guarantee and returns the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Utf8Bytes::from(s.as_str())
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = std::string::FromUtf8Error;
    fn try_from(v: Vec<u8>) -> Result<Self, Self::Error> {
        Ok(Utf8Bytes::from(String::from_utf8(v)?))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(t: Utf8Bytes) -> Bytes {
        t.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One WebSocket message: what the engine emits when a whole message has arrived and what the
/// application hands it to send.
///
/// ```
/// use duplex_proto::Message;
/// let m = Message::text("hi");
/// assert!(m.is_text());
/// assert_eq!(m.as_text(), Some("hi"));
/// assert_eq!(Message::binary(vec![1, 2, 3]).len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (always valid UTF-8).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping. Received pings are answered automatically; they are reported for information.
    Ping(Bytes),
    /// A pong, usually the answer to a ping this side sent.
    Pong(Bytes),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }

    /// Whether this is a close frame.
    pub fn is_close(&self) -> bool {
        matches!(self, Message::Close(_))
    }

    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The payload length in bytes (for a close frame: code and reason).
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(None) => 0,
            Message::Close(Some(f)) => 2 + f.reason.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload bytes (text as its UTF-8 encoding, a close frame as its wire payload).
    pub fn into_payload(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
            Message::Close(None) => Bytes::new(),
            Message::Close(Some(f)) => f.to_payload(),
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::binary(v)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::binary(b)
    }
}
