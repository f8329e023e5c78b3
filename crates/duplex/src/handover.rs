//! What the reading half of a split connection hands over to the writing half: the frames the
//! protocol obliges it to send (the echo of a close, the close frame of a protocol error, a
//! keepalive ping) in order, and the latest ping to answer.
//!
//! One small allocation shared by both halves, holding no queue until there is something to
//! hand over: a channel would reserve room for a block of messages up front, about 1 KiB on
//! every split connection for what happens a few times in its life. The writer looks at it on
//! every send, through a flag that spares it the lock while nothing waits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use duplex_proto::{CloseFrame, Message};

/// A frame the writer must send for the reader.
#[derive(Debug)]
pub(crate) enum Control {
    /// A received close, which obliges an answer.
    React(Message),
    /// The peer broke the protocol: send the close frame for this error.
    Fail(duplex_proto::Error),
    /// A keepalive ping to send, with its id for the ping stamp.
    Ping(u64, Bytes),
    /// Fail the connection with this close frame (a keepalive ping went unanswered).
    Close(CloseFrame),
}

/// What the writer takes over in one go.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    /// Frames to send, in the order the reader asked for them.
    pub(crate) control: VecDeque<Control>,
    /// The payload of the latest ping received and not answered yet. Only the most recent
    /// ping needs a pong (RFC 6455 section 5.5.3), so a peer that floods pings while the
    /// writer is idle costs one slot, not a queue that grows with every ping.
    pub(crate) pong: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Shared {
    line: Mutex<Line>,
    /// Something waits in `line` (or an end went away): the writer's fast path reads only
    /// this.
    pending: AtomicBool,
}

#[derive(Debug, Default)]
struct Line {
    handed: Handed,
    reader_gone: bool,
    writer_gone: bool,
    /// The writer waiting in [`WriterEnd::poll_take`].
    waiting: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Line> {
        // A poisoned lock only means a panic elsewhere mid-update of plain values.
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reader's end.
#[derive(Debug)]
pub(crate) struct ReaderEnd(Arc<Shared>);

/// The writer's end.
#[derive(Debug)]
pub(crate) struct WriterEnd(Arc<Shared>);

/// A new handover between the two halves of one connection.
pub(crate) fn handover() -> (ReaderEnd, WriterEnd) {
    let shared = Arc::new(Shared::default());
    (ReaderEnd(shared.clone()), WriterEnd(shared))
}

impl ReaderEnd {
    /// Asks the writer to send `control` (nothing happens once the writer is gone: nobody is
    /// left to send it).
    pub(crate) fn send(&self, control: Control) {
        self.update(|line| line.handed.control.push_back(control));
    }

    /// Asks the writer to answer the ping with this payload, instead of any earlier one still
    /// unanswered.
    pub(crate) fn pong(&self, payload: Bytes) {
        self.update(|line| line.handed.pong = Some(payload));
    }

    fn update(&self, change: impl FnOnce(&mut Line)) {
        let waiting = {
            let mut line = self.0.lock();
            if line.writer_gone {
                return;
            }
            change(&mut line);
            self.0.pending.store(true, Ordering::Release);
            line.waiting.take()
        };
        if let Some(writer) = waiting {
            writer.wake();
        }
    }
}

impl Drop for ReaderEnd {
    fn drop(&mut self) {
        let waiting = {
            let mut line = self.0.lock();
            line.reader_gone = true;
            self.0.pending.store(true, Ordering::Release);
            line.waiting.take()
        };
        if let Some(writer) = waiting {
            writer.wake();
        }
    }
}

impl WriterEnd {
    /// Everything handed over since the last call (`None`: nothing).
    pub(crate) fn take(&self) -> Option<Handed> {
        if !self.0.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut line = self.0.lock();
        self.0.pending.store(line.reader_gone, Ordering::Relaxed);
        let handed = std::mem::take(&mut line.handed);
        (!handed.control.is_empty() || handed.pong.is_some()).then_some(handed)
    }

    /// Waits until something is handed over; `Ready(None)` once the reader is gone and
    /// nothing is left.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Handed>> {
        if let Some(handed) = self.take() {
            return Poll::Ready(Some(handed));
        }
        let mut line = self.0.lock();
        // Under the lock the reader cannot hand anything over unseen: it either came before
        // (and is taken here) or comes after and finds the waker.
        let handed = std::mem::take(&mut line.handed);
        if !handed.control.is_empty() || handed.pong.is_some() {
            return Poll::Ready(Some(handed));
        }
        if line.reader_gone {
            return Poll::Ready(None);
        }
        match &mut line.waiting {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for WriterEnd {
    fn drop(&mut self) {
        let mut line = self.0.lock();
        line.writer_gone = true;
        line.handed = Handed::default();
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    #[test]
    fn control_frames_arrive_in_order_and_only_the_latest_pong() {
        let (reader, writer) = handover();
        assert!(writer.take().is_none());
        reader.pong(Bytes::from_static(b"first"));
        reader.send(Control::Ping(1, Bytes::new()));
        reader.pong(Bytes::from_static(b"second"));
        reader.send(Control::Close(CloseFrame::new(
            duplex_proto::CloseCode::INTERNAL,
            "bye",
        )));
        let handed = writer.take().expect("handed over");
        assert_eq!(handed.pong.as_deref(), Some(&b"second"[..]));
        assert!(matches!(
            handed.control.iter().collect::<Vec<_>>()[..],
            [Control::Ping(1, _), Control::Close(_)]
        ));
        assert!(writer.take().is_none());
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_and_learns_when_the_reader_is_gone() {
        let (reader, writer) = handover();
        let waiting = tokio::spawn(async move {
            let first = poll_fn(|cx| writer.poll_take(cx)).await;
            let second = poll_fn(|cx| writer.poll_take(cx)).await;
            (first.map(|h| h.pong), second.is_none())
        });
        tokio::task::yield_now().await;
        reader.pong(Bytes::from_static(b"ping"));
        tokio::task::yield_now().await;
        drop(reader);
        let (first, ended) = waiting.await.unwrap();
        assert_eq!(first, Some(Some(Bytes::from_static(b"ping"))));
        assert!(ended);
    }

    #[test]
    fn nothing_is_kept_for_a_writer_that_is_gone() {
        let (reader, writer) = handover();
        drop(writer);
        reader.pong(Bytes::from_static(b"unanswerable"));
        assert!(reader.0.lock().handed.pong.is_none());
    }
}
