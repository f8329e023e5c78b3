//! The client's half of the opening handshake: build the upgrade request, then check that the
//! server's answer really accepts it.

use base64::Engine;
use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};

use super::extensions::{self, Extension};
use super::{accept_key, header_has_token, HandshakeError};

/// A client handshake in progress: the request to send and what its answer must contain.
///
/// ```
/// use duplex_proto::handshake::client::ClientHandshake;
/// let uri: http::Uri = "ws://example.com:9000/chat?room=a".parse().unwrap();
/// let hs = ClientHandshake::new(&uri).unwrap().protocol("chat");
/// let req = hs.request();
/// assert_eq!(req.uri().path_and_query().unwrap(), "/chat?room=a");
/// assert_eq!(req.headers()["host"], "example.com:9000");
/// assert_eq!(req.headers()["sec-websocket-protocol"], "chat");
/// ```
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    uri: Uri,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<Extension>,
    headers: HeaderMap,
}

/// What the server agreed to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with the parameters it answered.
    pub extensions: Vec<Extension>,
}

impl ClientHandshake {
    /// Starts a handshake for a `ws://` or `wss://` URL with a fresh random key.
    pub fn new(uri: &Uri) -> Result<ClientHandshake, HandshakeError> {
        let scheme = uri.scheme_str().unwrap_or("");
        if !matches!(scheme, "ws" | "wss" | "http" | "https") {
            return Err(HandshakeError::Url(format!(
                "scheme {scheme:?} is not ws or wss"
            )));
        }
        if matches!(uri.host(), None | Some("")) {
            return Err(HandshakeError::Url("no host".into()));
        }
        let key: [u8; 16] = rand::random();
        Ok(ClientHandshake {
            uri: uri.clone(),
            key: base64::engine::general_purpose::STANDARD.encode(key),
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: HeaderMap::new(),
        })
    }

    /// Offers a subprotocol; offers are sent in the order they are added.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offers an extension; the server may accept it with its own parameters.
    pub fn extension(mut self, extension: Extension) -> Self {
        self.extensions.push(extension);
        self
    }

    /// Adds a header to the request (`Authorization`, `Origin`, cookies, ...).
    pub fn header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request to send.
    pub fn request(&self) -> Request<()> {
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::new(());
        *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        let h = req.headers_mut();
        if let Some(host) = host_header(&self.uri) {
            h.insert(HOST, host);
        }
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(key) = HeaderValue::from_str(&self.key) {
            h.insert(SEC_WEBSOCKET_KEY, key);
        }
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        if !self.protocols.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&self.protocols.join(", ")) {
                h.insert(SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        if !self.extensions.is_empty() {
            let list: Vec<String> = self.extensions.iter().map(Extension::to_string).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                h.insert(SEC_WEBSOCKET_EXTENSIONS, v);
            }
        }
        for (name, value) in &self.headers {
            h.append(name.clone(), value.clone());
        }
        req
    }

    /// Checks the server's response (RFC 6455 section 4.2.2, point 5 of 4.1).
    ///
    /// Anything but a 101 is [`HandshakeError::Status`] (its `body` is left empty: reading
    /// the body is up to the caller). The accept key must match, a subprotocol must be one that
    /// was offered, and every extension must be one that was offered.
    pub fn validate<B>(&self, resp: &Response<B>) -> Result<Negotiated, HandshakeError> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::Status {
                status: resp.status(),
                body: String::new(),
            });
        }
        let h = resp.headers();
        if !header_has_token(h, &UPGRADE, "websocket") {
            return Err(HandshakeError::Upgrade);
        }
        if !header_has_token(h, &CONNECTION, "upgrade") {
            return Err(HandshakeError::Connection);
        }
        let expected = accept_key(self.key.as_bytes());
        if h.get(SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
            return Err(HandshakeError::Accept);
        }
        let mut chosen = h.get_all(SEC_WEBSOCKET_PROTOCOL).iter();
        let protocol = match (chosen.next(), chosen.next()) {
            (None, _) => None,
            (Some(v), None) => {
                let p = v.to_str().unwrap_or("").trim();
                if !self.protocols.iter().any(|o| o == p) {
                    return Err(HandshakeError::Protocol(p.to_owned()));
                }
                Some(p.to_owned())
            }
            (Some(_), Some(_)) => {
                return Err(HandshakeError::Protocol("several".to_owned()));
            }
        };
        let extensions = extensions::parse_all(h)?;
        for ext in &extensions {
            if !self.extensions.iter().any(|o| o.name == ext.name) {
                return Err(HandshakeError::Extension(ext.name.clone()));
            }
        }
        Ok(Negotiated {
            protocol,
            extensions,
        })
    }
}

/// `Host`: the authority without userinfo, and without the port when it is the default one.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default = match uri.scheme_str() {
        Some("wss" | "https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::server::UpgradeRequest;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn request_is_accepted_by_our_server_and_back() {
        let hs = ClientHandshake::new(&uri("ws://localhost/x"))
            .unwrap()
            .protocol("a")
            .protocol("b");
        let req = hs.request();
        assert_eq!(req.headers()["host"], "localhost");
        let up = UpgradeRequest::validate(&req).unwrap();
        let resp = up.accept(up.select_protocol(&["b"]));
        let neg = hs.validate(&resp).unwrap();
        assert_eq!(neg.protocol.as_deref(), Some("b"));
    }

    #[test]
    fn bad_urls() {
        assert!(ClientHandshake::new(&uri("ftp://x/")).is_err());
        assert!(ClientHandshake::new(&uri("/relative")).is_err());
    }

    #[test]
    fn rejects_wrong_answers() {
        let hs = ClientHandshake::new(&uri("ws://h/")).unwrap().protocol("a");
        let up = UpgradeRequest::validate(&hs.request()).unwrap();

        let mut wrong_key = up.accept(None);
        wrong_key.headers_mut().insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert_eq!(hs.validate(&wrong_key), Err(HandshakeError::Accept));

        assert_eq!(
            hs.validate(&up.accept(Some("other"))),
            Err(HandshakeError::Protocol("other".into()))
        );

        let mut ext = up.accept(None);
        ext.headers_mut().insert(
            SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate"),
        );
        assert_eq!(
            hs.validate(&ext),
            Err(HandshakeError::Extension("permessage-deflate".into()))
        );

        let forbidden = Response::builder().status(403).body(()).unwrap();
        assert!(matches!(
            hs.validate(&forbidden),
            Err(HandshakeError::Status { status, .. }) if status == 403
        ));
    }
}
