//! Where background tasks run: a runtime-neutral spawner.

use rpcx_core::service::BoxFuture;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

type Task = BoxFuture<()>;

/// Runs this crate's background tasks: one driver per connection (client and server),
/// the server's accept loop, and each request whose handler has to wait.
///
/// The crate never names an executor in its code paths; every spawn goes through the
/// `Spawner` in [`ClientOptions::runtime`](crate::ClientOptions) or
/// [`ServerOptions::runtime`](crate::ServerOptions): the spawner *is* this crate's
/// [`Runtime`](rpcx_async::Runtime). The default is
/// [`Spawner::global`]: the `async-global-executor` thread pool, which is the very
/// executor `async_std::task::spawn` uses, and which also serves programs inside
/// `smol::block_on` (IO and timers come from `async-io`'s reactor, shared by smol and
/// async-std). To keep everything on a smol executor of your own, hand it in:
///
/// ```
/// use std::sync::Arc;
/// let ex = Arc::new(smol::Executor::new());
/// let spawner = rpcx_smol::Spawner::new({
///     let ex = ex.clone();
///     move |task| ex.spawn(task).detach()
/// });
/// # drop(spawner);
/// ```
///
/// Tasks are detached: they end on their own (a connection when it closes, the accept
/// loop on shutdown). A spawner whose executor stops running tasks stops those too.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(BoxFuture<()>) + Send + Sync>);

impl Spawner {
    /// A spawner calling `f` with each task to run. `f` must run it to completion (or
    /// until its executor shuts down) and must not block.
    pub fn new(f: impl Fn(BoxFuture<()>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The `async-global-executor` pool (async-std's executor; threads start on first
    /// use, sized by `ASYNC_GLOBAL_EXECUTOR_THREADS` or the CPU count).
    pub fn global() -> Self {
        Self::new(|task| async_global_executor::spawn(task).detach())
    }

    /// Run `fut` in the background.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(fut));
    }

    /// Run an already boxed task in the background (no second allocation).
    pub fn spawn_boxed(&self, task: Task) {
        (self.0)(task);
    }
}

impl Default for Spawner {
    fn default() -> Self {
        Self::global()
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}
