//! A bounded queue that allocates on demand: `async-channel`'s unbounded channel (which
//! grows in small blocks) with the bound kept by a counter. A bounded `async-channel`
//! allocates every slot up front, which for a push queue of 1024 messages costs over
//! 100 KiB per idle connection.

use futures_lite::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Why [`Sender::try_send`] failed; the value comes back.
pub(crate) enum TrySendError<T> {
    /// `cap` values are queued.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// A queue of at most `cap` values.
pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = async_channel::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    (Sender { tx, queued: queued.clone(), cap: cap.max(1) }, Receiver { rx: Box::pin(rx), queued })
}

pub(crate) struct Sender<T> {
    tx: async_channel::Sender<T>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl<T> Sender<T> {
    /// Queue `v` unless the queue is full or closed; never waits.
    pub(crate) fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(v));
        }
        self.tx.try_send(v).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Closed(e.into_inner())
        })
    }
}

pub(crate) struct Receiver<T> {
    rx: Pin<Box<async_channel::Receiver<T>>>,
    queued: Arc<AtomicUsize>,
}

impl<T> Receiver<T> {
    fn took(&self, v: T) -> T {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        v
    }

    /// The next value without waiting.
    pub(crate) fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok().map(|v| self.took(v))
    }

    /// The next value; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&self) -> Option<T> {
        let v = self.rx.recv().await.ok()?;
        Some(self.took(v))
    }

    /// Poll for the next value (`Ready(None)`: closed and empty).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.rx.as_mut().poll_next(cx) {
            Poll::Ready(Some(v)) => Poll::Ready(Some(self.took(v))),
            other => other,
        }
    }
}
