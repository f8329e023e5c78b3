//! `duplex`: a WebSocket server and client on the command line.

// The doc comments on options are their `--help` text, written for a terminal: a bare URL or
// `[user:pass@]` there is meant literally, not as a link.
#![allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

mod bench;
mod chat;
mod config_file;
mod connect;
mod deflate_args;
mod serve;

/// WebSocket toolkit: serve, connect, bench.
#[derive(Debug, Parser)]
#[command(name = "duplex", version, about)]
struct Cli {
    /// How log lines on stderr are written: text (coloured only on a terminal) or json (one
    /// object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The form of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Log lines on stderr, filtered by `RUST_LOG` (default `info`). Colour codes only when
/// stderr is a terminal: in a file or a pipe they would be noise.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the chat server: browser page, rooms with history, echo at /echo.
    Serve(Box<serve::ServeArgs>),
    /// Connect to a WebSocket URL: an interactive client on a terminal, lines in and out in a
    /// pipe, or one message and its reply with -x.
    ///
    /// Exit codes: 0 ok, 1 usage or other error, 2 connection refused or unreachable, 3 DNS
    /// failure, 4 handshake rejected (HTTP status), 5 TLS failure, 6 closed by the server with
    /// an error code, 7 timeout.
    Connect(connect::ConnectArgs),
    /// Chat in a room of `duplex serve` (or any server that relays text): asks for your name,
    /// then sends lines and shows `[time] name: text`. Exit codes as for `connect`.
    Chat(chat::ChatArgs),
    /// Load-test a WebSocket server: messages/s, MB/s, latency percentiles, server CPU.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    // The matches, kept: `duplex serve --config` needs to know which options were given.
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // Exit code 1 for a usage error, not clap's 2: `duplex connect` documents 2 as
            // "connection refused".
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logs(cli.log_format);
    let mut threads = 0;
    if let Command::Serve(args) = &mut cli.command {
        // Before the runtime: the file and the environment may set its thread count.
        if let Err(e) = args.resolve(matches.subcommand_matches("serve")) {
            eprintln!("duplex: {e:#}");
            return ExitCode::FAILURE;
        }
        threads = args.threads;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duplex: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = matches!(cli.command, Command::Connect(_) | Command::Chat(_));
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Connect(args) => Ok(connect::run(args).await),
            Command::Chat(args) => Ok(chat::run(args).await),
            Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    if client {
        // A name lookup still running on the blocking pool (one that timed out) must not
        // hold the exit back: the clients' outcome is decided.
        runtime.shutdown_background();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("duplex: {e:#}");
            ExitCode::FAILURE
        }
    }
}
