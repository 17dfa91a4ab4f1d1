//! The memory every connection of a server shares: one [`MemoryBudget`].

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Default server-wide budget: 512 MiB.
pub const DEFAULT_SERVER_MEMORY: usize = 512 << 20;
/// Default number of decompressions a server runs at once.
pub const DEFAULT_MAX_INFLATIONS: usize = 4;
/// Default grace before a connection that holds queued output while the server is over
/// its budget is closed.
pub const DEFAULT_BUDGET_GRACE: Duration = Duration::from_secs(10);

/// Bytes held by every connection of a server, against one limit.
///
/// Each [`ServerConnection`](super::ServerConnection) charges what it holds, counted
/// as real memory: the buffered part of an unfinished frame (a frame over 64 KiB
/// reserves its whole length before its body is read), payloads being decompressed
/// (their output allocation), and responses and pushes queued for a peer (encoded
/// length plus the per-message bookkeeping). The policy, the same on every runtime:
///
/// * A frame over 64 KiB is read only once its length could be reserved; until then
///   its connection stops reading (and the frame timeout keeps running). A frame that
///   started can always finish, so connections never deadlock waiting for each other.
/// * A decompression runs only when one of [`max_inflations`](Self::max_inflations)
///   slots is free and each step of its output fits the budget.
/// * While the server is over its limit (or a connection's next frame does not fit), a
///   connection with output queued (a peer that does not read) stops reading requests,
///   and is closed
///   ([`LostReason::MemoryBudget`](super::LostReason::MemoryBudget)) once that has
///   lasted the [`grace`](Self::grace) period without its peer taking any bytes.
///
/// A limit below twice the frame limit is raised to that, so one maximum-size frame
/// can always be received.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    max_inflations: usize,
    grace: Duration,
    used: AtomicUsize,
    peak: AtomicUsize,
    inflations: AtomicUsize,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_SERVER_MEMORY, DEFAULT_MAX_INFLATIONS, DEFAULT_BUDGET_GRACE)
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes, `max_inflations` decompressions at once (at least 1),
    /// and `grace` for connections that do not read while the server is over it.
    pub fn new(limit: usize, max_inflations: usize, grace: Duration) -> Self {
        Self {
            limit,
            max_inflations: max_inflations.max(1),
            grace,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            inflations: AtomicUsize::new(0),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Decompressions allowed at once.
    pub fn max_inflations(&self) -> usize {
        self.max_inflations
    }

    /// How long a connection that does not read may hold output while the server is
    /// over its limit.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// The most bytes charged at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }

    /// Decompressions running now.
    pub fn inflations(&self) -> usize {
        self.inflations.load(Relaxed)
    }

    /// Whether more than `limit` bytes are charged.
    pub(crate) fn over(&self, limit: usize) -> bool {
        self.used() > limit
    }

    /// Charge `n` bytes if they fit under `limit`.
    pub(crate) fn try_add(&self, n: usize, limit: usize) -> bool {
        let mut cur = self.used.load(Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&v| v <= limit) else { return false };
            match self.used.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                Ok(_) => {
                    self.peak.fetch_max(next, Relaxed);
                    return true;
                }
                Err(v) => cur = v,
            }
        }
    }

    /// Charge `n` bytes whatever the limit (memory already held).
    pub(crate) fn add(&self, n: usize) {
        let next = self.used.fetch_add(n, Relaxed) + n;
        self.peak.fetch_max(next, Relaxed);
    }

    /// Give back `n` bytes.
    pub(crate) fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Relaxed);
    }

    /// Take a decompression slot, if one is free.
    pub(crate) fn try_start_inflation(&self) -> bool {
        let mut cur = self.inflations.load(Relaxed);
        while cur < self.max_inflations {
            match self.inflations.compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
        false
    }

    /// Give a decompression slot back.
    pub(crate) fn end_inflation(&self) {
        self.inflations.fetch_sub(1, Relaxed);
    }
}
