//! A chat connection's outbox: the frames the broker (and the connection's own reader, for
//! error replies) queue for the connection's writer, bounded by [`HubConfig::send_queue`].
//!
//! A queue that holds nothing while empty: a channel reserves room for a block of messages and
//! its cache-padded state up front (about 800 bytes), on every chat connection, most of which
//! wait with nothing to send. This one is a lock around a `VecDeque` that grows with what is
//! queued and gives its room back once drained.
//!
//! [`HubConfig::send_queue`]: crate::HubConfig::send_queue

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use duplex::PreparedMessage;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The writer is `capacity` frames behind.
    Full,
    /// The connection's writer is gone.
    Closed,
}

/// Room kept in an emptied queue; more is given back.
const KEEP: usize = 16;

#[derive(Debug)]
struct Shared {
    line: Mutex<Line>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Line {
    frames: VecDeque<PreparedMessage>,
    /// The writer waiting in [`Outbox::poll_recv`].
    waiting: Option<Waker>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Line> {
        // A poisoned lock only means a panic elsewhere mid-update of plain values.
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Puts frames in an [`Outbox`]; cloned for every party that sends to the connection.
#[derive(Debug, Clone)]
pub(crate) struct OutboxSender(Arc<Shared>);

/// The writer's end of the queue.
#[derive(Debug)]
pub(crate) struct Outbox(Arc<Shared>);

/// A queue of at most `capacity` frames (at least 1).
pub(crate) fn outbox(capacity: usize) -> (OutboxSender, Outbox) {
    let shared = Arc::new(Shared {
        line: Mutex::new(Line::default()),
        capacity: capacity.max(1),
    });
    (OutboxSender(shared.clone()), Outbox(shared))
}

impl OutboxSender {
    /// Queues `frame` unless the writer is `capacity` frames behind or gone; never waits.
    pub(crate) fn try_send(&self, frame: PreparedMessage) -> Result<(), Refused> {
        let waiting = {
            let mut line = self.0.lock();
            if line.closed {
                return Err(Refused::Closed);
            }
            if line.frames.len() >= self.0.capacity {
                return Err(Refused::Full);
            }
            line.frames.push_back(frame);
            line.waiting.take()
        };
        if let Some(writer) = waiting {
            writer.wake();
        }
        Ok(())
    }
}

impl Outbox {
    /// The next frame, if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<PreparedMessage> {
        let mut line = self.0.lock();
        let frame = line.frames.pop_front();
        if line.frames.is_empty() && line.frames.capacity() > KEEP {
            line.frames = VecDeque::new();
        }
        frame
    }

    /// Waits for the next frame. The connection's session holds a sender itself, so for it
    /// the queue never ends.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<PreparedMessage> {
        let mut line = self.0.lock();
        if let Some(frame) = line.frames.pop_front() {
            return Poll::Ready(frame);
        }
        match &mut line.waiting {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next frame (see [`Outbox::poll_recv`]).
    pub(crate) async fn recv(&mut self) -> PreparedMessage {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut line = self.0.lock();
        line.closed = true;
        line.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_up_to_the_capacity() {
        let (tx, mut rx) = outbox(2);
        tx.try_send(PreparedMessage::text("a")).unwrap();
        tx.clone().try_send(PreparedMessage::text("b")).unwrap();
        assert_eq!(tx.try_send(PreparedMessage::text("c")), Err(Refused::Full));
        assert_eq!(rx.try_recv().unwrap().message().as_text(), Some("a"));
        tx.try_send(PreparedMessage::text("c")).unwrap();
        assert_eq!(rx.try_recv().unwrap().message().as_text(), Some("b"));
        assert_eq!(rx.try_recv().unwrap().message().as_text(), Some("c"));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_drained_outbox_gives_its_room_back() {
        let (tx, mut rx) = outbox(1000);
        for _ in 0..500 {
            tx.try_send(PreparedMessage::text("x")).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.0.lock().frames.capacity(), 0);
    }

    #[test]
    fn nothing_is_queued_for_a_writer_that_is_gone() {
        let (tx, rx) = outbox(8);
        drop(rx);
        assert_eq!(
            tx.try_send(PreparedMessage::text("late")),
            Err(Refused::Closed)
        );
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken() {
        let (tx, mut rx) = outbox(8);
        let writer = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(PreparedMessage::text("wake up")).unwrap();
        let frame = writer.await.unwrap();
        assert_eq!(frame.message().as_text(), Some("wake up"));
    }
}
