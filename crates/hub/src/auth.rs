//! Who may open a WebSocket: the shared token and the `Origin` allowlist, checked on the
//! upgrade request before any WebSocket exists.

use http::header::{AUTHORIZATION, ORIGIN};
use http::{HeaderMap, StatusCode};

use crate::config::HubConfig;
use crate::metrics::Rejection;

/// Why an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token, or the wrong one: 401.
    Unauthorized,
    /// A browser on a page from another origin: 403.
    Origin,
}

impl Denied {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Denied::Unauthorized => StatusCode::UNAUTHORIZED,
            Denied::Origin => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Denied::Unauthorized => "missing or wrong token (Authorization: Bearer or ?token=)",
            Denied::Origin => "origin not allowed",
        }
    }

    pub(crate) fn metric(self) -> Rejection {
        match self {
            Denied::Unauthorized => Rejection::Unauthorized,
            Denied::Origin => Rejection::Origin,
        }
    }
}

/// Checks an upgrade request's credentials. `query_token` is the `token` query parameter.
pub(crate) fn check(
    config: &HubConfig,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), Denied> {
    if let Some(expected) = &config.token {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let ok = [bearer, query_token]
            .into_iter()
            .flatten()
            .any(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()));
        if !ok {
            return Err(Denied::Unauthorized);
        }
    }
    if !config.allowed_origins.is_empty() {
        // Only browsers send Origin, and only they can be tricked into connecting by another
        // site; a client without it is a program acting for itself (the token guards those).
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
            let allowed = config
                .allowed_origins
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
            if !allowed {
                return Err(Denied::Origin);
            }
        }
    }
    Ok(())
}

/// Compares without stopping at the first difference, so response times do not tell an
/// attacker how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn token_is_accepted_as_bearer_or_query_parameter() {
        let config = HubConfig::new("unused").token("s3cret");
        let none = HeaderMap::new();
        assert_eq!(check(&config, &none, None), Err(Denied::Unauthorized));
        assert_eq!(
            check(&config, &none, Some("wrong")),
            Err(Denied::Unauthorized)
        );
        assert_eq!(check(&config, &none, Some("s3cret")), Ok(()));
        let bearer = headers(&[(AUTHORIZATION, "Bearer s3cret")]);
        assert_eq!(check(&config, &bearer, None), Ok(()));
        let basic = headers(&[(AUTHORIZATION, "Basic s3cret")]);
        assert_eq!(check(&config, &basic, None), Err(Denied::Unauthorized));
    }

    #[test]
    fn origin_allowlist_applies_to_browsers_only() {
        let config = HubConfig::new("unused").allowed_origin("http://localhost:8080");
        let ok = headers(&[(ORIGIN, "http://localhost:8080")]);
        let bad = headers(&[(ORIGIN, "https://evil.example")]);
        assert_eq!(check(&config, &ok, None), Ok(()));
        assert_eq!(check(&config, &bad, None), Err(Denied::Origin));
        assert_eq!(check(&config, &HeaderMap::new(), None), Ok(()));
    }
}
