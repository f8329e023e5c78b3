//! Who may open a WebSocket on this hub: the shared token or a signed token (JWT, see
//! [`crate::identity`]) and the `Origin` allowlist, read from the upgrade request with
//! [`duplex::auth`] before any WebSocket exists.
//!
//! What is the hub's own: the token is compared in constant time, a refusal says how to pass
//! the token, and each refusal is counted under its own metric.

use duplex::auth::{self, OriginPolicy};
use duplex::Rejection as Refusal;
use http::Request;

use crate::config::HubConfig;
use crate::error::Result;
use crate::identity::{Identity, TokenError, Verifier};
use crate::metrics::Rejection;

/// The query parameter that carries the token (browsers cannot set headers on a WebSocket).
const TOKEN_PARAM: &str = "token";

/// The hub's access rules, built once from its [`HubConfig`].
#[derive(Debug)]
pub(crate) struct Access {
    token: Option<String>,
    /// With JWT on, tokens are checked here and `token` is not consulted.
    jwt: Option<Verifier>,
    /// `None`: any origin (the allowlist is empty).
    origins: Option<OriginPolicy>,
}

/// A refused upgrade: the response to send and the metric to count it in.
#[derive(Debug)]
pub(crate) struct Denied {
    pub(crate) refusal: Refusal,
    pub(crate) metric: Rejection,
}

impl Access {
    /// The rules of `config`; fails if its JWT keys cannot be used.
    pub(crate) fn new(config: &HubConfig) -> Result<Access> {
        Ok(Access {
            token: config.token.clone(),
            jwt: config.jwt.as_ref().map(Verifier::new).transpose()?,
            origins: (!config.allowed_origins.is_empty())
                .then(|| OriginPolicy::new(&config.allowed_origins)),
        })
    }

    /// Checks an upgrade request: the token (401 with `WWW-Authenticate: Bearer` and the
    /// reason), then the `Origin` (403; requests without one are not from browsers and pass).
    /// With JWT on, returns the identity the token carries.
    pub(crate) fn check<B>(&self, request: &Request<B>) -> Result<Option<Identity>, Denied> {
        let identity = match &self.jwt {
            Some(verifier) => {
                let verified = match auth::token(request, TOKEN_PARAM) {
                    Some(token) => verifier.verify(&token),
                    None => Err(TokenError::Missing),
                };
                match verified {
                    Ok(identity) => Some(identity),
                    Err(e) => {
                        return Err(Denied {
                            refusal: Refusal::unauthorized(&e.to_string()),
                            metric: Rejection::Unauthorized,
                        })
                    }
                }
            }
            None => None,
        };
        if let Some(expected) = self.token.as_ref().filter(|_| self.jwt.is_none()) {
            let given = auth::token(request, TOKEN_PARAM);
            if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
                return Err(Denied {
                    refusal: Refusal::unauthorized(
                        "missing or wrong token (Authorization: Bearer or ?token=)",
                    ),
                    metric: Rejection::Unauthorized,
                });
            }
        }
        if let Some(origins) = &self.origins {
            origins.check(request).map_err(|refusal| Denied {
                refusal,
                metric: Rejection::Origin,
            })?;
        }
        Ok(identity)
    }
}

/// Compares without stopping at the first difference, so response times do not tell an
/// attacker how much of a guessed token was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use http::header::{AUTHORIZATION, ORIGIN, WWW_AUTHENTICATE};

    use super::*;

    fn request(uri: &str, headers: &[(http::HeaderName, &str)]) -> Request<()> {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(name, *value);
        }
        builder.body(()).expect("a valid request")
    }

    fn status(access: &Access, request: &Request<()>) -> Option<u16> {
        access
            .check(request)
            .err()
            .map(|denied| denied.refusal.status().as_u16())
    }

    #[test]
    fn the_token_is_accepted_as_bearer_or_query_parameter() {
        let access = Access::new(&HubConfig::new("unused").token("s3cret")).unwrap();
        assert_eq!(status(&access, &request("/", &[])), Some(401));
        assert_eq!(status(&access, &request("/?token=wrong", &[])), Some(401));
        assert_eq!(status(&access, &request("/?token=s3cret", &[])), None);
        assert_eq!(status(&access, &request("/?token=s3cre", &[])), Some(401));
        let bearer = request("/", &[(AUTHORIZATION, "Bearer s3cret")]);
        assert_eq!(status(&access, &bearer), None);
        let basic = request("/", &[(AUTHORIZATION, "Basic s3cret")]);
        assert_eq!(status(&access, &basic), Some(401));
    }

    #[test]
    fn a_refused_token_asks_for_a_bearer_token_and_counts_as_unauthorized() {
        let access = Access::new(&HubConfig::new("unused").token("s3cret")).unwrap();
        let denied = access.check(&request("/", &[])).unwrap_err();
        assert_eq!(denied.metric, Rejection::Unauthorized);
        let response = denied.refusal.into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        assert!(response.body().contains("?token="), "{}", response.body());
    }

    #[test]
    fn the_origin_allowlist_applies_to_browsers_only() {
        let access =
            Access::new(&HubConfig::new("unused").allowed_origin("http://localhost:8080")).unwrap();
        let ok = request("/", &[(ORIGIN, "http://LOCALHOST:8080/")]);
        let bad = request("/", &[(ORIGIN, "https://evil.example")]);
        assert_eq!(status(&access, &ok), None);
        let denied = access.check(&bad).unwrap_err();
        assert_eq!(denied.refusal.status(), 403);
        assert_eq!(denied.metric, Rejection::Origin);
        assert_eq!(status(&access, &request("/", &[])), None);
    }

    #[test]
    fn origins_may_be_wildcards() {
        let config = HubConfig::new("unused").allowed_origin("https://*.example.com");
        let access = Access::new(&config).unwrap();
        let sub = request("/", &[(ORIGIN, "https://chat.example.com")]);
        let lookalike = request("/", &[(ORIGIN, "https://example.com.evil.net")]);
        assert_eq!(status(&access, &sub), None);
        assert_eq!(status(&access, &lookalike), Some(403));
    }

    #[test]
    fn without_token_or_allowlist_everyone_may_connect() {
        let access = Access::new(&HubConfig::new("unused")).unwrap();
        let foreign = request("/", &[(ORIGIN, "https://evil.example")]);
        assert_eq!(status(&access, &foreign), None);
    }
}
