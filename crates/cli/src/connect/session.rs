//! The session loop both modes share: send what the input produces, show what arrives, close
//! when the input ends, and reconnect with backoff (`--reconnect`).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex::{CloseCode, CloseFrame, MaybeTlsStream, Message, WebSocket};
use rand::Rng;
use tokio::sync::mpsc;

use super::args::Connector;
use super::display::{binary_line, control_text, Sink};
use super::exit::{describe_close, Exit, Failure};

/// An open connection.
pub type Ws = WebSocket<MaybeTlsStream>;

/// What the input (stdin lines or chunks, the terminal's lines and commands) asks for. The
/// input ends when its channel closes.
#[derive(Debug)]
pub enum Input {
    /// A line: a text message, or whatever the [`Session`] makes of it.
    Line(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping with this payload (`/ping`).
    Ping(Bytes),
    /// Close the connection with this frame (`/close`, `/quit`, Ctrl-D) and end.
    Close(Option<CloseFrame>),
    /// The input cannot go on (a line of stdin that is not UTF-8): close and fail.
    Fail(Failure),
}

/// What a client subcommand does with lines and messages: `duplex connect` sends lines as they
/// are and shows messages as they come; `duplex chat` speaks the chat protocol.
pub trait Session {
    /// Messages to send as soon as a connection is open (again), given the subprotocol the
    /// server chose: a chat's join.
    fn opened(&mut self, protocol: Option<&str>, out: &mut Sink) -> Vec<Message>;
    /// The message a line of input becomes (`None`: nothing to send).
    fn line(&mut self, line: String, out: &mut Sink) -> Option<Message>;
    /// Shows a received text or binary message.
    fn received(&mut self, msg: &Message, out: &mut Sink) -> io::Result<()>;
    /// Whether the server still owes an answer to something sent (a chat message not yet
    /// delivered back): at the end of the input, closing waits for it, for at most
    /// [`SETTLE`].
    fn pending(&self) -> bool {
        false
    }
}

/// The longest the end of the input waits for [`Session::pending`] answers before closing.
pub const SETTLE: Duration = Duration::from_secs(5);

/// How the loop behaves.
#[derive(Debug)]
pub struct Options {
    /// When the input ends, keep the connection open and go on showing messages until the
    /// server closes (`--keep-open`, `-x`), instead of closing it.
    pub keep_open: bool,
    /// Close after this many messages were received (`-x --wait N`).
    pub replies: Option<usize>,
    /// Show pings and pongs.
    pub show_ping_pong: bool,
    /// Reconnect when the connection fails or the server closes it (`--reconnect`).
    pub reconnect: Option<Backoff>,
}

/// How one connection ended.
#[derive(Debug)]
enum Ended {
    /// This side closed (or the input asked it to) and the close completed.
    Done,
    /// The server closed with this frame.
    ServerClosed(Option<CloseFrame>),
    /// The connection or the input failed.
    Failed(Failure),
}

/// State that outlives one connection.
#[derive(Debug)]
struct State {
    /// The input has not ended.
    input_open: bool,
    /// Messages still to receive before closing (`-x --wait N`).
    replies_left: Option<usize>,
    /// Pings sent with `/ping` and not yet answered, oldest first, to show round-trip times.
    pings: VecDeque<(Bytes, Instant)>,
}

/// A connection that stayed up this long was a success: the backoff starts over after it.
/// Shorter ones count as failed attempts, so a server that accepts and at once closes is not
/// hammered (websocat#186).
const STABLE: Duration = Duration::from_secs(10);

/// Runs the session on `ws` until it ends: `Ok` for exit code 0, else the failure.
pub async fn run(
    connector: &Connector,
    mut ws: Ws,
    session: &mut dyn Session,
    input: &mut mpsc::Receiver<Input>,
    out: &mut Sink,
    mut opts: Options,
) -> Result<(), Failure> {
    let mut state = State {
        input_open: true,
        replies_left: opts.replies,
        pings: VecDeque::new(),
    };
    loop {
        let started = Instant::now();
        let ended = connection(&mut ws, session, input, out, &opts, &mut state).await;
        let failure = match ended {
            Ended::Done => return Ok(()),
            Ended::ServerClosed(frame) => {
                let failure = Failure::closed_by_server(frame.as_ref());
                if failure.is_none() {
                    out.note(&format!(
                        "closed by the server: {}",
                        describe_close(frame.as_ref())
                    ));
                }
                match (failure, state.replies_left) {
                    (Some(f), _) => f,
                    (None, Some(n)) if n > 0 => Failure::new(
                        Exit::Closed,
                        format!(
                            "closed by the server ({}) before {n} more {}",
                            describe_close(frame.as_ref()),
                            if n == 1 { "reply" } else { "replies" }
                        ),
                    ),
                    // A normal close: over, unless asked to stay connected.
                    (None, _) if opts.reconnect.is_none() => return Ok(()),
                    (None, _) => Failure::new(Exit::Ok, "closed by the server"),
                }
            }
            Ended::Failed(f) => f,
        };
        // A normal close by the server is a reason to reconnect, not a failure; the rest are
        // retried only if they may clear up. Nothing is retried once the input has ended:
        // there is nothing left to send.
        let retry =
            (failure.retryable || failure.exit == Exit::Ok) && (state.input_open || opts.keep_open);
        let backoff = match opts.reconnect.as_mut() {
            Some(backoff) if retry => backoff,
            _ if failure.exit == Exit::Ok => return Ok(()),
            _ => return Err(failure),
        };
        if failure.exit != Exit::Ok {
            out.warn(&failure.message);
        }
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        match reconnect(connector, backoff, input, out, &mut state).await {
            Reconnect::Connected(next) => ws = *next,
            Reconnect::Quit => return Ok(()),
            Reconnect::GaveUp(f) => return Err(f),
        }
    }
}

/// What reconnecting came to.
enum Reconnect {
    Connected(Box<Ws>),
    /// The input asked to quit while waiting.
    Quit,
    GaveUp(Failure),
}

/// Waits and tries again until a connection opens, the backoff gives up, or the input quits.
async fn reconnect(
    connector: &Connector,
    backoff: &mut Backoff,
    input: &mut mpsc::Receiver<Input>,
    out: &mut Sink,
    state: &mut State,
) -> Reconnect {
    loop {
        let Some(delay) = backoff.next_delay() else {
            return Reconnect::GaveUp(Failure::new(
                Exit::Other,
                format!("gave up reconnecting after {} attempts", backoff.attempts),
            ));
        };
        out.note(&format!(
            "reconnecting in {:.1} s (attempt {} of {})",
            delay.as_secs_f64(),
            backoff.attempt,
            backoff.attempts
        ));
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                item = input.recv(), if state.input_open => match item {
                    None | Some(Input::Close(_)) => return Reconnect::Quit,
                    Some(Input::Fail(f)) => return Reconnect::GaveUp(f),
                    // Nothing is queued for later: a message typed into a dead connection
                    // would arrive out of its context.
                    Some(_) => out.warn("not connected: not sent"),
                },
            }
        }
        match connector.connect(out).await {
            Ok(ws) => {
                out.note(&format!("reconnected to {}", connector.url));
                return Reconnect::Connected(Box::new(ws));
            }
            Err(f) if f.retryable => out.warn(&f.message),
            Err(f) => return Reconnect::GaveUp(f),
        }
    }
}

/// One connection, until it ends.
async fn connection(
    ws: &mut Ws,
    session: &mut dyn Session,
    input: &mut mpsc::Receiver<Input>,
    out: &mut Sink,
    opts: &Options,
    state: &mut State,
) -> Ended {
    for msg in session.opened(ws.protocol(), out) {
        if let Err(e) = ws.send(msg).await {
            return Ended::Failed(Failure::session(&e));
        }
    }
    // This side has sent its close frame: what is left is reading until the server answers.
    let mut closing = false;
    // The server's close frame, once it came.
    let mut server_close: Option<Option<CloseFrame>> = None;
    // The input ended and closing waits for the session's pending answers until then.
    let mut settle: Option<tokio::time::Instant> = None;
    let normal = || Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")));
    // The input failed: the session closes, then ends with this.
    let mut failed: Option<Failure> = None;
    let done = |failed: Option<Failure>| failed.map_or(Ended::Done, Ended::Failed);
    loop {
        tokio::select! {
            // Both branches are cancel safe: a line or message that loses the race is kept.
            item = input.recv(), if state.input_open && !closing && server_close.is_none() => {
                let msg = match item {
                    None => {
                        state.input_open = false;
                        if opts.keep_open {
                            continue;
                        }
                        if session.pending() {
                            settle = Some(tokio::time::Instant::now() + SETTLE);
                            continue;
                        }
                        closing = true;
                        normal()
                    }
                    Some(Input::Line(line)) => match session.line(line, out) {
                        Some(msg) => msg,
                        None => continue,
                    },
                    Some(Input::Binary(data)) => {
                        out.sent(&binary_line(">", &data, out.format()));
                        Message::Binary(data)
                    }
                    Some(Input::Ping(payload)) => {
                        out.sent(&format!("> {}", control_text("ping", &payload)));
                        state.pings.push_back((payload.clone(), Instant::now()));
                        Message::Ping(payload)
                    }
                    Some(Input::Close(frame)) => {
                        // A plain quit (Ctrl-D, /quit) needs no echo; a chosen code does.
                        let plain = frame.as_ref().is_none_or(|f| {
                            f.code == CloseCode::NORMAL && f.reason.as_str().is_empty()
                        });
                        if !plain {
                            out.sent(&format!("> close {}", describe_close(frame.as_ref())));
                        }
                        closing = true;
                        Message::Close(frame)
                    }
                    Some(Input::Fail(f)) => {
                        // Close like at the end of the input (what was sent is still shown
                        // as it comes back), then fail.
                        failed = Some(f);
                        closing = true;
                        normal()
                    }
                };
                if let Err(e) = ws.send(msg).await {
                    return Ended::Failed(Failure::session(&e));
                }
            }
            () = tokio::time::sleep_until(settle.unwrap_or_else(tokio::time::Instant::now)),
                if settle.is_some() && !closing && server_close.is_none() =>
            {
                closing = true;
                if let Err(e) = ws.send(normal()).await {
                    return Ended::Failed(Failure::session(&e));
                }
            }
            msg = ws.recv() => match msg {
                None => {
                    return match server_close {
                        Some(frame) => Ended::ServerClosed(frame),
                        None if closing => done(failed),
                        None => Ended::Failed(Failure::session(&duplex::Error::AbnormalClosure)),
                    }
                }
                Some(Err(e)) => {
                    if closing {
                        // Everything was sent and the close is on its way; a server that
                        // drops the connection instead of answering it loses nothing.
                        out.note(&format!("the server did not answer the close: {e}"));
                        return done(failed);
                    }
                    return Ended::Failed(Failure::session(&e));
                }
                Some(Ok(Message::Close(frame))) => {
                    if closing {
                        if out.is_terminal() {
                            out.note(&format!("closed: {}", describe_close(frame.as_ref())));
                        }
                    } else {
                        server_close = Some(frame);
                    }
                }
                Some(Ok(Message::Ping(payload))) => {
                    if opts.show_ping_pong {
                        out.note(&format!("< {}", control_text("ping", &payload)));
                    }
                }
                Some(Ok(Message::Pong(payload))) => {
                    let answers = state.pings.front().is_some_and(|(p, _)| *p == payload);
                    if answers {
                        if let Some((_, sent)) = state.pings.pop_front() {
                            let ms = sent.elapsed().as_secs_f64() * 1e3;
                            out.note(&format!("< {} in {ms:.2} ms", control_text("pong", &payload)));
                        }
                    } else if opts.show_ping_pong {
                        out.note(&format!("< {}", control_text("pong", &payload)));
                    }
                }
                Some(Ok(msg)) => {
                    if let Err(e) = session.received(&msg, out) {
                        // stdout closed (`duplex connect ... | head -1`): nobody reads what
                        // comes next, so the session is over; a broken pipe is how that ends.
                        let _ = ws.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))).await;
                        return if e.kind() == io::ErrorKind::BrokenPipe {
                            Ended::Done
                        } else {
                            Ended::Failed(Failure::new(Exit::Other, format!("cannot write: {e}")))
                        };
                    }
                    let mut done = settle.is_some() && !session.pending();
                    if let Some(left) = state.replies_left.as_mut() {
                        *left = left.saturating_sub(1);
                        done |= *left == 0;
                    }
                    if done && !closing && server_close.is_none() {
                        closing = true;
                        if let Err(e) = ws.send(normal()).await {
                            return Ended::Failed(Failure::session(&e));
                        }
                    }
                }
            },
        }
    }
}

/// Exponential backoff with jitter, bounded in delay and in attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Attempts made since the last success.
    attempt: u32,
    /// Attempts allowed in a row.
    attempts: u32,
    /// The first delay.
    base: Duration,
    /// The longest delay.
    max: Duration,
}

impl Backoff {
    /// 0.5 s, 1 s, 2 s ... up to 30 s, at most `attempts` times in a row.
    pub fn new(attempts: u32) -> Backoff {
        Backoff {
            attempt: 0,
            attempts,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }

    /// The wait before the next attempt, `None` once all were used. Each wait is drawn between
    /// half and all of the exponential step ("equal jitter"): clients dropped together by a
    /// server restart then come back spread out, and none waits much less than planned.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.attempt >= self.attempts {
            return None;
        }
        let step = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        let half = step / 2;
        let jitter = rand::thread_rng().gen_range(Duration::ZERO..=half);
        Some(half + jitter)
    }

    /// Starts over after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_bounded_and_gives_up() {
        let mut b = Backoff::new(12);
        let mut steps = Vec::new();
        while let Some(d) = b.next_delay() {
            steps.push(d);
        }
        assert_eq!(steps.len(), 12);
        for (i, d) in steps.iter().enumerate() {
            let step = (Duration::from_millis(500) * (1 << i)).min(Duration::from_secs(30));
            assert!(
                *d >= step / 2 && *d <= step,
                "attempt {i}: {d:?} vs {step:?}"
            );
        }
        assert!(steps.iter().all(|d| *d <= Duration::from_secs(30)));
        b.reset();
        assert!(b
            .next_delay()
            .is_some_and(|d| d <= Duration::from_millis(500)));
    }
}
