//! `duplex connect URL`: stdin lines become text messages; received messages are printed, one
//! per line.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use duplex::{ClientBuilder, CloseCode, CloseFrame, Message};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Options of `duplex connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The WebSocket URL, e.g. ws://localhost:8080/echo.
    url: String,
    /// Subprotocol to offer (repeatable).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    #[command(flatten)]
    deflate: crate::deflate_args::DeflateArgs,
    /// Also trust the CA certificates in this PEM file (wss://; a private CA or a self-signed
    /// server certificate).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Accept any server certificate (wss://). For development only: anyone on the path can
    /// impersonate the server.
    #[arg(long)]
    insecure: bool,
    /// Connect through this proxy: http://[user:pass@]host:port (CONNECT), socks5:// or
    /// socks5h://. Without it, HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY apply; "none"
    /// ignores them.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let mut builder = ClientBuilder::new(&args.url)?
        .config(duplex::Config::default().deflate(args.deflate.config()));
    for p in &args.subprotocols {
        builder = builder.protocol(p.clone());
    }
    if let Some(ca) = &args.ca {
        builder = builder.ca_file(ca);
    }
    if args.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder = match args.proxy.as_deref() {
        Some("none") => builder.no_proxy(),
        Some(url) => builder.proxy(url),
        None => builder,
    };
    let (mut ws, _) = builder
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            // Both branches are cancel safe: a line or message that loses the race is kept.
            line = lines.next_line(), if stdin_open => match line? {
                Some(line) => ws.send(Message::text(line)).await?,
                None => {
                    stdin_open = false;
                    ws.send(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))).await?;
                }
            },
            msg = ws.recv() => match msg {
                None => return Ok(ExitCode::SUCCESS),
                Some(msg) => {
                    let mut out = stdout.lock();
                    match msg? {
                        Message::Text(t) => writeln!(out, "{t}")?,
                        Message::Binary(b) => writeln!(out, "{}", hex(&b))?,
                        Message::Close(frame) => {
                            if stdin_open {
                                match frame {
                                    Some(f) => eprintln!("closed by server: {} {}", f.code, f.reason),
                                    None => eprintln!("closed by server"),
                                }
                            }
                        }
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                    out.flush()?;
                }
            },
        }
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}
