//! Checks to make before accepting an upgrade: an `Origin` allowlist, credentials from the
//! `Authorization` header, the query string or a cookie, and a cap on connections. Each refusal
//! is a [`Rejection`] with the status a client expects (401, 403, 503) and a one-line reason.
//!
//! They take an [`http::Request`] of any body type, so they work in an
//! [`accept_with`](crate::accept_with) callback (through
//! [`Incoming::request`](crate::Incoming::request)) and with `duplex::hyper`-style
//! integrations alike. Authenticate *before* the upgrade: once the 101 is sent, the only way
//! to refuse is a close frame, which browsers do not show to scripts in any detail.
//!
//! ```no_run
//! use duplex::auth::{self, ConnectionLimit, OriginPolicy};
//! # async fn run(tcp: tokio::net::TcpStream) -> duplex::Result<()> {
//! let origins = OriginPolicy::new(["https://chat.example.com"]);
//! let limit = ConnectionLimit::new(10_000);
//! let mut permit = None;
//! let ws = duplex::accept_with(tcp, duplex::Config::default(), |incoming| {
//!     origins.check(incoming.request())?;
//!     // Browsers cannot set headers on a WebSocket, so accept `?token=` too.
//!     auth::require_token(incoming.request(), "token", |token| token == "s3cret")?;
//!     permit = Some(limit.try_acquire()?);
//!     Ok(())
//! })
//! .await?;
//! // `permit` is released when dropped, with the connection.
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, COOKIE, ORIGIN};
use http::{Request, StatusCode};

use crate::Rejection;

/// Which `Origin`s may open a WebSocket.
///
/// Browsers send `Origin` with every WebSocket handshake and let any page open one to any
/// server, with the user's cookies: without this check, a page on another site can talk to
/// your server as your user (cross-site WebSocket hijacking).
///
/// Entries are `scheme://host[:port]` (compared without regard to case), `https://*.example.com`
/// for every subdomain of `example.com` (not `example.com` itself), or `*` for any origin.
/// Requests without `Origin` come from non-browser clients, which could send any `Origin` they
/// like anyway; they are allowed unless [`OriginPolicy::allow_missing`] says otherwise.
///
/// ```
/// use duplex::auth::OriginPolicy;
/// let policy = OriginPolicy::new(["https://example.com", "https://*.example.com"]);
/// assert!(policy.is_allowed(Some("https://example.com")));
/// assert!(policy.is_allowed(Some("https://app.example.com")));
/// assert!(!policy.is_allowed(Some("https://example.com.evil.net")));
/// assert!(!policy.is_allowed(Some("http://example.com")));
/// assert!(policy.is_allowed(None));
/// assert!(!policy.allow_missing(false).is_allowed(None));
/// ```
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    allow_missing: bool,
}

impl OriginPolicy {
    /// A policy allowing these origins.
    pub fn new<I, T>(allowed: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        OriginPolicy {
            allowed: allowed.into_iter().map(|o| normalize(o.as_ref())).collect(),
            allow_missing: true,
        }
    }

    /// Whether a request without `Origin` is allowed (default: yes).
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// Whether `origin` (the header's value, if any) is allowed.
    pub fn is_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return self.allow_missing;
        };
        let origin = normalize(origin);
        self.allowed.iter().any(|pattern| {
            if pattern == "*" || *pattern == origin {
                return true;
            }
            // "scheme://*.domain[:port]" matches "scheme://sub.domain[:port]".
            let (Some((p_scheme, p_rest)), Some((o_scheme, o_rest))) =
                (pattern.split_once("://"), origin.split_once("://"))
            else {
                return false;
            };
            match p_rest.strip_prefix("*.") {
                Some(suffix) => {
                    p_scheme == o_scheme
                        && o_rest.len() > suffix.len() + 1
                        && o_rest.ends_with(suffix)
                        && o_rest.as_bytes()[o_rest.len() - suffix.len() - 1] == b'.'
                }
                None => false,
            }
        })
    }

    /// Refuses with 403 Forbidden unless the request's `Origin` is allowed.
    ///
    /// ```
    /// use duplex::auth::OriginPolicy;
    /// let policy = OriginPolicy::new(["https://example.com"]);
    /// let request = http::Request::get("/").header("origin", "https://evil.example").body(())?;
    /// assert_eq!(policy.check(&request).unwrap_err().status(), 403);
    /// # Ok::<_, http::Error>(())
    /// ```
    pub fn check<B>(&self, request: &Request<B>) -> Result<(), Rejection> {
        let origin = request.headers().get(ORIGIN).map(|v| v.to_str());
        match origin {
            None if self.is_allowed(None) => Ok(()),
            Some(Ok(o)) if self.is_allowed(Some(o)) => Ok(()),
            None => Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "an Origin header is required",
            )),
            Some(_) => Err(Rejection::new(StatusCode::FORBIDDEN, "origin not allowed")),
        }
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Refuses with 403 unless the request's `Origin` is one of `allowed` (see
/// [`OriginPolicy`] for the patterns; a request without `Origin` passes).
///
/// ```
/// let request = http::Request::get("/").header("origin", "https://example.com").body(())?;
/// assert!(duplex::auth::check_origin(&request, &["https://example.com"]).is_ok());
/// # Ok::<_, http::Error>(())
/// ```
pub fn check_origin<B>(request: &Request<B>, allowed: &[&str]) -> Result<(), Rejection> {
    OriginPolicy::new(allowed).check(request)
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 section 2.1).
///
/// ```
/// let request = http::Request::get("/").header("authorization", "Bearer abc.def").body(())?;
/// assert_eq!(duplex::auth::bearer_token(&request), Some("abc.def"));
/// # Ok::<_, http::Error>(())
/// ```
pub fn bearer_token<B>(request: &Request<B>) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of a query-string parameter, percent-decoded.
///
/// ```
/// let request = http::Request::get("/chat?room=a%20b&token=xyz").body(())?;
/// assert_eq!(duplex::auth::query_param(&request, "room").as_deref(), Some("a b"));
/// # Ok::<_, http::Error>(())
/// ```
pub fn query_param<'a, B>(request: &'a Request<B>, name: &str) -> Option<Cow<'a, str>> {
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// A credential from the `Authorization: Bearer` header or, failing that, from the query
/// parameter `query_name`: browsers cannot set headers on a WebSocket handshake, so a page
/// passes its token in the URL (prefer a short-lived one: URLs end up in logs).
pub fn token<'a, B>(request: &'a Request<B>, query_name: &str) -> Option<Cow<'a, str>> {
    bearer_token(request)
        .map(Cow::Borrowed)
        .or_else(|| query_param(request, query_name))
}

/// The value of a cookie, from any `Cookie` header of the request.
///
/// ```
/// let request = http::Request::get("/").header("cookie", "theme=dark; session=42").body(())?;
/// assert_eq!(duplex::auth::cookie(&request, "session"), Some("42"));
/// # Ok::<_, http::Error>(())
/// ```
pub fn cookie<'a, B>(request: &'a Request<B>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Refuses with 401 unless [`token`] finds a credential that `verify` accepts.
///
/// ```
/// let ok = http::Request::get("/?token=s3cret").body(())?;
/// assert!(duplex::auth::require_token(&ok, "token", |t| t == "s3cret").is_ok());
/// let wrong = http::Request::get("/?token=guess").body(())?;
/// assert_eq!(duplex::auth::require_token(&wrong, "token", |t| t == "s3cret").unwrap_err().status(), 401);
/// # Ok::<_, http::Error>(())
/// ```
pub fn require_token<B>(
    request: &Request<B>,
    query_name: &str,
    verify: impl FnOnce(&str) -> bool,
) -> Result<(), Rejection> {
    match token(request, query_name) {
        None => Err(Rejection::unauthorized("missing credentials")),
        Some(t) if verify(&t) => Ok(()),
        Some(_) => Err(Rejection::unauthorized("invalid credentials")),
    }
}

/// A cap on simultaneous connections: [`ConnectionLimit::try_acquire`] hands out a
/// [`ConnectionPermit`] while fewer than the maximum are held, and refuses with 503 otherwise.
/// Keep the permit with the connection; dropping it frees the place.
///
/// ```
/// use duplex::auth::ConnectionLimit;
/// let limit = ConnectionLimit::new(1);
/// let first = limit.try_acquire().unwrap();
/// assert_eq!(limit.try_acquire().unwrap_err().status(), 503);
/// drop(first);
/// assert!(limit.try_acquire().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    in_use: Arc<AtomicUsize>,
    max: usize,
}

/// A place taken in a [`ConnectionLimit`], given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    in_use: Arc<AtomicUsize>,
}

impl ConnectionLimit {
    /// A limit of `max` simultaneous connections.
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            in_use: Arc::default(),
            max,
        }
    }

    /// Takes a place, or refuses with 503 and `Retry-After: 1`.
    pub fn try_acquire(&self) -> Result<ConnectionPermit, Rejection> {
        let taken = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(ConnectionPermit {
                in_use: self.in_use.clone(),
            }),
            Err(_) => Err(Rejection::unavailable(
                "too many connections",
                Duration::from_secs(1),
            )),
        }
    }

    /// Places taken now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}
