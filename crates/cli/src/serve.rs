//! `duplex serve`: accept WebSocket connections and echo every message on `/echo`.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use clap::Args;
use duplex::server::Handshake;
use duplex::{Config, Message};
use http::{Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

/// Options of `duplex serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    /// Host name or address to listen on; every address it resolves to is bound.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Largest message accepted, in bytes; larger ones close the connection with 1009.
    #[arg(long, default_value_t = Config::default().max_message_size)]
    max_message_size: usize,
    #[command(flatten)]
    deflate: crate::deflate_args::DeflateArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::default()
        .max_message_size(args.max_message_size)
        .max_frame_size(args.max_message_size.min(Config::default().max_frame_size))
        .deflate(args.deflate.config());
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot resolve {}", args.host))?
        .collect();
    let mut listeners = Vec::new();
    for addr in &addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => listeners.push(l),
            Err(e) => warn!(%addr, "cannot listen: {e}"),
        }
    }
    if listeners.is_empty() {
        bail!("cannot listen on {}:{}", args.host, args.port);
    }
    for l in &listeners {
        info!(addr = %l.local_addr()?, "listening");
    }
    let shown = listeners[0].local_addr()?;
    let host = if args.host.parse::<std::net::IpAddr>().is_ok() && shown.is_ipv6() {
        format!("[{}]", shown.ip())
    } else if args.host.parse::<std::net::IpAddr>().is_ok() {
        shown.ip().to_string()
    } else {
        args.host.clone()
    };
    println!("duplex serving: echo at ws://{host}:{}/echo", shown.port());

    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(listener, config));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("shutting down"),
        Some(done) = tasks.join_next() => done??,
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, config: Config) -> anyhow::Result<()> {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the others.
                warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = handle(tcp, config).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn handle(tcp: TcpStream, config: Config) -> duplex::Result<()> {
    tcp.set_nodelay(true)?;
    let handshake = Handshake::read(tcp, config).await?;
    match handshake.request().uri().path() {
        "/echo" => {
            let ws = handshake.upgrade(|_| Ok(())).await?;
            echo(ws).await
        }
        "/" if !is_upgrade(handshake.request()) => {
            let body = "duplex: WebSocket echo endpoint at /echo\n".to_string();
            handshake.respond(Response::new(body)).await.map(drop)
        }
        _ => handshake
            .respond(duplex::proto::handshake::server::reject(
                StatusCode::NOT_FOUND,
                "no such endpoint (try /echo)",
            ))
            .await
            .map(drop),
    }
}

fn is_upgrade<B>(req: &http::Request<B>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
}

/// Sends every text and binary message back unchanged until the peer closes.
async fn echo(mut ws: duplex::WebSocket<TcpStream>) -> duplex::Result<()> {
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            ws.send(msg).await?;
        }
    }
    Ok(())
}
