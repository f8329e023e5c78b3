//! Close codes and close frames (RFC 6455 sections 5.5.1 and 7.4).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::message::Utf8Bytes;

/// A status code carried by a close frame.
///
/// ```
/// use duplex_proto::CloseCode;
/// assert!(CloseCode::NORMAL.is_sendable());
/// assert!(!CloseCode::NO_STATUS.is_sendable()); // 1005 only ever reports "no code received"
/// assert_eq!(u16::from(CloseCode::TOO_BIG), 1009);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: a message of a type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: reported locally when a close frame had no code; never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: reported locally when the connection dropped without a close frame; never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data was inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy (rate limits, authorization).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a frame or message was too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (temporary overload).
    pub const TRY_AGAIN: CloseCode = CloseCode(1013);

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// 1000-1003 and 1007-1014 are defined by the RFC and the IANA registry, 3000-3999 are for
    /// libraries and frameworks, 4000-4999 for applications. Everything else, including 1005,
    /// 1006 and 1015 which only report local conditions, is invalid on the wire.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The code and reason of a close frame.
///
/// ```
/// use duplex_proto::{CloseCode, CloseFrame};
/// let frame = CloseFrame::new(CloseCode::GOING_AWAY, "server restart");
/// assert_eq!(frame.reason.as_str(), "server restart");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// Why the connection closed, for humans; at most 123 bytes of UTF-8.
    pub reason: Utf8Bytes,
}

/// The longest reason that fits a control frame beside its two-byte code.
pub const MAX_REASON_LEN: usize = 123;

impl CloseFrame {
    /// A close frame with a code and a reason.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }

    /// Decodes the payload of a received close frame.
    ///
    /// An empty payload means the peer gave no code (`Ok(None)`); one byte, a code that is not
    /// valid on the wire, or a reason that is not UTF-8 fail the connection.
    pub fn parse(payload: Bytes) -> Result<Option<CloseFrame>, Error> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(Error::InvalidClosePayload),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_sendable() {
                    return Err(Error::InvalidCloseCode(code.0));
                }
                let reason =
                    Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| Error::InvalidUtf8)?;
                Ok(Some(CloseFrame { code, reason }))
            }
        }
    }

    /// Checks that this frame may be sent: a valid wire code and a reason that fits.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.code.is_sendable() {
            return Err(Error::UnsendableCloseCode(self.code.0));
        }
        if self.reason.len() > MAX_REASON_LEN {
            return Err(Error::ReasonTooLong(self.reason.len()));
        }
        Ok(())
    }

    /// The frame's payload: the code in network order followed by the reason.
    pub fn to_payload(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + self.reason.len());
        out.put_u16(self.code.0);
        out.put_slice(self.reason.as_bytes());
        out.freeze()
    }

    /// A close frame for a failure, its reason cut at a character boundary to fit.
    pub(crate) fn truncated(code: CloseCode, reason: &str) -> CloseFrame {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseFrame::new(code, Utf8Bytes::from(reason[..end].to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(code).is_sendable(), "{code}");
        }
        // The invalid codes Autobahn 7.9.x sends, plus the local-only ones.
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000] {
            assert!(!CloseCode(code).is_sendable(), "{code}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(CloseFrame::parse(Bytes::new()), Ok(None));
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03])),
            Err(Error::InvalidClosePayload)
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xe8, b'o', b'k'])),
            Ok(Some(CloseFrame::new(CloseCode::NORMAL, "ok")))
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xed])),
            Err(Error::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xe8, 0xff])),
            Err(Error::InvalidUtf8)
        );
    }

    #[test]
    fn truncation_keeps_utf8() {
        let long = "é".repeat(100); // 200 bytes
        let frame = CloseFrame::truncated(CloseCode::PROTOCOL, &long);
        assert!(frame.reason.len() <= MAX_REASON_LEN);
        assert!(frame.validate().is_ok());
    }
}
