//! HTTP/1.1 heads: incremental parsing (with `httparse`) into `http` types, and writing.
//!
//! Parsing is resumable in the tokio-codec style: `Ok(None)` means "not all here yet, call
//! again with more bytes"; nothing is consumed until a whole head has arrived.

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use super::HandshakeError;

/// Limits on a head a peer sends, against memory exhaustion before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Maximum size of the head in bytes, request line and blank line included.
    pub max_bytes: usize,
    /// Maximum number of header lines.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    /// 8 KiB and 64 headers: what nginx and most proxies allow by default, far more than any
    /// browser sends in a handshake.
    fn default() -> Self {
        HeadLimits {
            max_bytes: 8 * 1024,
            max_headers: 64,
        }
    }
}

impl HeadLimits {
    fn too_large(&self) -> HandshakeError {
        HandshakeError::HeadTooLarge {
            max: self.max_bytes,
            max_headers: self.max_headers,
        }
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns the request and the length of its head, or `Ok(None)` if the head is not complete.
///
/// ```
/// use duplex_proto::handshake::head::{parse_request, HeadLimits};
/// let raw = b"GET /chat HTTP/1.1\r\nHost: example.com\r\n\r\nrest";
/// let (req, len) = parse_request(raw, HeadLimits::default()).unwrap().unwrap();
/// assert_eq!(req.uri().path(), "/chat");
/// assert_eq!(&raw[len..], b"rest");
/// assert!(parse_request(&raw[..10], HeadLimits::default()).unwrap().is_none());
/// ```
pub fn parse_request(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let Some(len) = head_len(req.parse(buf), buf, limits)? else {
        return Ok(None);
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let uri: Uri = req
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|e: http::uri::InvalidUri| HandshakeError::Malformed(e.to_string()))?;
    let mut out = Request::new(());
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.version_mut() = version(req.version);
    *out.headers_mut() = headers(req.headers)?;
    Ok(Some((out, len)))
}

/// Parses a response head from the start of `buf`; see [`parse_request`].
pub fn parse_response(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut slots);
    let Some(len) = head_len(resp.parse(buf), buf, limits)? else {
        return Ok(None);
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or_default())
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let mut out = Response::new(());
    *out.status_mut() = status;
    *out.version_mut() = version(resp.version);
    *out.headers_mut() = headers(resp.headers)?;
    Ok(Some((out, len)))
}

/// The length of a parsed head, `None` if it is incomplete, or why it is refused.
fn head_len(
    parsed: httparse::Result<usize>,
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<usize>, HandshakeError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len > limits.max_bytes => Err(limits.too_large()),
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => Err(limits.too_large()),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(limits.too_large()),
        Err(e) => Err(HandshakeError::Malformed(e.to_string())),
    }
}

fn version(minor: Option<u8>) -> Version {
    match minor {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

fn headers(parsed: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    let mut map = HeaderMap::with_capacity(parsed.len());
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Appends a request head (request line, headers, blank line) to `out`.
///
/// ```
/// use duplex_proto::handshake::head::write_request;
/// let req = http::Request::get("/chat").header("Host", "example.com").body(()).unwrap();
/// let mut out = Vec::new();
/// write_request(&req, &mut out);
/// assert_eq!(out, b"GET /chat HTTP/1.1\r\nhost: example.com\r\n\r\n");
/// ```
pub fn write_request<B>(req: &Request<B>, out: &mut Vec<u8>) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(req.headers(), out);
}

/// Appends a response head to `out`, then the body if it is not empty. A `Content-Length` is
/// added for a non-101 response that has none.
///
/// ```
/// use duplex_proto::handshake::head::write_response;
/// let resp = http::Response::builder().status(403).body("forbidden\n").unwrap();
/// let mut out = Vec::new();
/// write_response(&resp, &mut out);
/// assert_eq!(out, b"HTTP/1.1 403 Forbidden\r\ncontent-length: 10\r\n\r\nforbidden\n");
/// ```
pub fn write_response<B: AsRef<[u8]>>(resp: &Response<B>, out: &mut Vec<u8>) {
    let status = resp.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let body = resp.body().as_ref();
    if status != StatusCode::SWITCHING_PROTOCOLS
        && !resp.headers().contains_key(http::header::CONTENT_LENGTH)
    {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    write_headers(resp.headers(), out);
    out.extend_from_slice(body);
}

fn write_headers(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_split_anywhere_is_partial_then_complete() {
        let raw = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nX-Two: 2\r\n\r\n";
        for cut in 0..raw.len() {
            assert!(parse_request(&raw[..cut], HeadLimits::default())
                .unwrap()
                .is_none());
        }
        let (req, len) = parse_request(raw, HeadLimits::default()).unwrap().unwrap();
        assert_eq!(len, raw.len());
        assert_eq!(req.uri().query(), Some("b=c"));
        assert_eq!(req.headers().get_all("x-two").iter().count(), 2);
    }

    #[test]
    fn head_limits() {
        let limits = HeadLimits {
            max_bytes: 64,
            max_headers: 2,
        };
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(matches!(
            parse_request(many, limits),
            Err(HandshakeError::HeadTooLarge { .. })
        ));
        let endless = [b'a'; 100];
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend_from_slice(&endless);
        assert!(matches!(
            parse_request(&head, limits),
            Err(HandshakeError::HeadTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            parse_request(b"\x16\x03\x01\x02\x00\r\n\r\n", HeadLimits::default()),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn response_roundtrip() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        let (resp, len) = parse_response(raw, HeadLimits::default()).unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(&raw[len..], b"\x81\x00");
    }
}
