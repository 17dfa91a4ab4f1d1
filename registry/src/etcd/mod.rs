//! etcd v3, in Go's `rpcx-etcd` layout: nodes `BasePath/<service>/<network@host:port>`
//! whose value is the service's metadata string, all on one lease per registration
//! (the directory keys `BasePath` = `rpcx_path` and `BasePath/<service>` = the name too,
//! as Go writes them for rpcx-ui).
//!
//! Where we differ from Go, on purpose:
//!
//! * **A lost lease is re-granted and every key re-put at once** (Go keeps the nodes
//!   gone until the next update tick, forever with an update interval of 0): the
//!   keep-alive runs every third of the TTL, and a keep-alive answered with TTL 0
//!   (the lease expired or the registry lost its data) or a reconnect that finds the
//!   lease gone starts a new lease at once.
//! * **Discovery lists, then watches from the listed revision** (no gap, no re-list per
//!   event as Go does), applies the events to its list, coalesces a burst of events into
//!   one update, and on a broken watch or a compacted revision reconnects with backoff
//!   and lists again. The last known list is served while the registry is unreachable.
//! * A refresh tick re-creates a vanished node and leaves a present one as it is, so an
//!   operator's `state=inactive` survives it (Go rewrites the value only when metrics are
//!   configured).
//!
//! etcd-client is tokio-only; everything here runs on the caller's multi-threaded tokio
//! runtime or on the crate's private runtime thread (see the crate docs), and answers
//! through [`Completion`]s, so smol and rpcx-std use it alike.

mod discovery;
mod registrar;
#[cfg(feature = "test-support")]
pub mod testing;

pub use discovery::EtcdDiscovery;
pub use registrar::EtcdRegistrar;

use crate::RegistryError;
use etcd_client::{Client, ConnectOptions};
use std::future::Future;
use std::time::Duration;

pub use rpcx_core::registry::Completion;

/// Where the registry is and how registrations behave. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    base_path: String,
    lease_ttl: Duration,
    update_interval: Duration,
    op_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    coalesce: Duration,
}

impl EtcdConfig {
    /// etcd at `endpoints` (`http://127.0.0.1:2379`, or `host:port`), keys under
    /// `base_path` (Go's `BasePath`, e.g. `/rpcx_test`; used as given, a trailing `/`
    /// dropped). Defaults: lease TTL 30 s (Go's `defaultTTL`), update interval 10 s, 5 s
    /// per operation, reconnect backoff 100 ms doubling to 5 s, 20 ms event coalescing.
    pub fn new<S: AsRef<str>>(endpoints: impl IntoIterator<Item = S>, base_path: &str) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect(),
            base_path: base_path.trim_end_matches('/').to_owned(),
            lease_ttl: Duration::from_secs(30),
            update_interval: Duration::from_secs(10),
            op_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            coalesce: Duration::from_millis(20),
        }
    }

    /// The lease TTL: how long a crashed server's nodes survive it (whole seconds,
    /// at least 1; etcd itself may raise very small TTLs to its minimum).
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How often a registration re-reads its nodes and re-creates vanished ones.
    #[must_use]
    pub fn update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }

    /// The bound on every single registry operation (connect, put, get, watch start).
    #[must_use]
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Reconnection backoff: from `min`, doubling, up to `max`.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// How long discovery waits for more events after one before publishing the list.
    #[must_use]
    pub fn coalesce(mut self, d: Duration) -> Self {
        self.coalesce = d;
        self
    }

    /// The base path, as used in keys.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: &str| Err(RegistryError::Config(m.to_owned()));
        if self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return bad("etcd needs at least one non-empty endpoint");
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return bad("the lease TTL must be at least 1 s");
        }
        if self.update_interval.is_zero() || self.op_timeout.is_zero() || self.backoff_min.is_zero() {
            return bad("the update interval, operation timeout and backoff must be positive");
        }
        Ok(())
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_secs()).unwrap_or(i64::MAX).max(1)
    }

    fn describe_endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    async fn connect(&self) -> Result<Client, RegistryError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(self.op_timeout)
            // Detect a registry that vanished without closing the connection.
            .with_keep_alive(Duration::from_secs(2), self.op_timeout)
            .with_keep_alive_while_idle(true);
        let connect = Client::connect(self.endpoints.clone(), Some(opts));
        match tokio::time::timeout(self.op_timeout, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(RegistryError::Connect { endpoints: self.describe_endpoints(), source: Box::new(e) }),
            Err(_) => Err(RegistryError::Timeout { op: "connect", after: self.op_timeout }),
        }
    }

    /// `fut` bounded by the operation timeout, its error typed.
    async fn op<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.typed(op, e)),
            Err(_) => Err(RegistryError::Timeout { op, after: self.op_timeout }),
        }
    }
}

/// An etcd-client error as ours: the registry being unreachable (a transport error, a
/// gRPC `UNAVAILABLE`, which is what a lazily connected channel reports) is `Connect`,
/// anything else the operation's failure.
impl EtcdConfig {
    fn typed(&self, op: &'static str, e: etcd_client::Error) -> RegistryError {
        /// gRPC's status code 14.
        const UNAVAILABLE: i32 = 14;
        let unreachable = match &e {
            etcd_client::Error::TransportError(_) => true,
            etcd_client::Error::GRpcStatus(s) => s.code() as i32 == UNAVAILABLE,
            _ => false,
        };
        if unreachable {
            RegistryError::Connect { endpoints: self.describe_endpoints(), source: Box::new(e) }
        } else {
            RegistryError::Operation { op, source: Box::new(e) }
        }
    }
}
