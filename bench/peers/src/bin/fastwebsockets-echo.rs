//! Echo server on fastwebsockets, as its echo example writes it: read a frame, write it back.
//! The opening handshake is done by hand (a minimal HTTP parse), so the connection holds
//! nothing but fastwebsockets' own state afterwards.

use base64::Engine;
use fastwebsockets::{Frame, OpCode, Role, WebSocket};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn handshake(tcp: &mut TcpStream) -> Result<(), BoxError> {
    let mut buf = Vec::with_capacity(1024);
    let key = loop {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf)?.is_complete() {
            let key = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                .ok_or("no Sec-WebSocket-Key")?;
            break key.value.to_vec();
        }
    };
    let mut sha1 = Sha1::new();
    sha1.update(&key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(response.as_bytes()).await?;
    Ok(())
}

async fn serve(mut tcp: TcpStream) -> Result<(), BoxError> {
    handshake(&mut tcp).await?;
    let mut ws = WebSocket::after_handshake(tcp, Role::Server);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                // The frame came masked from the client; the answer goes unmasked.
                let answer = Frame::new(true, frame.opcode, None, frame.payload);
                ws.write_frame(answer).await?;
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = duplex_bench_peers::listen("fastwebsockets").await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = serve(tcp).await;
        });
    }
}
