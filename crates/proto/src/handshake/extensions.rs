//! The `Sec-WebSocket-Extensions` header (RFC 6455 section 9.1).
//!
//! ```text
//! Sec-WebSocket-Extensions = extension-list
//! extension-list = 1#extension
//! extension = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//! A quoted-string value must itself be a token once unquoted.

use std::fmt;

use super::HandshakeError;

/// One extension in a `Sec-WebSocket-Extensions` header: a name and its parameters.
///
/// ```
/// use duplex_proto::handshake::extensions::{parse, Extension};
/// let exts = parse("permessage-deflate; client_max_window_bits, x-foo; a=\"1\"").unwrap();
/// assert_eq!(exts[0].name, "permessage-deflate");
/// assert_eq!(exts[0].params, vec![("client_max_window_bits".to_string(), None)]);
/// assert_eq!(exts[1].param("a"), Some(Some("1")));
/// assert_eq!(exts[1].to_string(), "x-foo; a=1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order: name and optional value (quotes removed).
    pub params: Vec<(String, Option<String>)>,
}

impl Extension {
    /// The value of a parameter: `None` if absent, `Some(None)` if present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            match value {
                Some(v) => write!(f, "; {name}={v}")?,
                None => write!(f, "; {name}")?,
            }
        }
        Ok(())
    }
}

/// Parses one `Sec-WebSocket-Extensions` header value into its extensions, in order.
pub fn parse(value: &str) -> Result<Vec<Extension>, HandshakeError> {
    let mut p = Parser {
        s: value.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(b',') {
            // Empty list elements are allowed by the #rule.
            continue;
        }
        if p.done() {
            break;
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.skip_ws();
            if !p.eat(b';') {
                break;
            }
            p.skip_ws();
            let pname = p.token()?;
            p.skip_ws();
            let pvalue = if p.eat(b'=') {
                p.skip_ws();
                Some(if p.peek() == Some(b'"') {
                    let v = p.quoted()?;
                    if v.is_empty() || !v.bytes().all(is_tchar) {
                        return Err(p.error("quoted parameter value is not a token"));
                    }
                    v
                } else {
                    p.token()?
                })
            } else {
                None
            };
            params.push((pname, pvalue));
        }
        out.push(Extension { name, params });
        p.skip_ws();
        if !p.done() && !p.eat(b',') {
            return Err(p.error("expected ',' between extensions"));
        }
    }
    Ok(out)
}

/// Parses every `Sec-WebSocket-Extensions` header in `headers`, in order.
pub fn parse_all(headers: &http::HeaderMap) -> Result<Vec<Extension>, HandshakeError> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::SEC_WEBSOCKET_EXTENSIONS) {
        let value = value
            .to_str()
            .map_err(|_| HandshakeError::ExtensionSyntax("non-ASCII header value".into()))?;
        out.extend(parse(value)?);
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.pos >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }
    fn error(&self, what: &str) -> HandshakeError {
        HandshakeError::ExtensionSyntax(format!("{what} at byte {}", self.pos))
    }
    fn token(&mut self) -> Result<String, HandshakeError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error("expected a token"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }
    fn quoted(&mut self) -> Result<String, HandshakeError> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(c) = self.peek() else {
                        return Err(self.error("unterminated quoted string"));
                    };
                    out.push(c);
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_offers_with_params() {
        let exts = parse(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate",
        )
        .unwrap();
        assert_eq!(exts.len(), 2);
        assert_eq!(exts[0].param("server_max_window_bits"), Some(Some("10")));
        assert_eq!(exts[0].param("client_max_window_bits"), Some(None));
        assert_eq!(exts[1].params, vec![]);
    }

    #[test]
    fn quoted_values_and_empty_elements() {
        let exts = parse(" , a; b=\"1\\0\" ,, c ").unwrap();
        assert_eq!(exts[0].param("b"), Some(Some("10")));
        assert_eq!(exts[1].name, "c");
    }

    #[test]
    fn malformed() {
        for bad in [
            "a;",
            "a; =1",
            "a b",
            "a; b=\"\"",
            "a; b=\"x y\"",
            "a; b=\"open",
            ";a",
            "a; b=",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
