//! Writes are batched: answers queued with `feed` to messages that arrived together go out in
//! one write, made when `recv` has handed out every message already read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use duplex::{Config, Message, Role, WebSocket};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A transport that counts the writes made on it.
struct CountingWrites {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_burst_is_echoed_with_one_write() {
    const BURST: usize = 16;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(AtomicUsize::new(0));
    let server_io = CountingWrites {
        inner: b,
        writes: writes.clone(),
    };
    let mut client = WebSocket::from_raw(a, Role::Client, Config::default(), BytesMut::new());
    let mut server =
        WebSocket::from_raw(server_io, Role::Server, Config::default(), BytesMut::new());

    // The whole burst arrives before the server reads anything.
    for i in 0..BURST {
        client.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    client.flush().await.unwrap();

    let echo = tokio::spawn(async move {
        while let Some(msg) = server.recv().await {
            let msg = msg.unwrap();
            if msg.is_text() {
                server.feed(msg).await.unwrap();
            }
        }
    });
    for i in 0..BURST {
        let got = client.recv().await.unwrap().unwrap();
        assert_eq!(got, Message::text(format!("m{i}")));
    }
    assert_eq!(writes.load(Relaxed), 1, "one write for the whole burst");

    // A ping among data messages is still answered, in order, before the server waits.
    client.feed(Message::text("before")).await.unwrap();
    client.feed(Message::Ping("p".into())).await.unwrap();
    client.feed(Message::text("after")).await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::text("before")
    );
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::Pong("p".into())
    );
    assert_eq!(
        client.recv().await.unwrap().unwrap(),
        Message::text("after")
    );

    client.close(None).await.unwrap();
    echo.await.unwrap();
}
