//! The library's error type.

use duplex_proto::handshake::HandshakeError;
use duplex_proto::CloseCode;

/// What can go wrong on a WebSocket connection.
///
/// ```
/// use duplex::{CloseCode, Error};
/// let err = Error::from(duplex_proto::Error::InvalidUtf8);
/// assert_eq!(err.close_code(), Some(CloseCode::INVALID_DATA));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke the protocol, or the application misused it; see
    /// [`duplex_proto::Error::close_code`].
    #[error(transparent)]
    Protocol(duplex_proto::Error),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The transport ended without a close frame (what browsers report as 1006).
    #[error("connection closed without a close frame")]
    AbnormalClosure,
    /// The connection is closed: nothing more can be sent.
    #[error("the connection is closed")]
    Closed,
    /// A timeout expired; the argument says which: `"handshake"`, `"TLS handshake"`,
    /// `"close handshake"` ([`Config::close_timeout`](crate::Config::close_timeout)),
    /// `"write"` (the peer read nothing for
    /// [`Config::write_timeout`](crate::Config::write_timeout) while data waited; the transport
    /// was dropped without a close frame, for which there was no room), `"connect"`.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The server's upgrade callback refused the connection with this status.
    #[error("upgrade refused with {0}")]
    Rejected(http::StatusCode),
    /// The URL cannot be connected to.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The application used the API in a way it does not support; the text says how.
    #[error("invalid use: {0}")]
    Usage(&'static str),
    /// TLS could not be set up (certificate files, an untrusted server certificate, the TLS
    /// handshake).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// An HTTP/2 connection or request failed (cargo feature `http2`).
    #[cfg(feature = "http2")]
    #[error(transparent)]
    Http2(#[from] crate::http2::H2Error),
    /// The proxy could not be used or refused the tunnel.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    /// No pong answered a keepalive ping within [`Config::ping_timeout`](crate::Config::ping_timeout):
    /// the peer or the path to it is gone. The connection was failed with close code 1011.
    #[error("no pong within {0:?} of a keepalive ping")]
    KeepaliveTimeout(std::time::Duration),
    /// More than [`Config::max_write_buffer_size`](crate::Config::max_write_buffer_size) bytes
    /// were queued for a peer that does not read them. The connection was dropped without a
    /// close frame: there was no room to send one.
    #[error("more than max_write_buffer_size bytes queued for a peer that is not reading")]
    WriteBufferFull,
}

impl From<duplex_proto::Error> for Error {
    fn from(e: duplex_proto::Error) -> Self {
        match e {
            duplex_proto::Error::Handshake(h) => Error::Handshake(h),
            duplex_proto::Error::AlreadyClosed => Error::Closed,
            other => Error::Protocol(other),
        }
    }
}

impl Error {
    /// The close code this error sent to the peer, if it sent one.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::Protocol(e) => e.close_code(),
            Error::KeepaliveTimeout(_) => Some(CloseCode::INTERNAL),
            _ => None,
        }
    }

    /// Whether a timeout expired: [`Error::Timeout`] (a handshake, the close handshake, a peer
    /// that read nothing for the write timeout) or [`Error::KeepaliveTimeout`].
    ///
    /// ```
    /// use duplex::Error;
    /// assert!(Error::Timeout("write").is_timeout());
    /// assert!(!Error::WriteBufferFull.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::KeepaliveTimeout(_))
    }

    /// The HTTP status behind this error, if there is one: the status the server's callback
    /// refused the upgrade with, the status of a refused handshake seen by a client, or the
    /// status a proxy refused the tunnel with.
    pub fn http_status(&self) -> Option<http::StatusCode> {
        match self {
            Error::Rejected(status) => Some(*status),
            Error::Handshake(HandshakeError::Status { status, .. }) => Some(*status),
            Error::Proxy(p) => p.status(),
            #[cfg(feature = "http2")]
            Error::Http2(e) => e.status(),
            _ => None,
        }
    }
}

/// The result type of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
