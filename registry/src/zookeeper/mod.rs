//! ZooKeeper, in Go's `rpcx-zookeeper` layout (libkv's `store/zookeeper`):
//!
//! * BasePath's leading `/` is dropped and the rest normalised as libkv does, so
//!   BasePath `/rpcx_test` (or `rpcx_test`) gives the node
//!   `/rpcx_test/Arith/tcp@127.0.0.1:8972`;
//! * the parents are persistent nodes: the base node's data is `rpcx_path`, a service
//!   node's data the service name (deeper ancestors of a multi-level BasePath are
//!   created empty, as libkv's `createFullPath` does);
//! * a server's node is **ephemeral** (Go's plugin writes it with a TTL of twice the
//!   update interval, which libkv turns into an ephemeral node), ACL `world:anyone`
//!   with every permission, and its data is the service's metadata string as given
//!   (`group=test&weight=10`).
//!
//! Checked against a real Go run in `interop/tests/zookeeper_go.rs`.
//!
//! Where we differ from Go, on purpose:
//!
//! * **Discovery watches every node's data, not only the children** (Go's client misses
//!   data changes, rpcx issue #820): an operator writing `state=inactive` into a node
//!   stops XClients from selecting it. Bursts of events are coalesced into one update;
//!   a broken session reconnects with backoff and lists again; the last known list is
//!   served while ZooKeeper is unreachable.
//! * **A new session re-creates the ephemeral nodes at once** when the old one expired
//!   (Go waits for its next update tick). A node still held by one of the registration's
//!   own expired sessions is replaced rather than waited out.
//! * A refresh tick re-creates a vanished node and leaves a present one as it is, so an
//!   operator's `state=inactive` survives it (Go re-encodes and rewrites the data on
//!   every tick).
//! * Dropping a registration without unregistering leaves its session to expire (the
//!   nodes go after the session timeout, as after a crash); unregistering deletes them.
//!
//! zookeeper-client runs on tokio here; everything runs on the caller's multi-threaded
//! tokio runtime or on the crate's private runtime thread (see the crate docs), and
//! answers through [`Completion`]s, so smol and rpcx-std use it alike.

mod discovery;
mod registrar;
#[cfg(feature = "test-support")]
pub mod testing;

pub use discovery::ZkDiscovery;
pub use registrar::ZkRegistrar;

use crate::RegistryError;
use std::future::Future;
use std::time::Duration;
use zookeeper_client::Client;

pub use rpcx_core::registry::Completion;

/// Where ZooKeeper is and how registrations behave. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    servers: Vec<String>,
    base_path: String,
    session_timeout: Duration,
    update_interval: Duration,
    op_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    coalesce: Duration,
}

impl ZkConfig {
    /// ZooKeeper at `servers` (`host:port` each), nodes under `base_path` (Go's
    /// `BasePath`, normalised as libkv does: `/rpcx_test`, `rpcx_test` and `rpcx_test/`
    /// are all the node `/rpcx_test`). Defaults: session timeout 10 s (libkv's), update
    /// interval 10 s, 5 s per operation, reconnect backoff 100 ms doubling to 5 s, 20 ms
    /// event coalescing.
    pub fn new<S: AsRef<str>>(servers: impl IntoIterator<Item = S>, base_path: &str) -> Self {
        let segments: Vec<&str> = base_path.split('/').filter(|s| !s.is_empty()).collect();
        ZkConfig {
            servers: servers.into_iter().map(|s| s.as_ref().trim().to_owned()).collect(),
            base_path: if segments.is_empty() { String::new() } else { format!("/{}", segments.join("/")) },
            session_timeout: Duration::from_secs(10),
            update_interval: Duration::from_secs(10),
            op_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            coalesce: Duration::from_millis(20),
        }
    }

    /// The session timeout asked of ZooKeeper: how long a crashed server's ephemeral
    /// nodes survive it (the server clamps it to its own bounds, by default 2 to 20
    /// ticks).
    #[must_use]
    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.session_timeout = d;
        self
    }

    /// How often a registration re-reads its nodes and re-creates vanished ones.
    #[must_use]
    pub fn update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }

    /// The bound on every single registry operation (connect, create, get, list).
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

    /// The normalised base path (`/rpcx_test`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The servers.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: &str| Err(RegistryError::Config(m.to_owned()));
        if self.servers.is_empty() || self.servers.iter().any(|s| s.is_empty() || s.contains(['/', ','])) {
            return bad("ZooKeeper needs at least one server, each host:port");
        }
        if self.base_path.is_empty() {
            return bad("the base path must name a node (e.g. /rpcx_test)");
        }
        if self.session_timeout < Duration::from_millis(100) {
            return bad("the session timeout must be at least 100 ms");
        }
        if self.update_interval.is_zero() || self.op_timeout.is_zero() || self.backoff_min.is_zero() {
            return bad("the update interval, operation timeout and backoff must be positive");
        }
        Ok(())
    }

    /// The connect string, `host1:port1,host2:port2`.
    fn cluster(&self) -> String {
        self.servers.join(",")
    }

    /// A new session (bounded by the operation timeout; every server tried once).
    async fn connect(&self, detached: bool) -> Result<Client, RegistryError> {
        let mut connector = Client::connector().with_session_timeout(self.session_timeout).with_fail_eagerly();
        if detached {
            connector = connector.with_detached();
        }
        let cluster = self.cluster();
        match tokio::time::timeout(self.op_timeout, connector.connect(&cluster)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(RegistryError::Connect { endpoints: cluster, source: Box::new(e) }),
            Err(_) => Err(RegistryError::Timeout { op: "connect", after: self.op_timeout }),
        }
    }

    /// `fut` bounded by the operation timeout, its error typed.
    async fn op<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, zookeeper_client::Error>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.typed(op, e)),
            Err(_) => Err(RegistryError::Timeout { op, after: self.op_timeout }),
        }
    }

    /// A zookeeper-client error as ours: a lost connection or session is `Connect`,
    /// anything else the operation's failure.
    fn typed(&self, op: &'static str, e: zookeeper_client::Error) -> RegistryError {
        use zookeeper_client::Error as E;
        match e {
            E::ConnectionLoss | E::NoHosts | E::SessionExpired | E::ClientClosed | E::Timeout => {
                RegistryError::Connect { endpoints: self.cluster(), source: Box::new(e) }
            }
            e => RegistryError::Operation { op, source: Box::new(e) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_is_normalised_as_libkv_does() {
        for b in ["/rpcx_test", "rpcx_test", "rpcx_test/", "//rpcx_test//"] {
            assert_eq!(ZkConfig::new(["127.0.0.1:2181"], b).base_path(), "/rpcx_test", "{b}");
        }
        assert_eq!(ZkConfig::new(["h:1"], "a//b/").base_path(), "/a/b");
        assert!(matches!(ZkConfig::new(["h:1"], "/").validate(), Err(RegistryError::Config(_))));
        assert!(matches!(ZkConfig::new(Vec::<String>::new(), "/x").validate(), Err(RegistryError::Config(_))));
        assert!(matches!(ZkConfig::new(["h:1/chroot"], "/x").validate(), Err(RegistryError::Config(_))));
        assert!(ZkConfig::new(["h:1", "h:2"], "/x").validate().is_ok());
        assert_eq!(ZkConfig::new(["h:1", "h:2"], "/x").cluster(), "h:1,h:2");
    }
}
