//! Consul discovery: list the service's prefix, then blocking queries from the returned
//! index, coalescing a burst of changes into one update; after any break, reconnect
//! with backoff and list again, serving the last known list meanwhile.

use super::http::Api;
use super::{ConsulConfig, KvEntry, consul_key};
use crate::{Backoff, RegistryError};
use rpcx_core::govern::MultiDiscovery;
use rpcx_core::registry::{Completer, Completion, completion, discovered_key, service_prefix};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Most keys one listing may hold: a bound on what a registry can make us keep.
const MAX_KEYS: usize = 100_000;

/// The servers of one service as Consul lists them (Go's `rpcx-consul`
/// `NewConsulDiscovery(basePath, servicePath, ...)`): keys `network@host:port` under
/// `BasePath/<service>/`, values the metadata. Give it to an XClient behind an `Arc`;
/// dropping it stops its watch.
#[derive(Debug)]
pub struct ConsulDiscovery {
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Shared {
    list: MultiDiscovery,
    connected: AtomicBool,
    /// Successful full lists (the first, then one per reconnection).
    lists: AtomicU64,
    /// Answered blocking queries.
    queries: AtomicU64,
}

impl ConsulDiscovery {
    /// Connect, list `service` once, and keep the list current in the background. The
    /// completion fails if Consul cannot be reached and listed within the operation
    /// timeout (as Go's constructor fails); afterwards any outage is ridden out.
    pub fn connect(config: ConsulConfig, service: &str) -> Completion<ConsulDiscovery> {
        if let Err(e) = config.validate() {
            return Completion::ready(Err(e));
        }
        let (tx, rx) = completion();
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let discovery = ConsulDiscovery { shared: shared.clone(), _stop: stop_tx };
        let prefix = service_prefix(config.kv_base(), service);
        let watcher = Watcher { api: Api::new(&config), prefix: consul_key(&prefix).to_owned(), config, shared };
        crate::exec::spawn(watcher.run(tx, discovery, stop_rx));
        rx
    }

    /// Whether Consul answered the last query (`false` while reconnecting; the last list
    /// is served).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// How many full lists succeeded: 1 after [`connect`](Self::connect), one more for
    /// every reconnection.
    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::SeqCst)
    }

    /// How many blocking queries Consul answered (changed or not).
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::SeqCst)
    }
}

discovery_through!(ConsulDiscovery, shared.list);

struct Watcher {
    api: Api,
    config: ConsulConfig,
    /// `base/service/` as Consul keys spell it.
    prefix: String,
    shared: Arc<Shared>,
}

type Servers = BTreeMap<String, String>;

impl Watcher {
    async fn run(self, first: Completer<ConsulDiscovery>, discovery: ConsulDiscovery, mut stop: oneshot::Receiver<()>) {
        let mut index = match self.list().await {
            Ok(i) => i,
            Err(e) => return first.complete(Err(e)),
        };
        first.complete(Ok(discovery));
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let e = tokio::select! {
                _ = &mut stop => return,
                e = self.watch(index) => e,
            };
            self.shared.connected.store(false, Ordering::SeqCst);
            tracing::warn!(error = %e, prefix = %self.prefix, "Consul watch broken; reconnecting");
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.list().await {
                    Ok(i) => {
                        index = i;
                        backoff.reset();
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "Consul still unreachable"),
                }
            }
        }
    }

    /// One non-blocking list, published; the index to block from.
    async fn list(&self) -> Result<u64, RegistryError> {
        let (entries, index) = self.api.list(&self.prefix, 0, self.config.wait).await?;
        self.publish(&self.servers(&entries)?);
        self.shared.lists.fetch_add(1, Ordering::SeqCst);
        self.shared.connected.store(true, Ordering::SeqCst);
        Ok(index.max(1))
    }

    /// Blocking queries until one fails.
    async fn watch(&self, mut index: u64) -> RegistryError {
        loop {
            let asked = tokio::time::Instant::now();
            let (entries, next) = match self.query(index, self.config.wait).await {
                Ok(r) => r,
                Err(e) => return e,
            };
            if next == index {
                // The wait passed without a change. An agent answering at once without
                // one (not what Consul does) is not queried in a tight loop.
                if asked.elapsed() < self.config.wait / 4 {
                    tokio::time::sleep(self.config.backoff_min).await;
                }
                continue;
            }
            let mut servers = match self.servers(&entries) {
                Ok(s) => s,
                Err(e) => return e,
            };
            index = next;
            // Coalesce a burst: short blocking queries while changes keep coming (at most
            // ten windows).
            for _ in 0..10 {
                match self.query(index, self.config.coalesce).await {
                    Ok((entries, next)) if next != index => {
                        index = next;
                        match self.servers(&entries) {
                            Ok(s) => servers = s,
                            Err(e) => return e,
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        self.publish(&servers);
                        return e;
                    }
                }
            }
            self.publish(&servers);
        }
    }

    /// One blocking query from `index`. An index that went backwards (Consul's data was
    /// rebuilt) is taken as is and the next query blocks from it, as Consul's docs advise
    /// resetting; an index of 0 is taken as 1.
    async fn query(&self, index: u64, wait: std::time::Duration) -> Result<(Vec<KvEntry>, u64), RegistryError> {
        let (entries, next) = self.api.list(&self.prefix, index, wait).await?;
        self.shared.queries.fetch_add(1, Ordering::SeqCst);
        self.shared.connected.store(true, Ordering::SeqCst);
        if next < index {
            tracing::info!(prefix = %self.prefix, index, next, "Consul's index went backwards; resetting");
        }
        Ok((entries, next.max(1)))
    }

    fn servers(&self, entries: &[KvEntry]) -> Result<Servers, RegistryError> {
        if entries.len() > MAX_KEYS {
            return Err(RegistryError::Operation { op: "list", source: "more than 100 000 keys".into() });
        }
        let mut servers = Servers::new();
        for e in entries {
            let Some(k) = discovered_key(&self.prefix, &e.key) else {
                tracing::debug!(key = %e.key, "ignoring a key that is not a node");
                continue;
            };
            let Some(value) = e.decoded() else {
                tracing::debug!(key = %e.key, "ignoring a value that is not base64");
                continue;
            };
            servers.insert(k.to_owned(), String::from_utf8_lossy(&value).into_owned());
        }
        Ok(servers)
    }

    /// Publish `servers` if they differ from what clients see.
    fn publish(&self, servers: &Servers) {
        crate::publish::publish(&self.shared.list, servers, &self.prefix);
    }
}
