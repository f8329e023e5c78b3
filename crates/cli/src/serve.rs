//! `duplex serve`: run the hub (chat page, chat rooms with history, echo, health, metrics)
//! until SIGINT or SIGTERM, then shut down gracefully.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use duplex_hub::{Hub, HubConfig, JwtConfig, RedisConfig};
use tracing::{info, warn};

use crate::config_file::FileConfig;

/// Options of `duplex serve`. Each has a `DUPLEX_*` environment variable and a key in the
/// `--config` file (see [`crate::config_file`]): flags > environment > file > defaults.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file with defaults for these options: one key per flag, written with
    /// underscores (`history_limit = 500`). Flags and DUPLEX_* environment variables win over
    /// it. Secrets only as paths (`token_file`, `jwt_secret_file`, `api_key_file`).
    #[arg(long, value_name = "PATH", env = "DUPLEX_CONFIG")]
    config: Option<PathBuf>,
    /// Port to listen on (0: any free port).
    #[arg(long, short, default_value_t = 8080, env = "DUPLEX_PORT")]
    port: u16,
    /// Host name or address to listen on; every address it resolves to is bound.
    #[arg(long, default_value = "localhost", env = "DUPLEX_HOST")]
    host: String,
    /// Directory of the chat history (an SQLite file), created if missing.
    #[arg(long, default_value = "duplex-data", env = "DUPLEX_DATA")]
    data: PathBuf,
    /// Require this token on every WebSocket upgrade, as `Authorization: Bearer TOKEN` or
    /// `?token=TOKEN` (open the page as http://HOST:PORT/?token=TOKEN). Missing or wrong: 401.
    /// Anyone on this machine can read it in the process list: prefer --token-file or
    /// DUPLEX_TOKEN.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the shared token from this file (surrounding whitespace ignored); the
    /// environment variable DUPLEX_TOKEN is used when neither flag is given.
    #[arg(long, value_name = "PATH", env = "DUPLEX_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Signed connection tokens (JWT, HS256) with the secret in this file (at least 32
    /// bytes; DUPLEX_JWT_SECRET when not given): a connection speaks as its token's `sub`,
    /// within its `rooms` and `publish` claims. Replaces the shared token.
    #[arg(long, value_name = "PATH", env = "DUPLEX_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// Signed connection tokens (JWT, RS256 or ES256) checked with this PEM public key
    /// (repeatable: a token signed by any of them is accepted, for key rotation; in the
    /// environment, separated by commas).
    #[arg(
        long = "jwt-public-key",
        value_name = "PATH",
        env = "DUPLEX_JWT_PUBLIC_KEY",
        value_delimiter = ','
    )]
    jwt_public_keys: Vec<PathBuf>,
    /// The audience (`aud`) a JWT must name.
    #[arg(long, value_name = "AUD", env = "DUPLEX_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// The issuer (`iss`) a JWT must have.
    #[arg(long, value_name = "ISS", env = "DUPLEX_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Turn on the backend API under /api/ with the key in this file (DUPLEX_API_KEY when not
    /// given); with it, /metrics also needs the key unless --admin-addr is set.
    #[arg(long, value_name = "PATH", env = "DUPLEX_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Serve /metrics and /healthz on this address only (e.g. 127.0.0.1:9090), not on the
    /// main port.
    #[arg(long, value_name = "ADDR", env = "DUPLEX_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Believe X-Forwarded-For / Forwarded from peers in this network (a reverse proxy, e.g.
    /// 10.0.0.0/8; repeatable, or separated by commas). From others those headers are ignored.
    #[arg(
        long = "trust-proxy",
        value_name = "CIDR",
        env = "DUPLEX_TRUST_PROXY",
        value_delimiter = ','
    )]
    trust_proxies: Vec<duplex_hub::Cidr>,
    /// Connections one client address may hold open; more get 503.
    #[arg(long, value_name = "N", env = "DUPLEX_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Accept WebSockets from pages of this origin only, e.g. https://chat.example.com
    /// (repeatable, or separated by commas). Others get 403; clients that send no Origin are
    /// not affected.
    #[arg(
        long = "allowed-origin",
        value_name = "ORIGIN",
        env = "DUPLEX_ALLOWED_ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Open connections above which new requests get 503.
    #[arg(long, default_value_t = HubConfig::new(".").max_connections, env = "DUPLEX_MAX_CONNECTIONS")]
    max_connections: usize,
    /// Largest chat message in bytes; larger closes the connection with 1009.
    #[arg(long, default_value_t = HubConfig::new(".").websocket.max_message_size, env = "DUPLEX_MAX_MESSAGE_SIZE")]
    max_message_size: usize,
    /// Largest message on /echo in bytes; larger closes the connection with 1009.
    #[arg(long, default_value_t = HubConfig::new(".").max_echo_message_size, env = "DUPLEX_MAX_ECHO_MESSAGE_SIZE")]
    max_echo_message_size: usize,
    /// Chat messages per second one connection may send (bursts of twice as many); more
    /// closes it with 1008. 0: no limit.
    #[arg(long, default_value_t = HubConfig::new(".").rate_limit, env = "DUPLEX_RATE_LIMIT")]
    rate_limit: u32,
    /// Messages kept per room; older ones are deleted.
    #[arg(long, default_value_t = HubConfig::new(".").history_limit, env = "DUPLEX_HISTORY_LIMIT")]
    history_limit: u64,
    /// Messages that may wait for one recipient; one that falls further behind is closed with
    /// 4000 (it can reconnect and resume).
    #[arg(long, default_value_t = HubConfig::new(".").send_queue, env = "DUPLEX_SEND_QUEUE")]
    send_queue: usize,
    /// PEM file with the TLS certificate chain: serve https:// and wss:// (with --tls-key).
    #[arg(long, value_name = "PEM", env = "DUPLEX_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the TLS private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", env = "DUPLEX_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds without traffic (checked once per period: up to twice this) after which an
    /// /echo connection gives up its task until it has something to read (less memory per
    /// idle connection); 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_seconds, env = "DUPLEX_PARK_AFTER")]
    park_after: f64,
    /// Worker threads of the runtime that serves connections (0: one per CPU this process may
    /// run on). The broker, which orders every room's messages, has a thread of its own
    /// besides.
    #[arg(long, value_name = "N", default_value_t = 0, env = "DUPLEX_THREADS")]
    pub threads: usize,
    /// Share rooms with other nodes through this Redis: redis://[user:pass@]HOST:PORT[/DB],
    /// or rediss:// for TLS. History, numbering and presence then live in Redis (--data is
    /// not used). Run every node with the same URL and --redis-prefix.
    #[arg(
        long,
        value_name = "URL",
        env = "DUPLEX_REDIS_URL",
        hide_env_values = true
    )]
    redis: Option<String>,
    /// With a rediss:// URL: the CA certificates (PEM) Redis's certificate must chain to,
    /// instead of the public roots.
    #[arg(long, value_name = "PEM", env = "DUPLEX_REDIS_CA_FILE")]
    redis_ca_file: Option<PathBuf>,
    /// The start of every Redis key and channel, so that deployments can share one Redis
    /// (with --redis).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "duplex",
        env = "DUPLEX_REDIS_PREFIX"
    )]
    redis_prefix: String,
    /// With --redis: seconds a member stays present without its node refreshing it. A node
    /// that is killed or cut off from Redis has its members leave within this time and a third.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_seconds, env = "DUPLEX_PRESENCE_TTL")]
    presence_ttl: f64,
    #[command(flatten)]
    deflate: crate::deflate_args::DeflateArgs,
}

impl ServeArgs {
    /// Fills in, from the `--config` file if there is one, the options that `matches` (the
    /// command line and the environment, as clap parsed them) left at their defaults, then
    /// checks the options that depend on one another. With `matches` `None` (a test's
    /// arguments built without clap), every option counts as given.
    pub fn resolve(&mut self, matches: Option<&ArgMatches>) -> anyhow::Result<()> {
        let mut from_file = Vec::new();
        if let Some(path) = self.config.clone() {
            let file = FileConfig::load(&path)?;
            from_file = self.merge(file, |id| {
                matches.is_none_or(|m| {
                    !matches!(
                        m.value_source(id),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    )
                })
            });
        }
        let given = |id: &str| {
            from_file.contains(&id)
                || matches.is_some_and(|m| {
                    matches!(
                        m.value_source(id),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    )
                })
        };
        // clap's `requires` cannot see the file's values: the same checks, after the merge.
        let flag = |id: &str| format!("--{}", id.replace('_', "-"));
        for (id, needs) in [
            ("tls_cert", "tls_key"),
            ("tls_key", "tls_cert"),
            ("redis_ca_file", "redis"),
            ("redis_prefix", "redis"),
            ("presence_ttl", "redis"),
        ] {
            let present = |id: &str| match id {
                "tls_cert" => self.tls_cert.is_some(),
                "tls_key" => self.tls_key.is_some(),
                "redis" => self.redis.is_some(),
                other => given(other),
            };
            if present(id) && !present(needs) {
                anyhow::bail!(
                    "{} needs {} (`{needs}` in a configuration file)",
                    flag(id),
                    flag(needs)
                );
            }
        }
        Ok(())
    }

    /// Takes the file's value of every option `unset` says was not given; returns the keys
    /// taken.
    fn merge(&mut self, file: FileConfig, unset: impl Fn(&str) -> bool) -> Vec<&'static str> {
        let mut taken = Vec::new();
        let mut take = |id: &'static str, has: bool| {
            let take = has && unset(id);
            if take {
                taken.push(id);
            }
            take
        };
        macro_rules! scalar {
            ($($field:ident),* $(,)?) => {$(
                if take(stringify!($field), file.$field.is_some()) {
                    if let Some(v) = file.$field {
                        self.$field = v;
                    }
                }
            )*};
        }
        macro_rules! optional {
            ($($field:ident),* $(,)?) => {$(
                if take(stringify!($field), file.$field.is_some()) {
                    self.$field = file.$field;
                }
            )*};
        }
        scalar!(
            port,
            host,
            data,
            max_connections,
            max_message_size,
            max_echo_message_size,
            rate_limit,
            history_limit,
            send_queue,
            park_after,
            threads,
            redis_prefix,
            presence_ttl,
        );
        optional!(
            jwt_audience,
            jwt_issuer,
            admin_addr,
            max_connections_per_ip,
            tls_cert,
            tls_key,
            redis,
            redis_ca_file,
        );
        // A secret in the environment (DUPLEX_TOKEN, ...) beats the file's path to one.
        let token_set = self.token.is_some() || env_secret("DUPLEX_TOKEN").is_some();
        if take("token_file", file.token_file.is_some() && !token_set) {
            self.token_file = file.token_file;
        }
        let jwt_set = env_secret("DUPLEX_JWT_SECRET").is_some();
        if take(
            "jwt_secret_file",
            file.jwt_secret_file.is_some() && !jwt_set,
        ) {
            self.jwt_secret_file = file.jwt_secret_file;
        }
        let api_set = env_secret("DUPLEX_API_KEY").is_some();
        if take("api_key_file", file.api_key_file.is_some() && !api_set) {
            self.api_key_file = file.api_key_file;
        }
        // Lists: the file's replaces the default (empty); flags or environment replace it.
        if let Some(v) = file
            .jwt_public_key
            .filter(|_| take("jwt_public_keys", true))
        {
            self.jwt_public_keys = v;
        }
        if let Some(v) = file.trust_proxy.filter(|_| take("trust_proxies", true)) {
            self.trust_proxies = v;
        }
        if let Some(v) = file
            .allowed_origin
            .filter(|_| take("allowed_origins", true))
        {
            self.allowed_origins = v;
        }
        let d = &mut self.deflate;
        if let Some(v) = file.deflate.filter(|_| take("deflate", true)) {
            d.deflate = v;
        }
        if let Some(v) = file
            .deflate_window_bits
            .filter(|_| take("deflate_window_bits", true))
        {
            d.deflate_window_bits = v;
        }
        if let Some(v) = file.deflate_level.filter(|_| take("deflate_level", true)) {
            d.deflate_level = v;
        }
        if let Some(v) = file
            .deflate_threshold
            .filter(|_| take("deflate_threshold", true))
        {
            d.deflate_threshold = v;
        }
        if let Some(v) = file
            .deflate_no_context_takeover
            .filter(|_| take("deflate_no_context_takeover", true))
        {
            d.deflate_no_context_takeover = v;
        }
        taken
    }
}

pub(crate) fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!("expected seconds between 0 and 86400, got {s:?}")),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = HubConfig::new(&args.data)
        .websocket(duplex::Config::default().deflate(args.deflate.config()))
        .max_connections(args.max_connections)
        .max_message_size(args.max_message_size)
        .max_echo_message_size(args.max_echo_message_size)
        .rate_limit(args.rate_limit)
        .history_limit(args.history_limit)
        .send_queue(args.send_queue)
        .park_after((args.park_after > 0.0).then(|| Duration::from_secs_f64(args.park_after)));
    let secrets = Secrets::read(&args)?;
    let token_required = secrets.token.is_some() || secrets.jwt.is_some();
    if let Some(token) = secrets.token {
        config = config.token(token);
    }
    if let Some(jwt) = secrets.jwt {
        config = config.jwt(jwt);
    }
    if let Some(key) = secrets.api_key {
        config = config.api_key(key);
    }
    if let Some(addr) = args.admin_addr {
        config = config.admin_addr(addr);
    }
    for net in &args.trust_proxies {
        config = config.trust_proxy(*net);
    }
    if let Some(n) = args.max_connections_per_ip {
        config = config.max_connections_per_ip(n);
    }
    for origin in &args.allowed_origins {
        config = config.allowed_origin(origin.clone());
    }
    if let Some(url) = &args.redis {
        let ttl = Duration::from_secs_f64(args.presence_ttl.max(0.3));
        let mut redis = RedisConfig::new(url.clone())
            .prefix(args.redis_prefix.clone())
            .presence_ttl(ttl);
        if let Some(ca) = &args.redis_ca_file {
            redis = redis.ca_file(ca);
        }
        config = config.redis(redis);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config = config.tls(duplex::tls::server_config_from_pem(cert, key)?);
    }
    let (http, ws) = if args.tls_cert.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot resolve {}", args.host))?
        .collect();
    let history = match &args.redis {
        Some(_) => "history in Redis".to_owned(),
        None => format!("history in {}", args.data.display()),
    };
    let shutdown = shutdown_signal();
    let hub = Hub::bind(&addrs, config)
        .await
        .with_context(|| format!("cannot start the server ({history})"))?;

    let shown = hub.local_addr();
    let host = match args.host.parse::<IpAddr>() {
        Ok(_) if shown.is_ipv6() => format!("[{}]", shown.ip()),
        Ok(_) => shown.ip().to_string(),
        Err(_) => args.host.clone(),
    };
    let port = shown.port();
    // Scripts read the first line (the tests and the Autobahn runner take its ws:// URL).
    println!("duplex serving {http}://{host}:{port}/ (chat), echo at {ws}://{host}:{port}/echo");
    if token_required {
        println!("a token is required: open {http}://{host}:{port}/?token=TOKEN");
    }
    if let Some(admin) = hub.admin_addr() {
        println!("metrics at http://{admin}/metrics");
    }
    info!("chat {history}");
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    info!(
        "{workers} worker thread{}",
        if workers == 1 { "" } else { "s" }
    );

    hub.run(shutdown).await?;
    Ok(())
}

/// The secrets of `duplex serve`, from files or the environment (never needed on argv).
struct Secrets {
    token: Option<String>,
    jwt: Option<JwtConfig>,
    api_key: Option<String>,
}

impl Secrets {
    fn read(args: &ServeArgs) -> anyhow::Result<Secrets> {
        let token = match (&args.token, &args.token_file) {
            (Some(token), _) => {
                warn!(
                    "--token on the command line can be read by anyone on this machine; \
                     use --token-file or DUPLEX_TOKEN"
                );
                Some(token.clone())
            }
            (None, Some(path)) => Some(read_secret(path, "--token-file")?),
            (None, None) => env_secret("DUPLEX_TOKEN"),
        };
        let secret = match &args.jwt_secret_file {
            Some(path) => Some(read_secret(path, "--jwt-secret-file")?),
            None => env_secret("DUPLEX_JWT_SECRET"),
        };
        let mut jwt = None;
        if secret.is_some() || !args.jwt_public_keys.is_empty() {
            let mut config = JwtConfig::default();
            if let Some(secret) = secret {
                config = config.secret(secret.into_bytes());
            }
            for path in &args.jwt_public_keys {
                let pem = std::fs::read(path)
                    .with_context(|| format!("--jwt-public-key {}", path.display()))?;
                config = config.public_key(pem);
            }
            if let Some(aud) = &args.jwt_audience {
                config = config.audience(aud.clone());
            }
            if let Some(iss) = &args.jwt_issuer {
                config = config.issuer(iss.clone());
            }
            if token.is_some() {
                warn!("JWT is on: the shared token is not used");
            }
            jwt = Some(config);
        } else if args.jwt_audience.is_some() || args.jwt_issuer.is_some() {
            anyhow::bail!(
                "--jwt-audience and --jwt-issuer need --jwt-secret-file, DUPLEX_JWT_SECRET or \
                 --jwt-public-key"
            );
        }
        let api_key = match &args.api_key_file {
            Some(path) => Some(read_secret(path, "--api-key-file")?),
            None => env_secret("DUPLEX_API_KEY"),
        };
        Ok(Secrets {
            token,
            jwt,
            api_key,
        })
    }
}

/// A secret from a file, without the surrounding whitespace (an editor's final newline).
fn read_secret(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        anyhow::bail!("{flag} {}: the file is empty", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                warn!(
                    "{flag} {}: readable by other users (chmod 600 it)",
                    path.display()
                );
            }
        }
    }
    Ok(secret.to_owned())
}

/// A secret from an environment variable; empty counts as unset.
fn env_secret(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what `kill`, systemd and docker send).
///
/// The SIGTERM handler is installed when this is called, not when the future is first
/// polled: called before the hub binds, a SIGTERM that comes as soon as the server answers
/// its first request is a graceful shutdown, not the default action's immediate exit.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                _ = term.recv() => info!("SIGTERM received"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// Every option but the two that cannot be in a file has a key, and every key an option;
    /// every option has a DUPLEX_* variable.
    #[test]
    fn the_file_keys_and_the_variables_cover_every_option() {
        let command = Cli::command();
        let mut ids: Vec<String> = command
            .get_arguments()
            .map(|a| a.get_id().as_str().to_owned())
            .filter(|id| id != "token" && id != "config" && id != "help")
            .collect();
        ids.sort();
        let singular = |k: &str| match k {
            "jwt_public_key" => "jwt_public_keys".to_owned(),
            "trust_proxy" => "trust_proxies".to_owned(),
            "allowed_origin" => "allowed_origins".to_owned(),
            other => other.to_owned(),
        };
        let mut keys: Vec<String> = crate::config_file::KEYS
            .iter()
            .map(|k| singular(k))
            .collect();
        keys.sort();
        assert_eq!(ids, keys);
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "token" || id == "help" {
                continue;
            }
            assert!(
                arg.get_env().is_some(),
                "--{id} has no environment variable"
            );
        }
    }
}
