//! Service registries for rpcx servers and XClients, wire-compatible with Go's
//! plugins: a server registers through a [`Registrar`] given to any runtime's
//! `Server::registrar`, and an XClient finds servers through a
//! [`Discovery`](rpcx_core::govern::Discovery).
//!
//! One crate, one cargo feature per backend (`etcd`, `redis`, `zookeeper`, `consul` and
//! `dns` and `mdns`, all on by default, and `cache`, Go's cache file in front of any discovery;
//! `test-support` adds harnesses that start the real engines, and for Consul, which
//! cannot be installed here, an in-repo stand-in of its HTTP API): the backends share
//! the key layout, the life cycle and the discovery model of `rpcx_core::registry` and
//! `rpcx_core::govern`, and an application compiles in only the client libraries it uses.
//!
//! # etcd v3
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use rpcx_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistrar};
//! use rpcx_tokio::core::service::{Context, Router, Service};
//! use std::sync::Arc;
//!
//! let config = EtcdConfig::new(["http://127.0.0.1:2379"], "/rpcx_test");
//! let router = Router::new().service(
//!     Service::new("Arith")
//!         .metadata("weight=10&group=a")
//!         .method("Mul", |_c: Context, (a, b): (i64, i64)| async move { Ok(a * b) }),
//! );
//! // Publishes `/rpcx_test/Arith/tcp@10.0.0.5:8972` with value `weight=10&group=a`.
//! let server = rpcx_tokio::Server::new(router)
//!     .registrar(EtcdRegistrar::new(config.clone())?)
//!     .advertise_address("10.0.0.5")
//!     .bind("tcp@0.0.0.0:8972")
//!     .await?;
//!
//! let discovery = EtcdDiscovery::connect(config, "Arith").await?;
//! let xc = rpcx_tokio::XClient::new("Arith", Arc::new(discovery), Default::default());
//! let c: i64 = xc.call("Mul", &(6, 7)).await?;
//! server.shutdown(std::time::Duration::from_secs(5)).await; // unregisters first
//! # let _ = c; Ok(()) }
//! ```

/// `impl Discovery for $ty` by delegating every method to the `MultiDiscovery` at
/// `self.$($field).+`: each backend keeps its list in one, so filtering, versions and
/// change callbacks are the core's.
#[cfg_attr(
    not(any(
        feature = "etcd",
        feature = "redis",
        feature = "zookeeper",
        feature = "consul",
        feature = "mdns",
        feature = "dns"
    )),
    allow(unused_macros)
)]
macro_rules! discovery_through {
    ($ty:ty, $($field:ident).+) => {
        impl rpcx_core::govern::Discovery for $ty {
            fn snapshot(&self) -> rpcx_core::govern::Snapshot {
                self.$($field).+.snapshot()
            }

            fn version(&self) -> u64 {
                self.$($field).+.version()
            }

            fn subscribe(&self, callback: rpcx_core::govern::ChangeCallback) -> Option<rpcx_core::govern::SubscriptionId> {
                self.$($field).+.subscribe(callback)
            }

            fn unsubscribe(&self, id: rpcx_core::govern::SubscriptionId) {
                self.$($field).+.unsubscribe(id)
            }
        }
    };
}

#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "consul")]
pub mod consul;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(any(feature = "etcd", feature = "redis", feature = "zookeeper", feature = "consul"))]
mod exec;
#[cfg(feature = "mdns")]
pub mod mdns;
#[cfg(any(feature = "etcd", feature = "redis", feature = "zookeeper", feature = "consul"))]
mod publish;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

pub use rpcx_core::registry::{Completion, Registered, Registrar, RegistryError};

use std::time::Duration;

#[cfg(any(feature = "etcd", feature = "redis", feature = "zookeeper", feature = "consul"))]
/// A live registration of any backend: unregistering sends the request to the
/// backend's task, which deletes the nodes and completes it. If the task is gone, the
/// completer is dropped with the message and the caller sees `Stopped`.
#[derive(Debug)]
pub(crate) struct TaskRegistration {
    pub(crate) address: String,
    pub(crate) stop: tokio::sync::oneshot::Sender<rpcx_core::registry::Completer<()>>,
}

#[cfg(any(feature = "etcd", feature = "redis", feature = "zookeeper", feature = "consul"))]
impl Registered for TaskRegistration {
    fn unregister(self: Box<Self>) -> Completion<()> {
        let (tx, rx) = rpcx_core::registry::completion();
        let _ = self.stop.send(tx);
        tracing::debug!(address = %self.address, "unregister requested");
        rx
    }
}

/// Exponential backoff between reconnection attempts: doubles from `min` to `max`,
/// reset after a success.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "etcd", feature = "redis", feature = "zookeeper", feature = "consul")), allow(dead_code))]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

#[cfg_attr(not(any(feature = "etcd", feature = "redis", feature = "zookeeper", feature = "consul")), allow(dead_code))]
impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), next: min }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
