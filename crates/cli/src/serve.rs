//! `duplex serve`: run the hub (chat page, chat rooms with history, echo, health, metrics)
//! until SIGINT or SIGTERM, then shut down gracefully.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use duplex_hub::{Hub, HubConfig, RedisConfig};
use tracing::info;

/// Options of `duplex serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on (0: any free port).
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    /// Host name or address to listen on; every address it resolves to is bound.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Directory of the chat history (an SQLite file), created if missing.
    #[arg(long, default_value = "duplex-data")]
    data: PathBuf,
    /// Require this token on every WebSocket upgrade, as `Authorization: Bearer TOKEN` or
    /// `?token=TOKEN` (open the page as http://HOST:PORT/?token=TOKEN). Missing or wrong: 401.
    #[arg(long)]
    token: Option<String>,
    /// Accept WebSockets from pages of this origin only, e.g. https://chat.example.com
    /// (repeatable). Others get 403; clients that send no Origin are not affected.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Open connections above which new requests get 503.
    #[arg(long, default_value_t = HubConfig::new(".").max_connections)]
    max_connections: usize,
    /// Largest chat message in bytes; larger closes the connection with 1009.
    #[arg(long, default_value_t = HubConfig::new(".").websocket.max_message_size)]
    max_message_size: usize,
    /// Largest message on /echo in bytes; larger closes the connection with 1009.
    #[arg(long, default_value_t = HubConfig::new(".").max_echo_message_size)]
    max_echo_message_size: usize,
    /// Chat messages per second one connection may send (bursts of twice as many); more
    /// closes it with 1008. 0: no limit.
    #[arg(long, default_value_t = HubConfig::new(".").rate_limit)]
    rate_limit: u32,
    /// Messages kept per room; older ones are deleted.
    #[arg(long, default_value_t = HubConfig::new(".").history_limit)]
    history_limit: u64,
    /// Messages that may wait for one recipient; one that falls further behind is closed with
    /// 4000 (it can reconnect and resume).
    #[arg(long, default_value_t = HubConfig::new(".").send_queue)]
    send_queue: usize,
    /// PEM file with the TLS certificate chain: serve https:// and wss:// (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the TLS private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds without traffic (checked once per period: up to twice this) after which an
    /// /echo connection gives up its task until it has something to read (less memory per
    /// idle connection); 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_seconds)]
    park_after: f64,
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
    /// The start of every Redis key and channel, so that deployments can share one Redis.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "duplex",
        requires = "redis"
    )]
    redis_prefix: String,
    /// With --redis: seconds a member stays present without its node refreshing it. A node
    /// that is killed or cut off from Redis has its members leave within this time and a third.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_seconds, requires = "redis")]
    presence_ttl: f64,
    #[command(flatten)]
    deflate: crate::deflate_args::DeflateArgs,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
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
    if let Some(token) = &args.token {
        config = config.token(token.clone());
    }
    for origin in &args.allowed_origins {
        config = config.allowed_origin(origin.clone());
    }
    if let Some(url) = &args.redis {
        let ttl = Duration::from_secs_f64(args.presence_ttl.max(0.3));
        config = config.redis(
            RedisConfig::new(url.clone())
                .prefix(args.redis_prefix.clone())
                .presence_ttl(ttl),
        );
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
    if args.token.is_some() {
        println!("a token is required: open {http}://{host}:{port}/?token=TOKEN");
    }
    info!("chat {history}");

    hub.run(shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what `kill`, systemd and docker send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
