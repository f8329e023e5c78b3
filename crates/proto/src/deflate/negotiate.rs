//! Negotiating permessage-deflate (RFC 7692 section 7.1) in the `Sec-WebSocket-Extensions`
//! header, for both roles.
//!
//! A server walks the client's offers in order and accepts the first it can honour; an offer
//! with an unknown, repeated or malformed parameter is declined, not fatal (section 7.1). A
//! client checks that the answer stays within what it offered and fails the handshake
//! otherwise.

use super::{DeflateConfig, DeflateParams, EXTENSION_NAME};
use crate::handshake::extensions::Extension;
use crate::handshake::HandshakeError;

/// The parameters of one offer or answer, checked for syntax.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `Some(bits)` when present.
    server_max_window_bits: Option<u8>,
    /// `Some(None)` when present without a value (allowed only in an offer).
    client_max_window_bits: Option<Option<u8>>,
}

fn parse(ext: &Extension) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &ext.params {
        let name = name.as_str();
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return Err(format!("repeated parameter {name}"));
        }
        seen.push(name);
        match (name.to_ascii_lowercase().as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => p.server_max_window_bits = Some(bits(v)?),
            ("client_max_window_bits", None) => p.client_max_window_bits = Some(None),
            ("client_max_window_bits", Some(v)) => p.client_max_window_bits = Some(Some(bits(v)?)),
            (_, _) => return Err(format!("unexpected parameter {name}")),
        }
    }
    Ok(p)
}

/// A window size: a decimal 8-15 without leading zeros (RFC 7692 section 7.1.2).
fn bits(value: &str) -> Result<u8, String> {
    match value.parse::<u8>() {
        Ok(b @ 8..=15) if !value.starts_with('0') => Ok(b),
        _ => Err(format!("invalid window bits {value:?}")),
    }
}

/// The server's choice: the first offer it can accept, the response extension to send, and
/// the parameters to run with. `None` when there is no acceptable offer (the connection then
/// proceeds uncompressed).
///
/// ```
/// use duplex_proto::deflate::{negotiate::server_accept, DeflateConfig};
/// use duplex_proto::handshake::extensions::parse;
/// let offers = parse("permessage-deflate; client_max_window_bits").unwrap();
/// let (answer, params) = server_accept(&offers, &DeflateConfig::default()).unwrap();
/// assert_eq!(answer.to_string(),
///            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12");
/// assert_eq!(params.decompress_window_bits, 12);
/// ```
pub fn server_accept(
    offers: &[Extension],
    config: &DeflateConfig,
) -> Option<(Extension, DeflateParams)> {
    offers
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|offer| {
            let p = parse(offer).ok()?;
            // Our compressor's window: what we want, within what the client allows.
            let ours = match p.server_max_window_bits {
                Some(8) => return None, // zlib cannot compress with a 256-byte window
                Some(max) => config.window_bits.min(max),
                None => config.window_bits,
            };
            let mut params = Vec::new();
            let compress_reset = p.server_no_context_takeover || config.no_context_takeover;
            if compress_reset {
                params.push(("server_no_context_takeover".to_owned(), None));
            }
            let decompress_reset = p.client_no_context_takeover || config.peer_no_context_takeover;
            if decompress_reset {
                params.push(("client_no_context_takeover".to_owned(), None));
            }
            if ours < 15 || p.server_max_window_bits.is_some() {
                params.push(("server_max_window_bits".to_owned(), Some(ours.to_string())));
            }
            // We may limit the client's window only if it said it understands the parameter.
            let theirs = match p.client_max_window_bits {
                Some(offered) => {
                    let limit = offered.unwrap_or(15).min(config.window_bits);
                    if limit < 15 || offered.is_some() {
                        params.push(("client_max_window_bits".to_owned(), Some(limit.to_string())));
                    }
                    limit
                }
                None => 15,
            };
            Some((
                Extension {
                    name: EXTENSION_NAME.to_owned(),
                    params,
                },
                DeflateParams {
                    compress_window_bits: ours,
                    compress_reset,
                    decompress_window_bits: theirs,
                    decompress_reset,
                    level: config.level,
                    threshold: config.threshold,
                },
            ))
        })
}

/// The client's offer for `config`.
///
/// ```
/// use duplex_proto::deflate::{negotiate::client_offer, DeflateConfig};
/// assert_eq!(client_offer(&DeflateConfig::default().window_bits(15)).to_string(),
///            "permessage-deflate; client_max_window_bits");
/// assert_eq!(client_offer(&DeflateConfig::default()).to_string(),
///            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12");
/// ```
pub fn client_offer(config: &DeflateConfig) -> Extension {
    let mut params = Vec::new();
    if config.no_context_takeover {
        params.push(("client_no_context_takeover".to_owned(), None));
    }
    if config.peer_no_context_takeover {
        params.push(("server_no_context_takeover".to_owned(), None));
    }
    if config.window_bits < 15 {
        params.push((
            "server_max_window_bits".to_owned(),
            Some(config.window_bits.to_string()),
        ));
        params.push((
            "client_max_window_bits".to_owned(),
            Some(config.window_bits.to_string()),
        ));
    } else {
        params.push(("client_max_window_bits".to_owned(), None));
    }
    Extension {
        name: EXTENSION_NAME.to_owned(),
        params,
    }
}

/// Checks the server's answer to [`client_offer`] and gives the parameters to run with.
///
/// Anything the client did not allow fails the connection (RFC 7692 section 7.1).
pub fn client_accept(
    answer: &Extension,
    config: &DeflateConfig,
) -> Result<DeflateParams, HandshakeError> {
    let bad = |why: String| HandshakeError::Extension(format!("{EXTENSION_NAME}: {why}"));
    let p = parse(answer).map_err(bad)?;
    let decompress_window_bits = match p.server_max_window_bits {
        Some(b) if config.window_bits < 15 && b > config.window_bits => {
            return Err(bad(format!(
                "server_max_window_bits={b} exceeds the offered {}",
                config.window_bits
            )))
        }
        Some(b) => b,
        None => 15,
    };
    let compress_window_bits = match p.client_max_window_bits {
        Some(None) => {
            return Err(bad(
                "client_max_window_bits needs a value in an answer".into()
            ))
        }
        Some(Some(8)) => {
            return Err(bad(
                "client_max_window_bits=8 cannot be honoured (zlib needs 9 or more)".into(),
            ))
        }
        Some(Some(b)) => b.min(config.window_bits),
        None => config.window_bits,
    };
    Ok(DeflateParams {
        compress_window_bits,
        compress_reset: p.client_no_context_takeover || config.no_context_takeover,
        decompress_window_bits,
        decompress_reset: p.server_no_context_takeover,
        level: config.level,
        threshold: config.threshold,
    })
}

/// Parameters for a codec test: both directions as `config` asks, as if agreed.
#[doc(hidden)]
pub fn params_for_test(config: DeflateConfig) -> DeflateParams {
    DeflateParams {
        compress_window_bits: config.window_bits,
        compress_reset: config.no_context_takeover,
        decompress_window_bits: config.window_bits,
        decompress_reset: config.no_context_takeover,
        level: config.level,
        threshold: config.threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::extensions::parse as parse_header;

    fn accept(header: &str, config: DeflateConfig) -> Option<(String, DeflateParams)> {
        server_accept(&parse_header(header).unwrap(), &config).map(|(e, p)| (e.to_string(), p))
    }

    #[test]
    fn server_accepts_plain_offer() {
        let (answer, p) = accept(
            "permessage-deflate",
            DeflateConfig::default().window_bits(15),
        )
        .unwrap();
        assert_eq!(answer, "permessage-deflate");
        assert_eq!((p.compress_window_bits, p.decompress_window_bits), (15, 15));
        assert!(!p.compress_reset && !p.decompress_reset);
    }

    #[test]
    fn server_honours_every_parameter() {
        let (answer, p) = accept(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12",
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
        assert_eq!((p.compress_window_bits, p.decompress_window_bits), (10, 12));
        assert!(p.compress_reset && p.decompress_reset);
    }

    #[test]
    fn server_limits_the_client_window_only_when_allowed() {
        let small = DeflateConfig::default().window_bits(11);
        let (answer, p) = accept("permessage-deflate; client_max_window_bits", small).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_max_window_bits=11; client_max_window_bits=11"
        );
        assert_eq!(p.decompress_window_bits, 11);
        let (answer, p) = accept("permessage-deflate", small).unwrap();
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=11");
        assert_eq!(p.decompress_window_bits, 15);
    }

    #[test]
    fn server_declines_bad_offers_and_falls_back() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(accept(bad, DeflateConfig::default()), None, "{bad}");
        }
        let (answer, _) = accept(
            "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=9",
            DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=9");
    }

    #[test]
    fn client_offer_and_answers() {
        let config = DeflateConfig::default().window_bits(15);
        let p = client_accept(&parse_header("permessage-deflate").unwrap()[0], &config).unwrap();
        assert_eq!((p.compress_window_bits, p.decompress_window_bits), (15, 15));
        let p = client_accept(
            &parse_header(
                "permessage-deflate; client_max_window_bits=9; server_no_context_takeover",
            )
            .unwrap()[0],
            &config,
        )
        .unwrap();
        assert_eq!(p.compress_window_bits, 9);
        assert!(p.decompress_reset);
        for bad in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=8",
            "permessage-deflate; unknown=1",
            "permessage-deflate; server_max_window_bits=20",
        ] {
            assert!(
                client_accept(&parse_header(bad).unwrap()[0], &config).is_err(),
                "{bad}"
            );
        }
        let small = DeflateConfig::default().window_bits(10);
        assert_eq!(
            client_offer(&small).to_string(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10"
        );
        assert!(client_accept(
            &parse_header("permessage-deflate; server_max_window_bits=12").unwrap()[0],
            &small
        )
        .is_err());
    }
}
