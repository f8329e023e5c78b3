//! The server's half of the opening handshake: validate the client's request, then answer with
//! `101 Switching Protocols` or a rejection that says why.

use base64::Engine;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};

use super::extensions::{self, Extension};
use super::{accept_key, header_has_token, header_tokens, HandshakeError};

/// A validated upgrade request: what the client offered, and the accept key to answer with.
///
/// ```
/// use duplex_proto::handshake::server::UpgradeRequest;
/// let req = http::Request::get("/chat")
///     .header("Host", "server.example.com")
///     .header("Upgrade", "websocket")
///     .header("Connection", "Upgrade")
///     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .header("Sec-WebSocket-Version", "13")
///     .header("Sec-WebSocket-Protocol", "chat, superchat")
///     .body(()).unwrap();
/// let upgrade = UpgradeRequest::validate(&req).unwrap();
/// assert_eq!(upgrade.select_protocol(&["superchat"]), Some("superchat"));
/// let resp = upgrade.accept(Some("superchat"));
/// assert_eq!(resp.status(), 101);
/// assert_eq!(resp.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    accept: String,
    protocols: Vec<String>,
    extensions: Vec<Extension>,
}

impl UpgradeRequest {
    /// Checks a request against RFC 6455 section 4.2.1.
    ///
    /// The error's [`HandshakeError::status`] is the status to answer with: 405 for a method
    /// other than GET, 400 for a missing `Upgrade`, `Connection` or key, 426 for a version
    /// other than 13 (answer with [`reject`], which adds `Sec-WebSocket-Version: 13`).
    pub fn validate<B>(req: &Request<B>) -> Result<UpgradeRequest, HandshakeError> {
        if req.method() != Method::GET {
            return Err(HandshakeError::MethodNotAllowed(req.method().to_string()));
        }
        if req.version() < Version::HTTP_11 {
            return Err(HandshakeError::HttpVersion);
        }
        let headers = req.headers();
        if !header_has_token(headers, &UPGRADE, "websocket") {
            return Err(HandshakeError::Upgrade);
        }
        if !header_has_token(headers, &CONNECTION, "upgrade") {
            return Err(HandshakeError::Connection);
        }
        let key = single(headers, &SEC_WEBSOCKET_KEY).ok_or(HandshakeError::Key)?;
        match base64::engine::general_purpose::STANDARD.decode(key.as_bytes()) {
            Ok(raw) if raw.len() == 16 => {}
            _ => return Err(HandshakeError::Key),
        }
        if single(headers, &SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(HandshakeError::Version);
        }
        Ok(UpgradeRequest {
            accept: accept_key(key.as_bytes()),
            protocols: header_tokens(headers, &SEC_WEBSOCKET_PROTOCOL)
                .map(str::to_owned)
                .collect(),
            extensions: extensions::parse_all(headers)?,
        })
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions the client offered, in its order of preference.
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }

    /// The first of the server's `supported` subprotocols (in the server's order) that the
    /// client offered.
    pub fn select_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        supported
            .iter()
            .copied()
            .find(|s| self.protocols.iter().any(|p| p == s))
    }

    /// The `101 Switching Protocols` response, naming `protocol` if one was chosen.
    ///
    /// Add any further headers (cookies, extensions) to the returned response before sending it.
    pub fn accept(&self, protocol: Option<&str>) -> Response<()> {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&self.accept) {
            h.insert(SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(v) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            h.insert(SEC_WEBSOCKET_PROTOCOL, v);
        }
        resp
    }
}

/// A rejection: `status` with a one-line plain-text body.
///
/// A 426 also carries `Sec-WebSocket-Version: 13` (RFC 6455 section 4.4), a 405 `Allow: GET`.
///
/// ```
/// use duplex_proto::handshake::server::reject;
/// let resp = reject(http::StatusCode::UPGRADE_REQUIRED, "unsupported version");
/// assert_eq!(resp.headers()["sec-websocket-version"], "13");
/// assert_eq!(resp.body(), "unsupported version\n");
/// ```
pub fn reject(status: StatusCode, reason: &str) -> Response<String> {
    let mut resp = Response::new(format!("{}\n", reason.trim_end()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::UPGRADE_REQUIRED {
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(http::header::ALLOW, HeaderValue::from_static("GET"));
    }
    resp
}

/// The rejection for a handshake error: its status and its message as the body.
pub fn reject_error(err: &HandshakeError) -> Response<String> {
    reject(err.status(), &err.to_string())
}

/// The value of a header that must appear exactly once.
fn single<'a>(headers: &'a http::HeaderMap, name: &http::HeaderName) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> http::request::Builder {
        Request::get("/")
            .header("Host", "localhost")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
    }

    fn validate(b: http::request::Builder) -> Result<UpgradeRequest, HandshakeError> {
        UpgradeRequest::validate(&b.body(()).unwrap())
    }

    #[test]
    fn accepts_a_browser_request() {
        let up = validate(request().header("Upgrade", "WebSocket")).unwrap();
        assert!(up.protocols().is_empty());
        let resp = up.accept(None);
        assert_eq!(resp.headers()["upgrade"], "websocket");
        assert!(resp.headers().get("sec-websocket-protocol").is_none());
    }

    #[test]
    fn rejections_map_to_statuses() {
        let cases: Vec<(http::request::Builder, StatusCode)> = vec![
            (request().method("POST"), StatusCode::METHOD_NOT_ALLOWED),
            (
                Request::get("/")
                    .header("Connection", "Upgrade")
                    .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                    .header("Sec-WebSocket-Version", "13"),
                StatusCode::BAD_REQUEST,
            ),
            (
                Request::get("/")
                    .header("Upgrade", "websocket")
                    .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                    .header("Sec-WebSocket-Version", "13"),
                StatusCode::BAD_REQUEST,
            ),
            (
                request().header("Sec-WebSocket-Key", "second"),
                StatusCode::BAD_REQUEST,
            ),
            (
                Request::get("/")
                    .header("Upgrade", "websocket")
                    .header("Connection", "Upgrade")
                    .header("Sec-WebSocket-Key", "c2hvcnQ=")
                    .header("Sec-WebSocket-Version", "13"),
                StatusCode::BAD_REQUEST,
            ),
            (
                Request::get("/")
                    .header("Upgrade", "websocket")
                    .header("Connection", "Upgrade")
                    .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                    .header("Sec-WebSocket-Version", "8"),
                StatusCode::UPGRADE_REQUIRED,
            ),
            (
                request().header("Sec-WebSocket-Extensions", "a; =b"),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (i, (builder, status)) in cases.into_iter().enumerate() {
            let err = validate(builder).unwrap_err();
            assert_eq!(err.status(), status, "case {i}: {err}");
        }
    }

    #[test]
    fn protocol_selection_uses_server_order() {
        let up = validate(
            request()
                .header("Sec-WebSocket-Protocol", "a, b")
                .header("Sec-WebSocket-Protocol", "c"),
        )
        .unwrap();
        assert_eq!(up.protocols(), ["a", "b", "c"]);
        assert_eq!(up.select_protocol(&["c", "a"]), Some("c"));
        assert_eq!(up.select_protocol(&["z"]), None);
    }
}
