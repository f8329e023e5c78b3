//! The hub's shutdown signal as a session waits for it: beside its work, polled again on every
//! wake of its task, so once per message on a busy connection.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Poll, Waker};

use tokio::sync::watch;

/// Completes when the hub starts shutting down (or the hub is gone).
///
/// `watch::Receiver::wait_for` locks the channel's waiter list on every poll, and a busy
/// session polls this once per message. Once registered with this task's waker, this future
/// looks at the channel's
/// version only (one atomic load) and polls the real wait only when the value changed or a
/// different waker polls it. Nothing is missed: the registered waker is woken by the send, and
/// a send changes the version before it wakes anyone.
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // A second receiver that never marks anything seen: it tells whether anything was sent
    // since this wait began.
    let probe = shutdown.clone();
    let mut wait = pin!(shutdown.wait_for(|stopping| *stopping));
    let mut registered: Option<Waker> = None;
    poll_fn(|cx| {
        if let Some(waker) = &registered {
            let sent = probe.has_changed().unwrap_or(true);
            if !sent && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        match wait.as_mut().poll(cx) {
            // Stopping, or the sender is gone: either way the session ends.
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => {
                registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use super::stopping;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wakes.
    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn polled_again_and_again_it_still_sees_the_shutdown() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(stopping(&mut rx));
        for _ in 0..3 {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        tx.send(true).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the send wakes the task");
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_change_that_is_not_a_shutdown_keeps_it_waiting() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(stopping(&mut rx));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        tx.send(false).unwrap();
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        tx.send(true).unwrap();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_is_registered() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let (_, first) = counting();
        let (second, waker) = counting();
        let mut wait = pin!(stopping(&mut rx));
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&first))
            .is_pending());
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        tx.send(true).unwrap();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the task polling now is woken"
        );
    }

    #[test]
    fn a_hub_that_is_gone_ends_the_wait() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let (_, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(stopping(&mut rx));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drop(tx);
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
