//! The load generator's connections: the context each connection's task runs in, and the echo
//! workload over a WebSocket and over plain TCP.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex::{Message, WebSocket};
use futures_util::{FutureExt, SinkExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::measure::{histogram, record, Latencies, Totals, Window};

/// What a connection task needs.
pub(super) struct Ctx {
    pub(super) totals: Arc<Totals>,
    pub(super) window: Arc<tokio::sync::OnceCell<Window>>,
    pub(super) ready: Arc<tokio::sync::Barrier>,
    pub(super) stop: Arc<AtomicBool>,
}

impl Ctx {
    pub(super) async fn connect_failed(self, e: impl std::fmt::Display) -> Latencies {
        self.totals.connect_errors.fetch_add(1, Relaxed);
        self.totals.note(format!("connect: {e}"));
        self.ready.wait().await;
        histogram()
    }

    /// Waits until every connection is open; then the window is known.
    pub(super) async fn start(&self) -> &Window {
        self.ready.wait().await;
        self.measured().await
    }

    /// Waits until the measurement window is set.
    pub(super) async fn measured(&self) -> &Window {
        loop {
            if let Some(w) = self.window.get() {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }
}

/// Closes politely, but does not wait long for a server that does not answer.
pub(super) async fn close<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// The echo workload on one WebSocket connection.
pub(super) async fn ws_echo<S>(
    mut ws: WebSocket<S>,
    ctx: Ctx,
    payload: Message,
    in_flight: usize,
) -> Latencies
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hist = histogram();
    let window = ctx.start().await;
    let expect = payload.len();
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut answer = in_flight;
    'run: loop {
        if ctx.stopped() || Instant::now() > window.end {
            break;
        }
        for _ in 0..answer {
            sent.push_back(Instant::now());
            if let Err(e) = ws.feed(payload.clone()).await {
                ctx.totals.error(format!("send: {e}"));
                break 'run;
            }
        }
        if let Err(e) = ws.flush().await {
            ctx.totals.error(format!("send: {e}"));
            break;
        }
        // Wait for one echo, then take every other one already read, and answer them all
        // with one write.
        answer = 0;
        let mut next = ws.recv().await;
        loop {
            let msg = match next {
                None => {
                    ctx.totals.error("the server closed the connection");
                    break 'run;
                }
                Some(Err(e)) => {
                    ctx.totals.error(format!("receive: {e}"));
                    break 'run;
                }
                Some(Ok(msg)) => msg,
            };
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    let now = Instant::now();
                    let Some(at) = sent.pop_front() else {
                        ctx.totals.error("an echo nobody asked for");
                        break 'run;
                    };
                    if msg.len() != expect {
                        ctx.totals.error("an echo of the wrong length");
                    }
                    ctx.totals.seen.fetch_add(1, Relaxed);
                    if window.contains(now) {
                        ctx.totals.messages.fetch_add(1, Relaxed);
                        ctx.totals.bytes.fetch_add(msg.len() as u64, Relaxed);
                        if at >= window.start {
                            record(&mut hist, now - at);
                        }
                    }
                    answer += 1;
                }
                Message::Close(frame) => {
                    ctx.totals.error(format!("the server closed: {frame:?}"));
                    break 'run;
                }
                Message::Ping(_) | Message::Pong(_) => {}
            }
            match ws.recv().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
    }
    close(ws).await;
    hist
}

/// The echo workload over plain TCP: `in_flight` messages of the payload's size outstanding,
/// one echoed message counted per `size` bytes read back.
pub(super) async fn raw_echo(
    mut tcp: tokio::net::TcpStream,
    ctx: Ctx,
    payload: Bytes,
    in_flight: usize,
) -> Latencies {
    let mut hist = histogram();
    let window = ctx.start().await;
    let size = payload.len().max(1);
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut out = Vec::with_capacity(size * in_flight);
    let mut buf = vec![0u8; (size * in_flight).max(64 * 1024)];
    let mut partial = 0usize;
    let mut answer = in_flight;
    'run: loop {
        if ctx.stopped() || Instant::now() > window.end {
            break;
        }
        out.clear();
        for _ in 0..answer {
            sent.push_back(Instant::now());
            out.extend_from_slice(&payload);
            if payload.is_empty() {
                out.push(0);
            }
        }
        if let Err(e) = tcp.write_all(&out).await {
            ctx.totals.error(format!("send: {e}"));
            break;
        }
        answer = 0;
        while answer == 0 {
            let n = match tcp.read(&mut buf).await {
                Ok(0) => {
                    ctx.totals.error("the server closed the connection");
                    break 'run;
                }
                Ok(n) => n,
                Err(e) => {
                    ctx.totals.error(format!("receive: {e}"));
                    break 'run;
                }
            };
            partial += n;
            let now = Instant::now();
            while partial >= size {
                partial -= size;
                let Some(at) = sent.pop_front() else {
                    ctx.totals.error("more bytes than were sent");
                    break 'run;
                };
                ctx.totals.seen.fetch_add(1, Relaxed);
                if window.contains(now) {
                    ctx.totals.messages.fetch_add(1, Relaxed);
                    ctx.totals.bytes.fetch_add(payload.len() as u64, Relaxed);
                    if at >= window.start {
                        record(&mut hist, now - at);
                    }
                }
                answer += 1;
            }
        }
    }
    hist
}
