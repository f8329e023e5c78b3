//! `duplex connect URL`: a WebSocket client for people and for scripts.
//!
//! - Interactive mode (stdin and stdout are a terminal): line editing and history, received
//!   messages printed above the line being typed, `/` commands ([`interactive`]).
//! - Pipe mode (otherwise): each line of stdin is a text message, each received message a
//!   line of stdout; or raw bytes both ways with `--binary` ([`pipe`]). When stdin ends the
//!   client closes and exits once the server answered the close (`--keep-open` stays).
//! - One-shot: `-x TEXT` sends TEXT, prints the reply (`--wait N` replies) and exits.
//!
//! Failures print one line and exit with a code of their own ([`exit::Exit`]).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use duplex::Message;
use tokio::sync::mpsc;

pub mod args;
pub mod display;
pub mod exit;
pub mod interactive;
pub mod pipe;
pub mod printer;
pub mod session;

use args::{parse_secs, ClientArgs, Connector};
use display::{BinaryFormat, Sink, Style};
use exit::{Exit, Failure};
use session::{Backoff, Input, Options, Session};

/// Options of `duplex connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The WebSocket URL, e.g. ws://localhost:8080/echo.
    url: String,
    /// Subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// Binary both ways: stdin's bytes are sent as binary messages (one per read, up to 64 KiB)
    /// and received messages are written as their raw bytes, with no line ends. Pipe mode.
    #[arg(long)]
    binary: bool,
    /// Show received binary messages as base64 instead of hex.
    #[arg(long, conflicts_with = "binary")]
    base64: bool,
    /// Send TEXT, print the reply, close and exit (see --wait and --timeout).
    #[arg(short = 'x', long, value_name = "TEXT",
          conflicts_with_all = ["binary", "keep_open", "reconnect"])]
    execute: Option<String>,
    /// With -x: the number of replies to print before closing (0: send and close).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "execute")]
    wait: usize,
    /// With -x: fail with exit code 7 unless every reply came within SECS.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs,
          requires = "execute")]
    timeout: Duration,
    /// Pipe mode: when stdin ends, keep the connection open and go on printing until the
    /// server closes it (by default the client closes it then).
    #[arg(long)]
    keep_open: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `duplex connect`; the exit code says how it ended.
pub async fn run(args: ConnectArgs) -> ExitCode {
    finish(connect(args).await)
}

/// Prints a failure's line and turns the outcome into an exit code.
pub fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("duplex: {}", f.message);
            f.exit.into()
        }
    }
}

/// Sends lines as they are and shows messages as they come.
#[derive(Debug)]
struct Raw;

impl Session for Raw {
    fn opened(&mut self, _protocol: Option<&str>, _out: &mut Sink) -> Vec<Message> {
        Vec::new()
    }

    fn line(&mut self, line: String, _out: &mut Sink) -> Option<Message> {
        Some(Message::text(line))
    }

    fn received(&mut self, msg: &Message, out: &mut Sink) -> std::io::Result<()> {
        out.message(msg)
    }
}

async fn connect(args: ConnectArgs) -> Result<(), Failure> {
    let connector = Connector::new(&args.url, &args.client, args.subprotocols.clone())?;
    let format = if args.base64 {
        BinaryFormat::Base64
    } else {
        BinaryFormat::Hex
    };
    let mut out = Sink::Pipe {
        raw: args.binary,
        format,
    };
    let ws = connector.connect(&mut out).await?;
    let opts = Options {
        keep_open: args.keep_open,
        replies: None,
        show_ping_pong: args.client.show_ping_pong,
        reconnect: args
            .client
            .reconnect
            .then(|| Backoff::new(args.client.reconnect_attempts)),
    };

    if let Some(text) = args.execute {
        let mut input = pipe::execute(text);
        let opts = Options {
            keep_open: args.wait > 0,
            replies: (args.wait > 0).then_some(args.wait),
            ..opts
        };
        let mut raw = Raw;
        let run = session::run(&connector, ws, &mut raw, &mut input, &mut out, opts);
        return match tokio::time::timeout(args.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(Failure::new(
                Exit::Timeout,
                format!(
                    "no reply from {} within {} s",
                    connector.url,
                    args.timeout.as_secs_f64()
                ),
            )),
        };
    }

    let interactive =
        !args.binary && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if interactive {
        if let Some((reader, printer, guard)) = interactive::start() {
            let style = Style::new(args.client.no_color);
            let mut out = Sink::Terminal {
                printer: printer.clone(),
                style,
                format,
            };
            out.note(&connected_banner(&connector.url, &ws));
            let (tx, mut input) = mpsc::channel::<Input>(16);
            let prompt = style.sent("> ");
            let forwarder = tokio::spawn(interactive::forward(reader, prompt, tx, printer, style));
            let result = session::run(&connector, ws, &mut Raw, &mut input, &mut out, opts).await;
            forwarder.abort();
            guard.finish();
            return result;
        }
    }
    let mut input = pipe::stdin(args.binary);
    session::run(&connector, ws, &mut Raw, &mut input, &mut out, opts).await
}

/// "connected to ws://…/ (subprotocol chat, permessage-deflate); /help for commands,
/// Ctrl-D to quit".
pub fn connected_banner(url: &str, ws: &session::Ws) -> String {
    let mut extras = Vec::new();
    if let Some(p) = ws.protocol() {
        extras.push(format!("subprotocol {p}"));
    }
    if ws.deflate().is_some() {
        extras.push("permessage-deflate".to_owned());
    }
    let extras = if extras.is_empty() {
        String::new()
    } else {
        format!(" ({})", extras.join(", "))
    };
    format!("connected to {url}{extras}; /help for commands, Ctrl-D to quit")
}
