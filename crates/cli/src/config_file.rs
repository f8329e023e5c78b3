//! The configuration file of `duplex serve` (`--config duplex.toml`): one key per flag, the
//! flag's name with underscores (`history_limit = 500` for `--history-limit 500`).
//!
//! Values from the file apply to the flags given neither on the command line nor in a
//! `DUPLEX_*` environment variable: flags > environment > file > defaults. Everything is
//! checked when the file is loaded: an unknown key, a value of the wrong type or out of range
//! is an error naming the key, the file and the line. Secrets are never in the file (it can
//! be committed): `token_file`, `jwt_secret_file` and `api_key_file` name files holding
//! them, and `token = "..."` is refused. Relative paths in the file are relative to the
//! file's directory.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

/// The keys of the file, each the flag of the same name (`_` for `-`).
pub const KEYS: &[&str] = &[
    "port",
    "host",
    "data",
    "token_file",
    "jwt_secret_file",
    "jwt_public_key",
    "jwt_audience",
    "jwt_issuer",
    "api_key_file",
    "admin_addr",
    "trust_proxy",
    "max_connections_per_ip",
    "allowed_origin",
    "max_connections",
    "max_message_size",
    "max_echo_message_size",
    "rate_limit",
    "history_limit",
    "send_queue",
    "tls_cert",
    "tls_key",
    "park_after",
    "threads",
    "redis",
    "redis_ca_file",
    "redis_prefix",
    "presence_ttl",
    "deflate",
    "deflate_window_bits",
    "deflate_level",
    "deflate_threshold",
    "deflate_no_context_takeover",
];

/// Secrets that would be keys if they were allowed, and what to write instead.
const SECRETS: &[(&str, &str)] = &[
    ("token", "token_file = \"/path/to/token\" or DUPLEX_TOKEN"),
    (
        "jwt_secret",
        "jwt_secret_file = \"/path/to/secret\" or DUPLEX_JWT_SECRET",
    ),
    (
        "api_key",
        "api_key_file = \"/path/to/key\" or DUPLEX_API_KEY",
    ),
];

/// The contents of a configuration file, checked: every value is of its flag's type and
/// within its range.
///
/// ```ignore
/// let file = FileConfig::parse(Path::new("duplex.toml"), "port = 9000\nhistory_limit = 50\n")?;
/// assert_eq!(file.port, Some(9000));
/// ```
#[derive(Debug, Default)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub host: Option<String>,
    pub data: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub jwt_secret_file: Option<PathBuf>,
    pub jwt_public_key: Option<Vec<PathBuf>>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub admin_addr: Option<SocketAddr>,
    pub trust_proxy: Option<Vec<duplex_hub::Cidr>>,
    pub max_connections_per_ip: Option<usize>,
    pub allowed_origin: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub max_message_size: Option<usize>,
    pub max_echo_message_size: Option<usize>,
    pub rate_limit: Option<u32>,
    pub history_limit: Option<u64>,
    pub send_queue: Option<usize>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub park_after: Option<f64>,
    pub threads: Option<usize>,
    pub redis: Option<String>,
    pub redis_ca_file: Option<PathBuf>,
    pub redis_prefix: Option<String>,
    pub presence_ttl: Option<f64>,
    pub deflate: Option<bool>,
    pub deflate_window_bits: Option<u8>,
    pub deflate_level: Option<u32>,
    pub deflate_threshold: Option<usize>,
    pub deflate_no_context_takeover: Option<bool>,
}

/// The file as written, before the checks that serde's types do not make.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    port: Option<u16>,
    host: Option<String>,
    data: Option<PathBuf>,
    token_file: Option<PathBuf>,
    jwt_secret_file: Option<PathBuf>,
    #[serde(alias = "jwt_public_keys")]
    jwt_public_key: Option<Vec<PathBuf>>,
    jwt_audience: Option<String>,
    jwt_issuer: Option<String>,
    api_key_file: Option<PathBuf>,
    admin_addr: Option<SocketAddr>,
    #[serde(alias = "trust_proxies")]
    trust_proxy: Option<Vec<Spanned<String>>>,
    max_connections_per_ip: Option<usize>,
    #[serde(alias = "allowed_origins")]
    allowed_origin: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_message_size: Option<usize>,
    max_echo_message_size: Option<usize>,
    rate_limit: Option<u32>,
    history_limit: Option<u64>,
    send_queue: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    park_after: Option<Spanned<f64>>,
    threads: Option<usize>,
    redis: Option<Spanned<String>>,
    redis_ca_file: Option<PathBuf>,
    redis_prefix: Option<String>,
    presence_ttl: Option<Spanned<f64>>,
    deflate: Option<bool>,
    deflate_window_bits: Option<Spanned<i64>>,
    deflate_level: Option<Spanned<i64>>,
    deflate_threshold: Option<usize>,
    deflate_no_context_takeover: Option<bool>,
    // Refused with a message of their own rather than as unknown keys.
    token: Option<Spanned<IgnoredAny>>,
    jwt_secret: Option<Spanned<IgnoredAny>>,
    api_key: Option<Spanned<IgnoredAny>>,
}

/// A configuration file that cannot be used: which file, where, and why.
#[derive(Debug)]
pub struct FileError {
    path: PathBuf,
    /// `line` (1-based) when the position is known.
    line: Option<usize>,
    message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for FileError {}

impl FileConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<FileConfig, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let mut file = FileConfig::parse(path, &text)?;
        file.relative_to(path.parent().unwrap_or(Path::new("")));
        Ok(file)
    }

    /// Makes the file's relative paths relative to `dir`, the file's directory: a file names
    /// the certificates beside it whatever the directory `duplex serve` starts in.
    fn relative_to(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for path in [
            &mut self.data,
            &mut self.token_file,
            &mut self.jwt_secret_file,
            &mut self.api_key_file,
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.redis_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(path);
        }
        self.jwt_public_key.iter_mut().flatten().for_each(fix);
    }

    /// Checks `text`, the contents of the file at `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, FileError> {
        let at = |span: Option<Range<usize>>, message: String| FileError {
            path: path.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim_end().to_owned();
            if let Some(unknown) = unknown_key(&message) {
                message = unknown;
            } else if let Some(key) = e.span().and_then(|s| key_at(text, s.start)) {
                // serde's "invalid type: string \"high\", expected u16" does not say where.
                message = format!("`{key}`: {message}");
            }
            at(e.span(), message)
        })?;
        for (key, spanned) in [
            ("token", &raw.token),
            ("jwt_secret", &raw.jwt_secret),
            ("api_key", &raw.api_key),
        ] {
            if let Some(value) = spanned {
                let instead = SECRETS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or("a *_file key", |(_, instead)| instead);
                return Err(at(
                    Some(value.span()),
                    format!(
                        "`{key}`: secrets are not allowed in the configuration file (it may be \
                         committed or readable by others); use {instead}"
                    ),
                ));
            }
        }
        let seconds = |key: &str, value: Option<Spanned<f64>>| match value {
            None => Ok(None),
            Some(v) => crate::serve::parse_seconds(&v.get_ref().to_string())
                .map(Some)
                .map_err(|e| at(Some(v.span()), format!("`{key}`: {e}"))),
        };
        let range = |key: &str, value: Option<Spanned<i64>>, range: Range<i64>| match value {
            None => Ok(None),
            Some(v) if range.contains(v.get_ref()) => Ok(Some(*v.get_ref())),
            Some(v) => Err(at(
                Some(v.span()),
                format!(
                    "`{key}`: expected {} to {}, got {}",
                    range.start,
                    range.end - 1,
                    v.get_ref()
                ),
            )),
        };
        let trust_proxy = match raw.trust_proxy {
            None => None,
            Some(list) => Some(
                list.into_iter()
                    .map(|net| {
                        net.get_ref()
                            .parse::<duplex_hub::Cidr>()
                            .map_err(|e| at(Some(net.span()), format!("`trust_proxy`: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let redis = match raw.redis {
            None => None,
            Some(url) => {
                if has_password(url.get_ref()) {
                    return Err(at(
                        Some(url.span()),
                        "`redis`: the URL carries a password, a secret that is not allowed in \
                         the configuration file; set DUPLEX_REDIS_URL instead"
                            .to_owned(),
                    ));
                }
                Some(url.into_inner())
            }
        };
        // The ranges are those of the flags' value parsers; the narrowing cannot fail then.
        let window_bits = range("deflate_window_bits", raw.deflate_window_bits, 9..16)?
            .and_then(|v| u8::try_from(v).ok());
        let level =
            range("deflate_level", raw.deflate_level, 0..10)?.and_then(|v| u32::try_from(v).ok());
        Ok(FileConfig {
            port: raw.port,
            host: raw.host,
            data: raw.data,
            token_file: raw.token_file,
            jwt_secret_file: raw.jwt_secret_file,
            jwt_public_key: raw.jwt_public_key,
            jwt_audience: raw.jwt_audience,
            jwt_issuer: raw.jwt_issuer,
            api_key_file: raw.api_key_file,
            admin_addr: raw.admin_addr,
            trust_proxy,
            max_connections_per_ip: raw.max_connections_per_ip,
            allowed_origin: raw.allowed_origin,
            max_connections: raw.max_connections,
            max_message_size: raw.max_message_size,
            max_echo_message_size: raw.max_echo_message_size,
            rate_limit: raw.rate_limit,
            history_limit: raw.history_limit,
            send_queue: raw.send_queue,
            tls_cert: raw.tls_cert,
            tls_key: raw.tls_key,
            park_after: seconds("park_after", raw.park_after)?,
            threads: raw.threads,
            redis,
            redis_ca_file: raw.redis_ca_file,
            redis_prefix: raw.redis_prefix,
            presence_ttl: seconds("presence_ttl", raw.presence_ttl)?,
            deflate: raw.deflate,
            deflate_window_bits: window_bits,
            deflate_level: level,
            deflate_threshold: raw.deflate_threshold,
            deflate_no_context_takeover: raw.deflate_no_context_takeover,
        })
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key whose value is at byte `offset`: the `key =` on its line, or on the closest line
/// above for a value inside an array spanning several lines.
fn key_at(text: &str, offset: usize) -> Option<&str> {
    let end = offset.min(text.len());
    let start = text.get(..end)?.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text
        .get(start..)?
        .find('\n')
        .map_or(text.len(), |i| start + i);
    let mut lines = text.get(..line_end)?.lines().rev();
    lines.find_map(|line| {
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        plain.then_some(key)
    })
}

/// For serde's "unknown field `history-limit`, expected one of ...": a message of our own,
/// with the spelling to use instead or the secret's `*_file` key when there is one, and
/// without the secrets serde would list among the expected keys.
fn unknown_key(message: &str) -> Option<String> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    let underscored = key.replace('-', "_");
    if underscored != key && KEYS.contains(&underscored.as_str()) {
        return Some(format!(
            "unknown key `{key}` (keys are written with underscores: `{underscored}`)"
        ));
    }
    if let Some((_, instead)) = SECRETS.iter().find(|(k, _)| *k == underscored) {
        return Some(format!(
            "unknown key `{key}`: secrets are not allowed in the configuration file; use {instead}"
        ));
    }
    Some(format!(
        "unknown key `{key}`; the keys are the flags of `duplex serve` with underscores: {}",
        KEYS.join(", ")
    ))
}

/// Whether a `redis://user:pass@host` URL has a password.
fn has_password(url: &str) -> bool {
    url::Url::parse(url)
        .map(|u| u.password().is_some_and(|p| !p.is_empty()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        FileConfig::parse(Path::new("duplex.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_with_every_kind_of_value() {
        let file = parse(
            "port = 9000\nhost = \"0.0.0.0\"\nhistory_limit = 50\npark_after = 2\n\
             presence_ttl = 1.5\ntrust_proxy = [\"10.0.0.0/8\"]\nallowed_origin = [\"https://a.example\"]\n\
             deflate = true\ndeflate_window_bits = 10\nadmin_addr = \"127.0.0.1:9090\"\n\
             token_file = \"/run/secrets/token\"\nredis = \"redis://127.0.0.1:6379/0\"\n",
        )
        .unwrap();
        assert_eq!(file.port, Some(9000));
        assert_eq!(file.history_limit, Some(50));
        assert_eq!(file.park_after, Some(2.0));
        assert_eq!(file.presence_ttl, Some(1.5));
        assert_eq!(file.trust_proxy.map(|v| v.len()), Some(1));
        assert_eq!(file.deflate_window_bits, Some(10));
        assert_eq!(file.token_file, Some(PathBuf::from("/run/secrets/token")));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let e = parse("port = 9000\nhistory-limit = 5\n").unwrap_err();
        assert!(
            e.starts_with("duplex.toml:2: unknown key `history-limit`"),
            "{e}"
        );
        assert!(e.contains("`history_limit`"), "{e}");
        let e = parse("port = \"high\"\n").unwrap_err();
        assert!(e.starts_with("duplex.toml:1: `port`: invalid type"), "{e}");
        let e = parse("host = \"h\"\nallowed_origin = [\n  \"a\",\n  3,\n]\n").unwrap_err();
        assert!(e.starts_with("duplex.toml:4: `allowed_origin`: "), "{e}");
        let e = parse("\npark_after = -1\n").unwrap_err();
        assert!(
            e.starts_with("duplex.toml:2: `park_after`: expected seconds"),
            "{e}"
        );
        let e = parse("deflate_window_bits = 20\n").unwrap_err();
        assert!(
            e.contains("`deflate_window_bits`: expected 9 to 15, got 20"),
            "{e}"
        );
        let e = parse("trust_proxy = [\"10.0.0.0/99\"]\n").unwrap_err();
        assert!(e.contains("`trust_proxy`"), "{e}");
    }

    #[test]
    fn secrets_are_refused() {
        for (text, key) in [
            ("token = \"hunter2\"\n", "token"),
            ("jwt_secret = \"x\"\n", "jwt_secret"),
            ("api_key = \"x\"\n", "api_key"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains(&format!("`{key}`: secrets are not allowed")),
                "{e}"
            );
            assert!(e.contains(&format!("{key}_file")), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = parse("redis = \"redis://u:pw@host:6379\"\n").unwrap_err();
        assert!(e.contains("DUPLEX_REDIS_URL"), "{e}");
        assert!(parse("redis = \"redis://host:6379\"\n").is_ok());
    }
}
