//! Client connections through a proxy: HTTP `CONNECT` (RFC 9110 section 9.3.6, with Basic
//! credentials) and SOCKS5 (RFC 1928, with RFC 1929 username/password).
//!
//! A [`ClientBuilder`] uses, in this order: the proxy given to [`ClientBuilder::proxy`]; none if
//! [`ClientBuilder::no_proxy`] was called; otherwise the environment, as curl and most HTTP
//! clients read it:
//!
//! - `wss://` URLs use `https_proxy` / `HTTPS_PROXY`, `ws://` URLs `http_proxy` / `HTTP_PROXY`,
//!   both fall back to `all_proxy` / `ALL_PROXY` (lower case first, as curl does);
//! - `no_proxy` / `NO_PROXY` lists hosts to reach directly: `*` for all, `example.com` (which
//!   also covers its subdomains, as does `.example.com`), IP addresses; a `:port` suffix is
//!   ignored;
//! - loopback destinations (`localhost`, `127.0.0.0/8`, `::1`) never use a proxy from the
//!   environment, as in Go's `net/http`: a proxy elsewhere cannot reach this machine's
//!   loopback anyway.
//!
//! Proxy URLs: `http://[user:password@]host[:port]` (port 80 by default), `socks5://...` (the
//! client resolves the destination's name) and `socks5h://...` (the proxy does; port 1080 by
//! default). Credentials are percent-decoded. A value without a scheme means `http://`.
//!
//! The tunnel is set up inside [`ClientBuilder::connect_timeout`]; for `wss://` the TLS
//! handshake then runs end to end with the destination, through the tunnel.

use std::fmt;
use std::io;
use std::net::IpAddr;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ClientBuilder;

/// Longest proxy answer head read before giving up on it.
const MAX_HEAD: usize = 8 * 1024;

/// A proxy to reach WebSocket servers through.
///
/// ```
/// use duplex::proxy::{Proxy, ProxyKind};
/// let proxy = Proxy::parse("http://alice:s%40cret@proxy.internal:3128")?;
/// assert_eq!(proxy.kind(), ProxyKind::Http);
/// assert_eq!((proxy.host(), proxy.port()), ("proxy.internal", 3128));
/// assert_eq!(proxy.username(), Some("alice"));
/// // The password never shows up in logs.
/// assert!(!format!("{proxy:?}").contains("s@cret"));
/// # Ok::<_, duplex::proxy::ProxyError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: ProxyKind,
    host: String,
    port: u16,
    auth: Option<(String, String)>,
}

/// The protocol spoken to a [`Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyKind {
    /// An HTTP proxy, asked for a tunnel with `CONNECT`.
    Http,
    /// A SOCKS5 proxy. With `remote_dns` (`socks5h://`) the proxy resolves the destination's
    /// name; without (`socks5://`) the client does and sends an address.
    Socks5 {
        /// Whether the proxy resolves names.
        remote_dns: bool,
    },
}

/// Why a connection through a proxy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy URL (given, or from an environment variable) cannot be used.
    #[error("invalid proxy URL {url:?}: {reason}")]
    Url {
        /// The URL, with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An HTTP proxy answered `CONNECT` with something other than 2xx (407: credentials
    /// missing or wrong; 403: destination not allowed; 502: destination unreachable).
    #[error("the proxy refused the tunnel: {status} {reason}")]
    Refused {
        /// The proxy's status.
        status: http::StatusCode,
        /// The reason phrase it gave.
        reason: String,
    },
    /// A SOCKS5 proxy refused: no acceptable authentication method, wrong credentials, or a
    /// failure reply to the connect request (RFC 1928 section 6).
    #[error("the SOCKS5 proxy refused: {0}")]
    Socks(String),
    /// The proxy's answer is not valid for its protocol.
    #[error("malformed answer from the proxy: {0}")]
    Malformed(String),
    /// The destination's name did not resolve (for `socks5://`, which resolves locally).
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The connection to the proxy failed.
    #[error("proxy connection failed: {0}")]
    Io(io::Error),
}

// By hand rather than `#[from]`, which would also make the error its `source`: the message
// already says it, and error reporters that print the chain would say it twice.
impl From<io::Error> for ProxyError {
    fn from(e: io::Error) -> Self {
        ProxyError::Io(e)
    }
}

impl ProxyError {
    /// The HTTP status the proxy refused the tunnel with, if it was an HTTP proxy that did.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            ProxyError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Parses a proxy URL: `http://`, `socks5://` or `socks5h://`, with optional
    /// `user:password@` (percent-encoded). Without a scheme, `http://` is assumed.
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let bad = |reason: &str| ProxyError::Url {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        let (kind, default_port) = match parsed.scheme() {
            "http" => (ProxyKind::Http, 80),
            "socks5" => (ProxyKind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, 1080),
            "https" => {
                return Err(bad(
                    "TLS to the proxy itself is not supported; use http:// (the tunnel still \
                     carries wss:// end to end)",
                ))
            }
            other => {
                return Err(bad(&format!(
                    "scheme {other:?} is not supported (use http://, socks5:// or socks5h://)"
                )))
            }
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("no host")),
        };
        let auth = if parsed.username().is_empty() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s)
                    .ok_or_else(|| bad("credentials are not valid percent-encoded UTF-8"))
            };
            Some((
                decode(parsed.username())?,
                decode(parsed.password().unwrap_or(""))?,
            ))
        };
        Ok(Proxy {
            kind,
            host,
            port: parsed.port().unwrap_or(default_port),
            auth,
        })
    }

    /// The proxy the environment names for a `ws://` (`secure == false`) or `wss://`
    /// destination `host`, or `None` if there is none or `NO_PROXY` (or loopback) exempts the
    /// host. See the [module docs](self) for the variables.
    ///
    /// ```
    /// // Loopback destinations never go through a proxy from the environment.
    /// assert!(duplex::proxy::Proxy::from_env(true, "127.0.0.1")?.is_none());
    /// # Ok::<_, duplex::proxy::ProxyError>(())
    /// ```
    pub fn from_env(secure: bool, host: &str) -> Result<Option<Proxy>, ProxyError> {
        Self::from_lookup(|name| std::env::var(name).ok(), secure, host)
    }

    /// [`Proxy::from_env`] with the variables read through `lookup` (for tests, or settings
    /// kept elsewhere).
    ///
    /// ```
    /// use duplex::proxy::Proxy;
    /// let env = |name: &str| match name {
    ///     "HTTPS_PROXY" => Some("http://proxy:3128".to_string()),
    ///     "NO_PROXY" => Some("internal.example, 10.0.0.1".to_string()),
    ///     _ => None,
    /// };
    /// assert_eq!(Proxy::from_lookup(env, true, "example.com")?.unwrap().host(), "proxy");
    /// assert!(Proxy::from_lookup(env, true, "api.internal.example")?.is_none());
    /// assert!(Proxy::from_lookup(env, false, "example.com")?.is_none()); // no HTTP_PROXY
    /// # Ok::<_, duplex::proxy::ProxyError>(())
    /// ```
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        secure: bool,
        host: &str,
    ) -> Result<Option<Proxy>, ProxyError> {
        let get = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| lookup(n))
                .find(|v| !v.trim().is_empty())
        };
        let scheme_vars: &[&str] = if secure {
            &["https_proxy", "HTTPS_PROXY"]
        } else {
            &["http_proxy", "HTTP_PROXY"]
        };
        let Some(value) = get(scheme_vars).or_else(|| get(&["all_proxy", "ALL_PROXY"])) else {
            return Ok(None);
        };
        if is_loopback(host) {
            return Ok(None);
        }
        if let Some(no_proxy) = get(&["no_proxy", "NO_PROXY"]) {
            if no_proxy_matches(&no_proxy, host) {
                return Ok(None);
            }
        }
        Proxy::parse(value.trim()).map(Some)
    }

    /// The protocol spoken to the proxy.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name sent to the proxy, if any.
    pub fn username(&self) -> Option<&str> {
        self.auth.as_ref().map(|(u, _)| u.as_str())
    }

    /// Asks the proxy, over `tcp` (connected to it), for a tunnel to `host:port`.
    pub(crate) async fn tunnel(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<(), ProxyError> {
        match self.kind {
            ProxyKind::Http => self.http_connect(tcp, host, port).await,
            ProxyKind::Socks5 { remote_dns } => self.socks5(tcp, host, port, remote_dns).await,
        }
    }

    async fn http_connect(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<(), ProxyError> {
        let authority = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, password)) = &self.auth {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await?;
        // One byte at a time: whatever follows the head belongs to the tunnel, and an answer
        // head is a few dozen bytes.
        let mut head = Vec::with_capacity(128);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(ProxyError::Malformed("answer head too long".into()));
            }
            match tcp.read_u8().await {
                Ok(b) => head.push(b),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ProxyError::Malformed(
                        "the proxy closed the connection before answering".into(),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(ProxyError::Malformed("incomplete answer head".into()))
            }
            Err(e) => return Err(ProxyError::Malformed(e.to_string())),
        }
        let code = response.code.unwrap_or(0);
        let status = http::StatusCode::from_u16(code)
            .map_err(|_| ProxyError::Malformed(format!("status {code}")))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(ProxyError::Refused {
                status,
                reason: response.reason.unwrap_or("").to_owned(),
            })
        }
    }

    async fn socks5(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
        remote_dns: bool,
    ) -> Result<(), ProxyError> {
        const VERSION: u8 = 5;
        const NO_AUTH: u8 = 0;
        const USER_PASS: u8 = 2;
        // Greeting: the methods we can do (RFC 1928 section 3).
        let greeting: &[u8] = if self.auth.is_some() {
            &[VERSION, 2, NO_AUTH, USER_PASS]
        } else {
            &[VERSION, 1, NO_AUTH]
        };
        tcp.write_all(greeting).await?;
        let mut choice = [0u8; 2];
        tcp.read_exact(&mut choice).await?;
        if choice[0] != VERSION {
            return Err(ProxyError::Malformed(format!(
                "SOCKS version {}",
                choice[0]
            )));
        }
        match (choice[1], &self.auth) {
            (NO_AUTH, _) => {}
            (USER_PASS, Some((user, password))) => {
                // RFC 1929: version 1, then length-prefixed user name and password.
                let (user, password) = (user.as_bytes(), password.as_bytes());
                let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(password.len()))
                else {
                    return Err(ProxyError::Socks(
                        "user name and password must be at most 255 bytes each".into(),
                    ));
                };
                let mut msg = Vec::with_capacity(3 + user.len() + password.len());
                msg.extend_from_slice(&[1, ulen]);
                msg.extend_from_slice(user);
                msg.push(plen);
                msg.extend_from_slice(password);
                tcp.write_all(&msg).await?;
                let mut status = [0u8; 2];
                tcp.read_exact(&mut status).await?;
                if status[1] != 0 {
                    return Err(ProxyError::Socks("wrong user name or password".into()));
                }
            }
            (0xff, _) | (USER_PASS, None) => {
                return Err(ProxyError::Socks(
                    "no acceptable authentication method (credentials needed?)".into(),
                ))
            }
            (other, _) => {
                return Err(ProxyError::Malformed(format!(
                    "authentication method {other} was not offered"
                )))
            }
        }
        // The connect request (section 4).
        let mut request = vec![VERSION, 1, 0];
        match host.parse::<IpAddr>() {
            Ok(ip) => push_ip(&mut request, ip),
            Err(_) if remote_dns => {
                let name = u8::try_from(host.len())
                    .map_err(|_| ProxyError::Socks("host name longer than 255 bytes".into()))?;
                request.push(3);
                request.push(name);
                request.extend_from_slice(host.as_bytes());
            }
            Err(_) => {
                let addr = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|_| ProxyError::Resolve(host.to_owned()))?
                    .next()
                    .ok_or_else(|| ProxyError::Resolve(host.to_owned()))?;
                push_ip(&mut request, addr.ip());
            }
        }
        request.extend_from_slice(&port.to_be_bytes());
        tcp.write_all(&request).await?;
        let mut reply = [0u8; 4];
        tcp.read_exact(&mut reply).await?;
        if reply[0] != VERSION {
            return Err(ProxyError::Malformed(format!("SOCKS version {}", reply[0])));
        }
        if reply[1] != 0 {
            return Err(ProxyError::Socks(socks_reply(reply[1]).into()));
        }
        // The bound address, which we do not need, but must consume.
        let rest = match reply[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => tcp.read_u8().await? as usize + 2,
            other => return Err(ProxyError::Malformed(format!("address type {other}"))),
        };
        let mut skip = vec![0u8; rest];
        tcp.read_exact(&mut skip).await?;
        Ok(())
    }
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(1);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(4);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// RFC 1928 section 6, reply field.
fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown failure",
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a `NO_PROXY` list exempts `host`.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        // Drop a port ("example.com:443", "[::1]:443") but not the colons of a bare IPv6.
        let entry = if let Some(bracketed) = entry.strip_prefix('[') {
            bracketed.split(']').next().unwrap_or("")
        } else if entry.matches(':').count() == 1 {
            entry.split(':').next().unwrap_or("")
        } else {
            entry
        };
        let entry = entry.trim_start_matches("*.").trim_start_matches('.');
        if entry.is_empty() {
            return false;
        }
        let entry = entry.to_ascii_lowercase();
        host == entry || host.ends_with(&format!(".{entry}"))
    })
}

/// Where a client's proxy comes from.
#[derive(Debug, Clone, Default)]
pub(crate) enum ProxyChoice {
    /// The environment variables (the default).
    #[default]
    FromEnv,
    /// This one.
    Explicit(Proxy),
    /// None: connect directly.
    Direct,
    /// An invalid URL given to [`ClientBuilder::proxy`], reported when connecting so that the
    /// builder's methods can chain.
    Invalid(String, String),
}

impl ProxyChoice {
    /// The proxy to use for this destination.
    pub(crate) fn resolve(&self, secure: bool, host: &str) -> Result<Option<Proxy>, ProxyError> {
        match self {
            ProxyChoice::FromEnv => Proxy::from_env(secure, host),
            ProxyChoice::Explicit(p) => Ok(Some(p.clone())),
            ProxyChoice::Direct => Ok(None),
            ProxyChoice::Invalid(url, reason) => Err(ProxyError::Url {
                url: url.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

/// Proxy options of a client.
impl ClientBuilder {
    /// Connects through this proxy (`http://[user:pass@]host:port`, `socks5://...` or
    /// `socks5h://...`) instead of the one the environment names. An invalid URL fails the
    /// connection with [`Error::Proxy`](crate::Error::Proxy).
    ///
    /// ```
    /// let builder = duplex::ClientBuilder::new("wss://example.com/feed")?
    ///     .proxy("socks5h://127.0.0.1:1080");
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn proxy(mut self, url: &str) -> Self {
        self.proxy = match Proxy::parse(url) {
            Ok(p) => ProxyChoice::Explicit(p),
            Err(ProxyError::Url { url, reason }) => ProxyChoice::Invalid(url, reason),
            Err(other) => ProxyChoice::Invalid(redact(url), other.to_string()),
        };
        self
    }

    /// Connects directly, whatever the environment says.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxyChoice::Direct;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn parses_schemes_ports_and_credentials() {
        let p = Proxy::parse("socks5://bob:pa%3Ass@10.1.2.3").unwrap();
        assert_eq!(p.kind(), ProxyKind::Socks5 { remote_dns: false });
        assert_eq!(p.port(), 1080);
        assert_eq!(p.auth, Some(("bob".into(), "pa:ss".into())));
        let p = Proxy::parse("socks5h://[::1]:9050").unwrap();
        assert_eq!((p.host(), p.port()), ("::1", 9050));
        assert_eq!(p.kind(), ProxyKind::Socks5 { remote_dns: true });
        let p = Proxy::parse("proxy.example:3128").unwrap();
        assert_eq!(
            (p.kind(), p.host(), p.port()),
            (ProxyKind::Http, "proxy.example", 3128)
        );
        assert_eq!(Proxy::parse("http://proxy").unwrap().port(), 80);
    }

    #[test]
    fn refuses_unsupported_proxies_without_leaking_the_password() {
        let err = Proxy::parse("ftp://u:topsecret@proxy")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported"), "{err}");
        assert!(!err.contains("topsecret"), "{err}");
        assert!(Proxy::parse("https://proxy").is_err());
    }

    #[test]
    fn environment_variables_by_scheme_with_fallback() {
        let vars = [
            ("HTTPS_PROXY", "http://secure-proxy:1"),
            ("http_proxy", "http://plain-proxy:2"),
            ("ALL_PROXY", "socks5h://all:3"),
        ];
        let get = |secure| {
            Proxy::from_lookup(env(&vars), secure, "example.com")
                .unwrap()
                .unwrap()
                .host()
                .to_owned()
        };
        assert_eq!(get(true), "secure-proxy");
        assert_eq!(get(false), "plain-proxy");
        let only_all = [("all_proxy", "socks5://all:3")];
        let p = Proxy::from_lookup(env(&only_all), true, "example.com")
            .unwrap()
            .unwrap();
        assert_eq!(p.kind(), ProxyKind::Socks5 { remote_dns: false });
        // Lower case wins over upper case, as in curl.
        let both = [
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
        ];
        let p = Proxy::from_lookup(env(&both), true, "example.com")
            .unwrap()
            .unwrap();
        assert_eq!(p.host(), "lower");
        // Empty values count as unset.
        let empty = [("https_proxy", ""), ("HTTPS_PROXY", "http://upper:1")];
        let p = Proxy::from_lookup(env(&empty), true, "example.com")
            .unwrap()
            .unwrap();
        assert_eq!(p.host(), "upper");
        assert!(Proxy::from_lookup(env(&[]), true, "example.com")
            .unwrap()
            .is_none());
    }

    #[test]
    fn no_proxy_and_loopback_bypass_the_environment() {
        let vars = [
            ("ALL_PROXY", "http://proxy:1"),
            (
                "NO_PROXY",
                "internal.example, .corp, 10.0.0.7, [fd00::1]:443, other:8080",
            ),
        ];
        let direct = |host| {
            Proxy::from_lookup(env(&vars), true, host)
                .unwrap()
                .is_none()
        };
        assert!(direct("internal.example"));
        assert!(direct("api.internal.example"));
        assert!(direct("x.corp"));
        assert!(direct("10.0.0.7"));
        assert!(direct("fd00::1"));
        assert!(direct("other"));
        assert!(direct("localhost"));
        assert!(direct("127.0.0.1"));
        assert!(direct("[::1]"));
        assert!(!direct("example.com"));
        assert!(!direct("notinternal.example"));
        assert!(!direct("10.0.0.70"));
        let all = [("ALL_PROXY", "http://proxy:1"), ("no_proxy", "*")];
        assert!(Proxy::from_lookup(env(&all), true, "example.com")
            .unwrap()
            .is_none());
    }

    #[test]
    fn invalid_environment_proxy_is_an_error() {
        let vars = [("HTTPS_PROXY", "gopher://proxy")];
        assert!(Proxy::from_lookup(env(&vars), true, "example.com").is_err());
    }
}
