//! Where the `rpcx-smol` servers and clients of the suite run: a [`smol::Executor`]
//! driven by threads of its own (as each tokio server gets its own multi-thread tokio
//! runtime), handed to `rpcx-smol` through its [`Spawner`] option; callers block with
//! `smol::block_on` (async-io's, which also drives the reactor when it is idle).

use rpcx_smol::Spawner;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `None` if `fut` did not finish within `d` (an async-io timer: any executor).
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        async_io::Timer::after(d).await;
        None
    })
    .await
}

/// A [`smol::Executor`] run by `threads` threads until dropped.
pub struct SmolExecutor {
    ex: Arc<smol::Executor<'static>>,
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl SmolExecutor {
    /// Start an executor with `threads` threads named `name`.
    pub fn new(name: &str, threads: usize) -> Self {
        let ex = Arc::new(smol::Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads = (0..threads.max(1))
            .map(|i| {
                let ex = ex.clone();
                let stopped = stopped.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        let _ = smol::block_on(ex.run(stopped.recv()));
                    })
                    .expect("spawn a smol executor thread")
            })
            .collect();
        Self { ex, stop: Some(stop), threads }
    }

    /// A spawner for this executor. It holds the executor weakly (the tasks it spawns
    /// hold the spawner, and must not keep their executor alive); once the executor is
    /// gone, spawned tasks are dropped.
    pub fn spawner(&self) -> Spawner {
        let ex: Weak<smol::Executor<'static>> = Arc::downgrade(&self.ex);
        Spawner::new(move |task| {
            if let Some(ex) = ex.upgrade() {
                ex.spawn(task).detach();
            }
        })
    }
}

impl Drop for SmolExecutor {
    /// Stop the threads (waiting for each a little while; one stuck in a task is left
    /// behind) and drop the executor with whatever tasks are left.
    fn drop(&mut self) {
        drop(self.stop.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        for t in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
