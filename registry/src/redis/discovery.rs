//! Redis discovery: `SCAN` + `MGET` of the service's prefix, then keyspace notifications
//! (`PSUBSCRIBE __keyspace@*__:<prefix>*`, after Go's `CONFIG SET notify-keyspace-events
//! KEA`) trigger a new listing, coalesced; when the `CONFIG SET` is refused, polling.
//! Reconnects with backoff; the last known list is served meanwhile.

use super::{RedisConfig, decode_value, glob_prefix, redis_key};
use crate::{Backoff, RegistryError};
use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use rpcx_core::govern::MultiDiscovery;
use rpcx_core::registry::{Completer, Completion, completion, discovered_key, service_prefix};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Most keys one listing reads: a bound on what a registry can make us hold.
const MAX_KEYS: usize = 100_000;

/// The servers of one service as Redis lists them (Go's `rpcx-redis`
/// `NewRedisDiscovery(basePath, servicePath, ...)`). Give it to an XClient behind an
/// `Arc`; dropping it stops its watch.
#[derive(Debug)]
pub struct RedisDiscovery {
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Shared {
    list: MultiDiscovery,
    connected: AtomicBool,
    notifications: AtomicBool,
    lists: AtomicU64,
}

impl RedisDiscovery {
    /// Connect, list `service` once, and keep the list current in the background. Fails
    /// if Redis cannot be reached and listed within the operation timeout.
    pub fn connect(config: RedisConfig, service: &str) -> Completion<RedisDiscovery> {
        if let Err(e) = config.validate() {
            return Completion::ready(Err(e));
        }
        let (tx, rx) = completion();
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let discovery = RedisDiscovery { shared: shared.clone(), _stop: stop_tx };
        let prefix = service_prefix(config.base_path(), service);
        let watcher = Watcher { redis_prefix: redis_key(&prefix), prefix, config, shared };
        crate::exec::spawn(watcher.run(tx, discovery, stop_rx));
        rx
    }

    /// Whether Redis is reachable now (`false` while reconnecting).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Whether keyspace notifications drive the updates now (set once subscribed;
    /// `false` while connecting or when polling).
    pub fn uses_notifications(&self) -> bool {
        self.shared.notifications.load(Ordering::SeqCst)
    }

    /// How many listings succeeded so far.
    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::SeqCst)
    }
}

discovery_through!(RedisDiscovery, shared.list);

struct Watcher {
    config: RedisConfig,
    /// `base/service/`, as JSON keys spell it.
    prefix: String,
    /// The same in Redis keys (`/` + prefix).
    redis_prefix: String,
    shared: Arc<Shared>,
}

enum End {
    Stop,
    Broken(RegistryError),
}

impl Watcher {
    async fn run(self, first: Completer<RedisDiscovery>, discovery: RedisDiscovery, mut stop: oneshot::Receiver<()>) {
        let mut con = match self.connect_and_list().await {
            Ok(c) => c,
            Err(e) => return first.complete(Err(e)),
        };
        first.complete(Ok(discovery));
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            match self.watch(&mut con, &mut stop).await {
                End::Stop => return,
                End::Broken(e) => {
                    tracing::warn!(error = %e, prefix = %self.prefix, "Redis discovery broken; reconnecting")
                }
            }
            self.shared.connected.store(false, Ordering::SeqCst);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.connect_and_list().await {
                    Ok(c) => {
                        con = c;
                        backoff.reset();
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "Redis still unreachable"),
                }
            }
        }
    }

    async fn connect_and_list(&self) -> Result<MultiplexedConnection, RegistryError> {
        let mut con = self.config.connect().await?;
        self.list(&mut con).await?;
        Ok(con)
    }

    /// Notifications if Redis lets us enable them, else polling; both list again.
    async fn watch(&self, con: &mut MultiplexedConnection, stop: &mut oneshot::Receiver<()>) -> End {
        let cfg = &self.config;
        let enable = redis::cmd("CONFIG").arg("SET").arg("notify-keyspace-events").arg("KEA").clone();
        let notifications = match cfg.op("config set", enable.query_async::<()>(con)).await {
            Ok(()) => true,
            Err(RegistryError::Operation { source, .. }) => {
                tracing::info!(error = %source, "keyspace notifications unavailable; polling");
                false
            }
            Err(e) => return End::Broken(e),
        };
        if !notifications {
            self.shared.notifications.store(false, Ordering::SeqCst);
            return self.poll(con, stop).await;
        }
        let mut stream = match async {
            let mut pubsub = cfg.op("subscribe", cfg.client()?.get_async_pubsub()).await?;
            let pattern = format!("__keyspace@*__:{}", glob_prefix(&self.redis_prefix));
            cfg.op("psubscribe", pubsub.psubscribe(pattern)).await?;
            Ok::<_, RegistryError>(pubsub.into_on_message())
        }
        .await
        {
            Ok(s) => s,
            Err(e) => return End::Broken(e),
        };
        // A change between the listing and the subscription would be missed: list again.
        if let Err(e) = self.list(con).await {
            return End::Broken(e);
        }
        self.shared.notifications.store(true, Ordering::SeqCst);
        // A safety net against lost notifications, and the liveness check of `con`.
        let mut safety = tokio::time::interval(cfg.poll_interval * 5);
        safety.tick().await;
        loop {
            tokio::select! {
                _ = &mut *stop => return End::Stop,
                m = stream.next() => {
                    if m.is_none() {
                        return End::Broken(RegistryError::Operation { op: "subscribe", source: "subscription closed".into() });
                    }
                    // Coalesce a burst of notifications into one listing (a steady stream
                    // of them still lists at least every ten windows).
                    let latest = tokio::time::Instant::now() + cfg.coalesce * 10;
                    loop {
                        match tokio::time::timeout(cfg.coalesce, stream.next()).await {
                            Ok(Some(_)) if tokio::time::Instant::now() < latest => continue,
                            Ok(Some(_)) => break,
                            Ok(None) => {
                                return End::Broken(RegistryError::Operation {
                                    op: "subscribe",
                                    source: "subscription closed".into(),
                                });
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = safety.tick() => {}
            }
            if let Err(e) = self.list(con).await {
                return End::Broken(e);
            }
        }
    }

    async fn poll(&self, con: &mut MultiplexedConnection, stop: &mut oneshot::Receiver<()>) -> End {
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut *stop => return End::Stop,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.list(con).await {
                return End::Broken(e);
            }
        }
    }

    /// `SCAN` the prefix, `MGET` the keys, decode libkv's JSON, publish.
    async fn list(&self, con: &mut MultiplexedConnection) -> Result<(), RegistryError> {
        let cfg = &self.config;
        let pattern = glob_prefix(&self.redis_prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let scan = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(100).clone();
            let (next, batch): (u64, Vec<String>) = cfg.op("scan", scan.query_async(con)).await?;
            keys.extend(batch);
            if keys.len() > MAX_KEYS {
                return Err(RegistryError::Operation { op: "scan", source: "more than 100 000 keys".into() });
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut servers = BTreeMap::new();
        for chunk in keys.chunks(256) {
            let mget = redis::cmd("MGET").arg(chunk).clone();
            let values: Vec<Option<Vec<u8>>> = cfg.op("mget", mget.query_async(con)).await?;
            for raw in values.into_iter().flatten() {
                let Some((key, metadata)) = decode_value(&raw) else {
                    tracing::debug!("ignoring a Redis value that is not a libkv pair");
                    continue;
                };
                // As Go's discovery does: the server key is the JSON key without the prefix.
                if let Some(k) = discovered_key(&self.prefix, &key) {
                    servers.insert(k.to_owned(), metadata);
                }
            }
        }
        self.publish(&servers);
        self.shared.lists.fetch_add(1, Ordering::SeqCst);
        self.shared.connected.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn publish(&self, servers: &BTreeMap<String, String>) {
        crate::publish::publish(&self.shared.list, servers, &self.prefix);
    }
}
