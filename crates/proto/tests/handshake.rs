//! The opening handshake's decisions, on bytes: which request a server upgrades and which it
//! refuses with which status (RFC 6455 section 4.2.1, 4.4), and which response a client
//! refuses (section 4.1). Requests and responses are written as text here and go through the
//! same steps as in the I/O layer: `head::parse_request` with the default limits,
//! `UpgradeRequest::validate`, then `accept` or `reject_error`, written with
//! `head::write_response`; the answer is read back by the testkit's independent parser.
//! (What needs a socket, timeouts and heads split over reads, is tested in `duplex`.)

use duplex_proto::handshake::client::ClientHandshake;
use duplex_proto::handshake::head::{self, HeadLimits};
use duplex_proto::handshake::server::{reject_error, UpgradeRequest};
use duplex_proto::handshake::HandshakeError;
use duplex_testkit::http::{
    parse_response, request_head, switching_protocols, RawResponse, UPGRADE_HEADERS,
};
use duplex_testkit::{accept_key, ACCEPT, KEY};

/// What a server makes of `request`: its decision, and the response it writes.
fn answer(request: &[u8]) -> (Result<UpgradeRequest, HandshakeError>, RawResponse) {
    let decision = match head::parse_request(request, HeadLimits::default()) {
        Ok(Some((req, len))) => {
            assert_eq!(len, request.len(), "the whole head is taken");
            UpgradeRequest::validate(&req)
        }
        Ok(None) => panic!("an incomplete head: {:?}", String::from_utf8_lossy(request)),
        Err(e) => Err(e),
    };
    let mut out = Vec::new();
    match &decision {
        Ok(upgrade) => head::write_response(&upgrade.accept(None).map(|()| ""), &mut out),
        Err(e) => head::write_response(&reject_error(e), &mut out),
    }
    (decision, parse_response(&out))
}

/// A request to `/ws` with the valid upgrade headers, `drop` left out and `extra` added.
fn request(method: &str, drop: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers: Vec<(&str, &str)> = UPGRADE_HEADERS
        .iter()
        .copied()
        .filter(|(name, _)| *name != drop)
        .collect();
    headers.extend_from_slice(extra);
    request_head(method, "/ws", &headers).into_bytes()
}

/// A refused request: the status answered and the error reported.
fn refused(request: &[u8]) -> (RawResponse, HandshakeError) {
    let (decision, response) = answer(request);
    let err = decision.expect_err("the request must be refused");
    assert_eq!(response.status, err.status().as_u16(), "{err}");
    assert!(!response.body.is_empty(), "the body says why");
    assert_eq!(response.header("connection"), Some("close"));
    (response, err)
}

/// Section 4.2.1: what a server reads in the client's opening handshake.
mod reading_the_clients_opening_handshake {
    use super::*;

    #[test]
    fn the_rfc_sample_request_is_upgraded() {
        let (decision, response) = answer(request("GET", "", &[]).as_slice());
        decision.unwrap();
        assert_eq!(response.status, 101);
        assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
        assert_eq!(response.header("upgrade"), Some("websocket"));
    }

    /// Firefox sends `Connection: keep-alive, Upgrade`; header names and the Upgrade token are
    /// case-insensitive.
    #[test]
    fn a_browser_style_request_is_upgraded() {
        let raw = format!(
            "GET /chat HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: WebSocket\r\n\
             connection: keep-alive, Upgrade\r\nsec-websocket-key: {KEY}\r\n\
             sec-websocket-version: 13\r\nOrigin: http://example.com\r\n\r\n"
        );
        let (decision, response) = answer(raw.as_bytes());
        decision.unwrap();
        assert_eq!(response.status, 101);
        assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
        assert!(response
            .header("upgrade")
            .unwrap()
            .eq_ignore_ascii_case("websocket"));
    }

    /// "An HTTP/1.1 or higher GET request": another method is 405 with `Allow: GET`.
    #[test]
    fn post_is_405_allowing_get() {
        let (response, err) = refused(&request("POST", "", &[("Content-Length", "0")]));
        assert_eq!(response.status, 405);
        assert_eq!(response.header("allow"), Some("GET"));
        assert_eq!(err, HandshakeError::MethodNotAllowed("POST".into()));
    }

    #[test]
    fn http_1_0_is_505() {
        let raw = String::from_utf8(request("GET", "", &[]))
            .unwrap()
            .replacen("HTTP/1.1", "HTTP/1.0", 1);
        let (response, err) = refused(raw.as_bytes());
        assert_eq!(response.status, 505);
        assert_eq!(err, HandshakeError::HttpVersion);
    }

    #[test]
    fn missing_upgrade_is_400() {
        let (response, err) = refused(&request("GET", "Upgrade", &[]));
        assert_eq!(response.status, 400);
        assert_eq!(err, HandshakeError::Upgrade);
    }

    #[test]
    fn missing_connection_upgrade_is_400() {
        let (response, err) = refused(&request("GET", "Connection", &[]));
        assert_eq!(response.status, 400);
        assert_eq!(err, HandshakeError::Connection);
    }

    /// The key must be 16 bytes in base64.
    #[test]
    fn a_bad_or_missing_key_is_400() {
        let short = request(
            "GET",
            "Sec-WebSocket-Key",
            &[("Sec-WebSocket-Key", "c2hvcnQ=")],
        );
        let missing = request("GET", "Sec-WebSocket-Key", &[]);
        for raw in [short, missing] {
            let (response, err) = refused(&raw);
            assert_eq!(response.status, 400);
            assert_eq!(err, HandshakeError::Key);
        }
    }

    /// Section 4.4: a version the server does not speak is answered with the versions it does.
    #[test]
    fn version_8_is_426_naming_version_13() {
        let raw = request(
            "GET",
            "Sec-WebSocket-Version",
            &[("Sec-WebSocket-Version", "8")],
        );
        let (response, err) = refused(&raw);
        assert_eq!(response.status, 426);
        assert_eq!(response.header("sec-websocket-version"), Some("13"));
        assert_eq!(err, HandshakeError::Version);
    }

    #[test]
    fn a_ten_kib_header_is_431() {
        let big = "x".repeat(10 * 1024);
        let (response, err) = refused(&request("GET", "", &[("X-Big", &big)]));
        assert_eq!(response.status, 431);
        assert!(
            matches!(err, HandshakeError::HeadTooLarge { .. }),
            "{err:?}"
        );
    }

    /// A head over the byte limit is refused as soon as that much has arrived, without
    /// waiting for its end.
    #[test]
    fn a_head_over_the_limit_is_refused_before_it_ends() {
        let limits = HeadLimits::default();
        let mut raw = request_head("GET", "/ws", &UPGRADE_HEADERS).into_bytes();
        raw.truncate(raw.len() - 2);
        raw.extend(std::iter::repeat_n(b'x', limits.max_bytes));
        let err = head::parse_request(&raw, limits).unwrap_err();
        assert!(
            matches!(err, HandshakeError::HeadTooLarge { .. }),
            "{err:?}"
        );
        assert!(head::parse_request(&raw[..limits.max_bytes - 1], limits)
            .unwrap()
            .is_none());
    }

    #[test]
    fn too_many_headers_is_431() {
        let many: Vec<(String, String)> = (0..100)
            .map(|i| (format!("X-H{i}"), "1".to_owned()))
            .collect();
        let extra: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let (response, err) = refused(&request("GET", "", &extra));
        assert_eq!(response.status, 431);
        assert!(
            matches!(err, HandshakeError::HeadTooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_malformed_head_is_400() {
        let (response, err) = refused(b"GET /ws HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n");
        assert_eq!(response.status, 400);
        assert!(matches!(err, HandshakeError::Malformed(_)), "{err:?}");
    }
}

/// Section 4.1: "the client MUST validate the server's response".
mod validating_the_servers_response {
    use super::*;

    /// A client offering subprotocols `a` and `b`, and its decision on the response `raw`
    /// (from the status line to the blank line).
    fn validate(raw: impl FnOnce(&str) -> String) -> Result<Option<String>, HandshakeError> {
        let hs = ClientHandshake::new(&"ws://127.0.0.1/".parse().unwrap())
            .unwrap()
            .protocol("a")
            .protocol("b");
        let raw = raw(&accept_key(hs.key()));
        let (response, len) = head::parse_response(raw.as_bytes(), HeadLimits::default())
            .unwrap()
            .expect("a whole head");
        assert_eq!(len, raw.len());
        hs.validate(&response).map(|negotiated| negotiated.protocol)
    }

    #[test]
    fn the_right_accept_key_and_an_offered_protocol_are_accepted() {
        let chosen =
            validate(|accept| switching_protocols(accept, "Sec-WebSocket-Protocol: b\r\n"));
        assert_eq!(chosen, Ok(Some("b".into())));
        assert_eq!(validate(|accept| switching_protocols(accept, "")), Ok(None));
    }

    /// The accept key of another request (here the RFC sample's) is refused.
    #[test]
    fn a_wrong_accept_key_is_refused() {
        assert_eq!(
            validate(|_| switching_protocols(ACCEPT, "")),
            Err(HandshakeError::Accept)
        );
    }

    #[test]
    fn a_protocol_that_was_not_offered_is_refused() {
        assert_eq!(
            validate(|accept| switching_protocols(accept, "Sec-WebSocket-Protocol: c\r\n")),
            Err(HandshakeError::Protocol("c".into()))
        );
    }

    #[test]
    fn an_extension_that_was_not_offered_is_refused() {
        assert_eq!(
            validate(|accept| switching_protocols(
                accept,
                "Sec-WebSocket-Extensions: permessage-deflate\r\n"
            )),
            Err(HandshakeError::Extension("permessage-deflate".into()))
        );
    }

    #[test]
    fn a_status_other_than_101_is_refused_with_that_status() {
        let err =
            validate(|_| "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into()).unwrap_err();
        assert!(
            matches!(err, HandshakeError::Status { status, .. } if status == 403),
            "{err:?}"
        );
    }

    #[test]
    fn a_101_without_upgrade_websocket_is_refused() {
        let err = validate(|accept| {
            format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
        })
        .unwrap_err();
        assert_eq!(err, HandshakeError::Upgrade);
    }
}
