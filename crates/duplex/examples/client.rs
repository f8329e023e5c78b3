//! A client that sends one message and prints the reply:
//! `cargo run -p duplex --example client -- ws://127.0.0.1:9002`.
use duplex::{CloseCode, CloseFrame, Message};

#[tokio::main]
async fn main() -> duplex::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or("ws://127.0.0.1:9002".into());
    let (mut ws, _response) = duplex::connect(&url).await?;
    ws.send(Message::text("Hello, duplex!")).await?;
    if let Some(reply) = ws.recv().await {
        println!("{:?}", reply?);
    }
    ws.close(Some(CloseFrame::new(CloseCode::NORMAL, "done")))
        .await?;
    Ok(())
}
