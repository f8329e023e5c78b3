//! `duplex`: a WebSocket server and client on the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod connect;
mod deflate_args;
mod serve;

/// WebSocket toolkit: serve, connect, bench.
#[derive(Debug, Parser)]
#[command(name = "duplex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the chat server: browser page, rooms with history, echo at /echo.
    Serve(serve::ServeArgs),
    /// Connect to a WebSocket URL: stdin lines are sent, received messages printed.
    Connect(connect::ConnectArgs),
    /// Load-test a WebSocket server: messages/s, MB/s, latency percentiles, server CPU.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duplex: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Connect(args) => connect::run(args).await,
            Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("duplex: {e:#}");
            ExitCode::FAILURE
        }
    }
}
