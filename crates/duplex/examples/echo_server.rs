//! A complete echo server: `cargo run -p duplex --example echo_server`.
use duplex::Message;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> duplex::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:9002").await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut ws = duplex::accept(tcp).await?;
            while let Some(msg) = ws.recv().await {
                if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
                    ws.send(msg).await?;
                }
            }
            Ok::<_, duplex::Error>(())
        });
    }
}
