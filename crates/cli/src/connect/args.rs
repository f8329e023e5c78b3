//! The options `duplex connect` and `duplex chat` share, and the connection they describe.

use std::time::Duration;

use clap::Args;
use duplex::{ClientBuilder, MaybeTlsStream, WebSocket};
use http::{HeaderName, HeaderValue, Uri};

use super::display::Sink;
use super::exit::{Exit, Failure};

/// Connection options of the client subcommands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Add a header to the upgrade request, as "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Send this Origin header (for servers that only accept pages of some origins).
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
    /// Authenticate with `Authorization: Bearer TOKEN` (visible to other users of this
    /// machine in the process list: prefer --token-file).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Authenticate with the token in this file (`Authorization: Bearer`; surrounding
    /// whitespace is ignored). A signed token (JWT) also gives `duplex chat` its name.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Also trust the CA certificates in this PEM file (wss://; a private CA or a self-signed
    /// server certificate).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Accept any server certificate (wss://). For development only: anyone on the path can
    /// impersonate the server.
    #[arg(long)]
    pub insecure: bool,
    /// Connect through this proxy: http://[user:pass@]host:port (CONNECT), socks5:// or
    /// socks5h://. Without it, HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY apply; "none"
    /// ignores them.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Send a keepalive ping after this many seconds without traffic; the connection fails
    /// (exit 7) if no pong comes within 30 s. 0: no pings.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub ping_interval: Duration,
    /// Time allowed to connect (TCP, proxy and TLS) and, again, for the upgrade.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// When the connection fails or the server closes it, connect again, waiting 0.5 s, 1 s,
    /// 2 s ... up to 30 s between attempts (each randomised by up to half, so that many
    /// clients do not come back at once). Not after a 4xx rejection or a TLS failure.
    #[arg(long)]
    pub reconnect: bool,
    /// With --reconnect: give up after this many failed attempts in a row.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub reconnect_attempts: u32,
    #[command(flatten)]
    pub deflate: crate::deflate_args::DeflateArgs,
    /// Show pings and pongs (keepalive included); pongs answering /ping are always shown.
    #[arg(long)]
    pub show_ping_pong: bool,
    /// No colours (also when the NO_COLOR environment variable is set).
    #[arg(long)]
    pub no_color: bool,
    /// Print the upgrade request and response headers to stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Open the WebSocket as a stream of an HTTP/2 connection (RFC 8441) when the server
    /// allows it (ALPN h2 for wss://, prior knowledge for ws://), else over HTTP/1.1; -v says
    /// which was used.
    #[arg(long)]
    pub http2: bool,
}

/// Parses "Name: value" into a header.
fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected \"Name: value\""))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} has characters a header cannot hold"))?;
    Ok((name, value))
}

/// Parses a number of seconds ("10", "0.5").
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a number of seconds"))
}

/// Everything needed to open (and reopen) the connection.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The URL connected to.
    pub url: String,
    args: ClientArgs,
    protocols: Vec<String>,
}

impl Connector {
    /// Checks the URL and options and keeps them for connecting.
    pub fn new(url: &str, args: &ClientArgs, protocols: Vec<String>) -> Result<Self, Failure> {
        let mut args = args.clone();
        if let Some(path) = args.token_file.take() {
            // Read once: every reconnect sends the same token.
            let token = std::fs::read_to_string(&path)
                .map_err(|e| Failure::usage(format!("--token-file {}: {e}", path.display())))?;
            args.token = Some(token.trim().to_owned());
        }
        let connector = Connector {
            url: url.to_owned(),
            args,
            protocols,
        };
        connector.builder()?;
        Ok(connector)
    }

    /// A fresh builder: every connection needs its own handshake key.
    fn builder(&self) -> Result<ClientBuilder, Failure> {
        let args = &self.args;
        let ping_timeout = duplex::Config::default().ping_timeout;
        let interval = (!args.ping_interval.is_zero()).then_some(args.ping_interval);
        let config = duplex::Config::default()
            .deflate(args.deflate.config())
            .keepalive(interval, ping_timeout)
            .handshake_timeout(args.connect_timeout);
        let mut builder = ClientBuilder::new(&self.url)
            .map_err(|e| Failure::usage(e.to_string()))?
            .config(config)
            .connect_timeout(args.connect_timeout);
        for p in &self.protocols {
            builder = builder.protocol(p.clone());
        }
        for (name, value) in &args.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        if let Some(origin) = &args.origin {
            let value = HeaderValue::from_str(origin)
                .map_err(|_| Failure::usage(format!("invalid --origin {origin:?}")))?;
            builder = builder.header(http::header::ORIGIN, value);
        }
        if let Some(token) = &args.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Failure::usage("--token has characters a header cannot hold"))?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        if let Some(ca) = &args.ca {
            builder = builder.ca_file(ca);
        }
        if args.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if args.http2 {
            builder = builder.http2(true);
        }
        builder = match args.proxy.as_deref() {
            Some("none") => builder.no_proxy(),
            Some(url) => builder.proxy(url),
            None => builder,
        };
        Ok(builder)
    }

    /// Connects and performs the handshake, printing its headers to `out` with `-v`.
    pub async fn connect(&self, out: &mut Sink) -> Result<WebSocket<MaybeTlsStream>, Failure> {
        let builder = self.builder()?;
        if self.args.verbose {
            let request = builder.request();
            let version = if self.args.http2 {
                "HTTP/2 if the server allows it, else HTTP/1.1"
            } else {
                "HTTP/1.1"
            };
            out.note(&format!(
                "> {} {} {version}",
                request.method(),
                request.uri()
            ));
            for (name, value) in request.headers() {
                let shown = if value.is_sensitive() {
                    "<hidden>".into()
                } else {
                    String::from_utf8_lossy(value.as_bytes())
                };
                out.note(&format!("> {name}: {shown}"));
            }
        }
        self.resolve().await?;
        let (ws, response) = builder
            .connect()
            .await
            .map_err(|e| Failure::connect(&self.url, &e))?;
        if self.args.verbose {
            let version = match response.version() {
                http::Version::HTTP_2 => "HTTP/2 (a stream of one HTTP/2 connection, RFC 8441)",
                _ => "HTTP/1.1",
            };
            out.note(&format!("< {version} {}", response.status()));
            for (name, value) in response.headers() {
                out.note(&format!(
                    "< {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
        }
        Ok(ws)
    }

    /// Resolves the host first when connecting directly, so that a name that does not exist
    /// gets its own exit code (3): the library reports it as a plain I/O error, whose text is
    /// all that would tell it from others. Through a proxy the proxy resolves, and says so.
    async fn resolve(&self) -> Result<(), Failure> {
        let Ok(uri) = self.url.parse::<Uri>() else {
            return Ok(()); // ClientBuilder::new accepted it; let connect() report anything else
        };
        let secure = matches!(uri.scheme_str(), Some("wss" | "https"));
        let Some(host) = uri.host() else {
            return Ok(());
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let proxied = match self.args.proxy.as_deref() {
            Some("none") => false,
            Some(_) => true,
            None => !matches!(duplex::proxy::Proxy::from_env(secure, &host), Ok(None)),
        };
        if proxied {
            return Ok(());
        }
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let cannot = |why: String| {
            Failure::new(
                Exit::Dns,
                format!(
                    "cannot connect to {}: cannot resolve {host}: {why}",
                    self.url
                ),
            )
        };
        let lookup = tokio::time::timeout(
            self.args.connect_timeout,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await;
        match lookup {
            Err(_) => Err(Failure::new(
                Exit::Timeout,
                format!("cannot connect to {}: resolving {host} timed out", self.url),
            )),
            Ok(Err(e)) => Err(cannot(e.to_string())),
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(_) => Ok(()),
                None => Err(cannot("no address".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_bad_ones_are_refused() {
        let (name, value) = parse_header("X-Trace:  abc def ").expect("valid");
        assert_eq!(name, "x-trace");
        assert_eq!(value, "abc def");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("X: a\nb").is_err());
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
