//! The opening handshake (RFC 6455 section 4): an HTTP/1.1 Upgrade request and a
//! `101 Switching Protocols` response, built and checked with [`http`] types.
//!
//! - [`server`]: parse and validate a client's request, build the 101 response or a rejection.
//! - [`client`]: build the request, validate the server's response.
//! - [`extensions`]: the `Sec-WebSocket-Extensions` header grammar.
//! - [`head`]: incremental parsing and writing of HTTP/1.1 heads.

use base64::Engine;
use http::StatusCode;
use sha1::{Digest, Sha1};

pub mod client;
pub mod extensions;
pub mod head;
pub mod server;

/// The GUID every accept key is derived from (RFC 6455 section 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`:
/// base64(SHA-1(key + GUID)).
///
/// ```
/// use duplex_proto::handshake::accept_key;
/// // RFC 6455 section 1.3.
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Why an opening handshake failed.
///
/// Errors found by a server map to the HTTP status it answers with ([`HandshakeError::status`]);
/// errors found by a client describe what the server did wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The HTTP head could not be parsed.
    #[error("malformed HTTP head: {0}")]
    Malformed(String),
    /// The HTTP head was larger than the configured limit.
    #[error("HTTP head exceeds {max} bytes or {max_headers} headers")]
    HeadTooLarge {
        /// Byte limit.
        max: usize,
        /// Header count limit.
        max_headers: usize,
    },
    /// The request method was not GET.
    #[error("method {0} not allowed; a WebSocket handshake uses GET")]
    MethodNotAllowed(String),
    /// The request was older than HTTP/1.1.
    #[error("HTTP/1.1 or later is required")]
    HttpVersion,
    /// `Upgrade: websocket` was missing.
    #[error("missing or invalid Upgrade header (expected \"websocket\")")]
    Upgrade,
    /// `Connection: Upgrade` was missing.
    #[error("missing or invalid Connection header (expected \"Upgrade\")")]
    Connection,
    /// `Sec-WebSocket-Key` was missing or not 16 bytes in base64.
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
    /// `Sec-WebSocket-Version` was missing or not 13.
    #[error("unsupported Sec-WebSocket-Version (only 13 is supported)")]
    Version,
    /// A `Sec-WebSocket-Extensions` header did not follow the RFC's grammar.
    #[error("malformed Sec-WebSocket-Extensions header: {0}")]
    ExtensionSyntax(String),
    /// The URL cannot be used for a WebSocket connection.
    #[error("invalid WebSocket URL: {0}")]
    Url(String),
    /// The server answered with something other than 101.
    #[error("server answered {status} instead of 101 Switching Protocols")]
    Status {
        /// The status the server sent.
        status: StatusCode,
        /// The start of the response body, for a human to read.
        body: String,
    },
    /// The server's `Sec-WebSocket-Accept` did not match the key sent.
    #[error("server sent a wrong Sec-WebSocket-Accept")]
    Accept,
    /// The server chose a subprotocol the client did not offer.
    #[error("server chose subprotocol {0:?}, which was not offered")]
    Protocol(String),
    /// The server answered with an extension the client did not offer.
    #[error("server answered with extension {0:?}, which was not offered")]
    Extension(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    ///
    /// ```
    /// use duplex_proto::handshake::HandshakeError;
    /// use http::StatusCode;
    /// assert_eq!(HandshakeError::Version.status(), StatusCode::UPGRADE_REQUIRED);
    /// assert_eq!(HandshakeError::Key.status(), StatusCode::BAD_REQUEST);
    /// ```
    pub fn status(&self) -> StatusCode {
        use HandshakeError::*;
        match self {
            HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Version => StatusCode::UPGRADE_REQUIRED,
            HttpVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Malformed(_) | Upgrade | Connection | Key | ExtensionSyntax(_) | Url(_) => {
                StatusCode::BAD_REQUEST
            }
            Status { .. } | Accept | Protocol(_) | Extension(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Splits a comma-separated header list (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`)
/// across every occurrence of the header, trimming whitespace and skipping empty elements.
pub(crate) fn header_tokens<'a>(
    headers: &'a http::HeaderMap,
    name: &'a http::HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a token list header contains `token` (compared case-insensitively).
pub(crate) fn header_has_token(
    headers: &http::HeaderMap,
    name: &http::HeaderName,
    token: &str,
) -> bool {
    header_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
