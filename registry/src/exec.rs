//! Where tokio-only client libraries (etcd-client, redis) run: on the caller's tokio
//! runtime when it is a multi-threaded one with at least two workers, else on one
//! private current-thread runtime on a thread of its own, started on first use and
//! shared by every registrar and discovery of the process. Callers on smol, on rpcx-std
//! threads, or on a tokio runtime that one blocking wait could stall (current-thread, or
//! a single worker) land on the private one.

use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::{Handle, RuntimeFlavor};

/// Run `task` in the background on a tokio runtime (see the module docs).
pub(crate) fn spawn<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread && h.metrics().num_workers() >= 2 => {
            h.spawn(task);
        }
        _ => match private() {
            Some(h) => {
                h.spawn(task);
            }
            // No runtime could be started: the task is dropped, and with it the
            // completer it holds, so its caller sees `RegistryError::Stopped`.
            None => drop(task),
        },
    }
}

fn private() -> Option<&'static Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the registry's tokio runtime");
                    return None;
                }
            };
            let handle = rt.handle().clone();
            let started = std::thread::Builder::new()
                .name("rpcx-registry".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()));
            match started {
                Ok(_) => Some(handle),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the registry's runtime thread");
                    None
                }
            }
        })
        .as_ref()
}
