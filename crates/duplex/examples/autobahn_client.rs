//! The client side of the Autobahn|TestSuite run: fetch the case count, run every case echoing
//! each message, then ask the suite to write its reports.
//!
//! ```text
//! AUTOBAHN_URL=ws://127.0.0.1:9001 cargo run --release -p duplex --example autobahn_client
//! ```
//! `scripts/autobahn.sh` starts the suite's fuzzing server and runs this for you.

use duplex::{Config, DeflateConfig, Message};

const AGENT: &str = "duplex";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("AUTOBAHN_URL").unwrap_or_else(|_| "ws://127.0.0.1:9001".into());
    let count = case_count(&base).await?;
    eprintln!("autobahn_client: {count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        if let Err(e) = run_case(&url).await {
            // Many cases end with the suite breaking the protocol on purpose.
            eprintln!("case {case}: {e}");
        }
    }
    let (mut ws, _) = duplex::connect(&format!("{base}/updateReports?agent={AGENT}")).await?;
    ws.close(None).await?;
    Ok(())
}

async fn case_count(base: &str) -> anyhow::Result<u32> {
    let (mut ws, _) = duplex::connect(&format!("{base}/getCaseCount")).await?;
    let mut count = None;
    while let Some(msg) = ws.recv().await {
        if let Message::Text(t) = msg? {
            count = Some(t.trim().parse()?);
        }
    }
    count.ok_or_else(|| anyhow::anyhow!("no case count received"))
}

async fn run_case(url: &str) -> duplex::Result<()> {
    // Section 9 sends messages up to 16 MiB; sections 12 and 13 need permessage-deflate.
    let config = Config::default()
        .max_frame_size(64 << 20)
        .max_message_size(64 << 20)
        .deflate(Some(DeflateConfig::default()));
    let (mut ws, _) = duplex::ClientBuilder::new(url)?
        .config(config)
        .connect()
        .await?;
    while let Some(msg) = ws.recv().await {
        if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
            ws.send(msg).await?;
        }
    }
    Ok(())
}
