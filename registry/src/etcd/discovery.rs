//! etcd discovery: list the service's prefix, watch from the listed revision, apply and
//! coalesce events, reconnect with backoff and list again after any break; the last
//! known list stays served meanwhile.

use super::EtcdConfig;
use crate::{Backoff, RegistryError};
use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchResponse};
use rpcx_core::govern::MultiDiscovery;
use rpcx_core::registry::{Completer, Completion, completion, discovered_key, service_prefix};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::oneshot;

/// The servers of one service as etcd lists them (Go's `NewEtcdV3Discovery(basePath,
/// servicePath, ...)`): keys `network@host:port` under `BasePath/<service>/`, values the
/// metadata. Give it to an XClient behind an `Arc`; dropping it stops its watch.
#[derive(Debug)]
pub struct EtcdDiscovery {
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Shared {
    list: MultiDiscovery,
    connected: AtomicBool,
    /// Successful lists (the first, then one per reconnection).
    lists: AtomicU64,
}

impl EtcdDiscovery {
    /// Connect, list `service` once, and keep the list current in the background. The
    /// completion fails if the registry cannot be reached and listed within the
    /// configuration's operation timeout (as Go's constructor fails); afterwards any
    /// outage is ridden out.
    pub fn connect(config: EtcdConfig, service: &str) -> Completion<EtcdDiscovery> {
        if let Err(e) = config.validate() {
            return Completion::ready(Err(e));
        }
        let (tx, rx) = completion();
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let discovery = EtcdDiscovery { shared: shared.clone(), _stop: stop_tx };
        let watcher = Watcher { prefix: service_prefix(config.base_path(), service), config, shared };
        crate::exec::spawn(watcher.run(tx, discovery, stop_rx));
        rx
    }

    /// Whether the watch is up now (`false` while reconnecting; the last list is served).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// How many times the prefix was listed: 1 after [`connect`](Self::connect), one more
    /// for every reconnection.
    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::SeqCst)
    }
}

discovery_through!(EtcdDiscovery, shared.list);

struct Watcher {
    config: EtcdConfig,
    prefix: String,
    shared: Arc<Shared>,
}

/// Discovery keys and metadata, as listed and updated by events.
type Servers = BTreeMap<String, String>;

/// Why a watch session ended.
enum End {
    Stop,
    Broken(RegistryError),
}

impl Watcher {
    async fn run(self, first: Completer<EtcdDiscovery>, discovery: EtcdDiscovery, mut stop: oneshot::Receiver<()>) {
        let (mut client, mut servers, revision) = match self.list(None).await {
            Ok(v) => v,
            Err(e) => return first.complete(Err(e)),
        };
        first.complete(Ok(discovery));
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let mut revision = revision;
        loop {
            let end = self.watch(&mut client, &mut servers, revision, &mut stop).await;
            self.shared.connected.store(false, Ordering::SeqCst);
            match end {
                End::Stop => return,
                End::Broken(e) => tracing::warn!(error = %e, prefix = %self.prefix, "etcd watch broken; reconnecting"),
            }
            // Reconnect with backoff and list again; the old list is served meanwhile.
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.list(None).await {
                    Ok((c, s, rev)) => {
                        client = c;
                        servers = s;
                        revision = rev;
                        backoff.reset();
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "etcd still unreachable"),
                }
            }
        }
    }

    /// Connect (unless given a client), list the prefix and publish it. Returns the
    /// revision the list was read at.
    async fn list(&self, client: Option<Client>) -> Result<(Client, Servers, i64), RegistryError> {
        let mut client = match client {
            Some(c) => c,
            None => self.config.connect().await?,
        };
        let resp =
            self.config.op("list", client.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut servers = Servers::new();
        for kv in resp.kvs() {
            self.apply_put(&mut servers, kv.key(), kv.value());
        }
        self.publish(&servers);
        self.shared.lists.fetch_add(1, Ordering::SeqCst);
        self.shared.connected.store(true, Ordering::SeqCst);
        tracing::debug!(prefix = %self.prefix, revision, servers = servers.len(), "listed");
        Ok((client, servers, revision))
    }

    /// Watch from `revision + 1` until the watch breaks or discovery is dropped.
    async fn watch(
        &self,
        client: &mut Client,
        servers: &mut Servers,
        revision: i64,
        stop: &mut oneshot::Receiver<()>,
    ) -> End {
        let opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = match self.config.op("watch", client.watch(self.prefix.as_str(), Some(opts))).await {
            Ok(s) => s,
            Err(e) => return End::Broken(e),
        };
        loop {
            let msg = tokio::select! {
                _ = &mut *stop => return End::Stop,
                m = stream.message() => m,
            };
            let mut changed = match self.handle(msg, servers) {
                Ok(changed) => changed,
                Err(e) => return End::Broken(e),
            };
            // Coalesce a burst: take whatever follows within the coalescing window (a
            // steady stream of events still publishes at least every ten windows).
            let latest = tokio::time::Instant::now() + self.config.coalesce * 10;
            while tokio::time::Instant::now() < latest {
                match tokio::time::timeout(self.config.coalesce, stream.message()).await {
                    Err(_) => break,
                    Ok(msg) => match self.handle(msg, servers) {
                        Ok(c) => changed |= c,
                        Err(e) => {
                            if changed {
                                self.publish(servers);
                            }
                            return End::Broken(e);
                        }
                    },
                }
            }
            if changed {
                self.publish(servers);
            }
        }
    }

    /// Apply one watch message; `Ok(true)` if it carried events.
    fn handle(
        &self,
        msg: Result<Option<WatchResponse>, etcd_client::Error>,
        servers: &mut Servers,
    ) -> Result<bool, RegistryError> {
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(RegistryError::Operation { op: "watch", source: "watch stream closed".into() });
            }
            Err(e) => return Err(RegistryError::Operation { op: "watch", source: Box::new(e) }),
        };
        if resp.canceled() {
            let why =
                format!("watch canceled (compact revision {}): {}", resp.compact_revision(), resp.cancel_reason());
            return Err(RegistryError::Operation { op: "watch", source: why.into() });
        }
        let mut any = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            any = true;
            match ev.event_type() {
                EventType::Put => self.apply_put(servers, kv.key(), kv.value()),
                EventType::Delete => {
                    if let Some(k) = self.discovery_key(kv.key()) {
                        servers.remove(k);
                    }
                }
            }
        }
        Ok(any)
    }

    fn discovery_key<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        let key = std::str::from_utf8(key).ok()?;
        discovered_key(&self.prefix, key)
    }

    fn apply_put(&self, servers: &mut Servers, key: &[u8], value: &[u8]) {
        match self.discovery_key(key) {
            Some(k) => {
                servers.insert(k.to_owned(), String::from_utf8_lossy(value).into_owned());
            }
            None => tracing::debug!(key = %String::from_utf8_lossy(key), "ignoring a key that is not a node"),
        }
    }

    /// Publish `servers` if they differ from what clients see.
    fn publish(&self, servers: &Servers) {
        crate::publish::publish(&self.shared.list, servers, &self.prefix);
    }
}
