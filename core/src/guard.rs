//! Panic guards for user callbacks.
//!
//! Every callback a user hands the library (handlers, auth, hooks, selectors, discovery
//! callbacks, plugins) runs under [`catch`] or [`CatchUnwind`]: a panic in one is
//! logged and turned into a refusal or an error for that one call, and never takes a
//! connection, a server or a client down.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Run `f`; a panic is logged (`what` names the callback) and gives `None`.
pub fn catch<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            tracing::warn!(callback = what, panic = %panic_text(&*payload), "a user callback panicked");
            None
        }
    }
}

/// The text of a panic's payload (`&str` or `String`), else "panic".
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// Makes and polls a boxed future, turning a panic in either into `Err(message)`: a
/// user callback may panic before its future exists (a closure that divides by a field
/// before `async`, a custom `Handler::call`).
pub enum CatchUnwind<T> {
    /// The future, being polled.
    Running(BoxFuture<T>),
    /// Making it panicked with this text (taken by the first poll).
    Panicked(Option<String>),
}

impl<T> CatchUnwind<T> {
    /// Make the future with `make`, catching a panic there.
    pub fn new(make: impl FnOnce() -> BoxFuture<T>) -> Self {
        match std::panic::catch_unwind(AssertUnwindSafe(make)) {
            Ok(fut) => CatchUnwind::Running(fut),
            Err(payload) => CatchUnwind::Panicked(Some(panic_text(&*payload))),
        }
    }
}

impl<T> Future for CatchUnwind<T> {
    type Output = Result<T, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = match self.get_mut() {
            CatchUnwind::Running(fut) => fut,
            CatchUnwind::Panicked(text) => return Poll::Ready(Err(text.take().unwrap_or_else(|| "panic".to_owned()))),
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_text(&*payload))),
        }
    }
}
