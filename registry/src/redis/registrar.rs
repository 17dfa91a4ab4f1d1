//! The Redis registrar: one task per registration that writes the directory keys and
//! the nodes (expiring after twice the update interval), renews the nodes' expiry every
//! interval (re-creating vanished ones), reconnects with backoff, and deletes the nodes
//! on unregister.

use super::{RedisConfig, decode_value, encode_value, redis_key};
use crate::{Backoff, RegistryError, TaskRegistration};
use redis::aio::MultiplexedConnection;
use rpcx_core::registry::{
    Completer, Completion, Node, RefreshAction, Registered, Registrar, Registration, completion,
};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Registers servers in Redis (give it to `Server::registrar`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisRegistrar {
    config: Arc<RedisConfig>,
}

impl RedisRegistrar {
    /// A registrar for `config`; the configuration is checked here.
    pub fn new(config: RedisConfig) -> Result<Self, RegistryError> {
        config.validate()?;
        Ok(RedisRegistrar { config: Arc::new(config) })
    }
}

impl Registrar for RedisRegistrar {
    fn register(&self, registration: Registration) -> Completion<Box<dyn Registered>> {
        let (first_tx, first_rx) = completion();
        let (stop_tx, stop_rx) = oneshot::channel();
        let handle = TaskRegistration { address: registration.address().to_string(), stop: stop_tx };
        let keeper = Keeper {
            dirs: registration.directories(self.config.base_path()),
            nodes: registration.nodes(self.config.base_path()),
            config: self.config.clone(),
            registration,
        };
        crate::exec::spawn(keeper.run(first_tx, handle, stop_rx));
        first_rx
    }
}

struct Keeper {
    config: Arc<RedisConfig>,
    dirs: Vec<Node>,
    nodes: Vec<Node>,
    /// What was registered (its refresh policy and rates).
    registration: Registration,
}

impl Keeper {
    async fn run(
        self,
        first: Completer<Box<dyn Registered>>,
        handle: TaskRegistration,
        mut stop: oneshot::Receiver<Completer<()>>,
    ) {
        let mut con = match self.establish().await {
            Ok(c) => c,
            Err(e) => return first.complete(Err(e)),
        };
        tracing::info!(nodes = self.nodes.len(), "registered in Redis");
        first.complete(Ok(Box::new(handle)));
        let cfg = &*self.config;
        let mut tick = tokio::time::interval(cfg.update_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        loop {
            tokio::select! {
                r = &mut stop => {
                    match r {
                        Ok(done) => done.complete(self.unregister(&mut con).await),
                        // Dropped without unregistering: the nodes expire, as after a crash.
                        Err(_) => tracing::debug!("registration dropped; its nodes will expire"),
                    }
                    return;
                }
                _ = tick.tick() => {}
            }
            let Err(e) = self.refresh(&mut con).await else { continue };
            tracing::warn!(error = %e, "Redis registration lost its connection");
            // Reconnect with backoff; on success every vanished key is written again at once.
            loop {
                tokio::select! {
                    r = &mut stop => {
                        if let Ok(done) = r {
                            // Without a connection the deletes cannot succeed: report it.
                            done.complete(self.unregister(&mut con).await);
                        }
                        return;
                    }
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.establish().await {
                    Ok(c) => {
                        con = c;
                        backoff.reset();
                        tracing::info!("Redis registration restored");
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "Redis still unreachable"),
                }
            }
        }
    }

    /// Connect, write the directory keys, and write or renew every node.
    async fn establish(&self) -> Result<MultiplexedConnection, RegistryError> {
        let mut con = self.config.connect().await?;
        for dir in &self.dirs {
            let set = redis::cmd("SET").arg(redis_key(&dir.key)).arg(encode_value(&dir.key, &dir.value)).clone();
            self.config.op("set", set.query_async::<()>(&mut con)).await?;
        }
        self.refresh(&mut con).await?;
        Ok(con)
    }

    /// Renew each node's expiry, keeping its value (or writing rates when asked);
    /// re-create a vanished one (`Registration::refresh`).
    async fn refresh(&self, con: &mut MultiplexedConnection) -> Result<(), RegistryError> {
        let cfg = &*self.config;
        for node in &self.nodes {
            let key = redis_key(&node.key);
            let renew = redis::cmd("PEXPIRE").arg(&key).arg(cfg.expiry_ms()).clone();
            let present: i64 = cfg.op("pexpire", renew.query_async(con)).await?;
            // The present value is read only when rates may rewrite it.
            let current = match (present == 1, self.registration.rates().is_some()) {
                (false, _) => None,
                (true, false) => Some(String::new()),
                (true, true) => {
                    let get = redis::cmd("GET").arg(&key).clone();
                    let raw: Option<Vec<u8>> = cfg.op("get", get.query_async(con)).await?;
                    match raw.as_deref().and_then(decode_value) {
                        Some((_, value)) => Some(value),
                        // Expired between the two commands, or not libkv's form: leave it.
                        None => continue,
                    }
                }
            };
            let value = match self.registration.refresh(&node.value, current.as_deref(), std::time::Instant::now()) {
                RefreshAction::Recreate => {
                    tracing::debug!(key = %key, "writing a missing Redis node");
                    node.value.clone()
                }
                RefreshAction::Rewrite(value) => value,
                _ => continue,
            };
            let set =
                redis::cmd("SET").arg(&key).arg(encode_value(&node.key, &value)).arg("PX").arg(cfg.expiry_ms()).clone();
            cfg.op("set", set.query_async::<()>(con)).await?;
        }
        Ok(())
    }

    async fn unregister(&self, con: &mut MultiplexedConnection) -> Result<(), RegistryError> {
        for node in &self.nodes {
            let del = redis::cmd("DEL").arg(redis_key(&node.key)).clone();
            self.config.op("del", del.query_async::<()>(con)).await?;
        }
        tracing::info!(nodes = self.nodes.len(), "unregistered from Redis");
        Ok(())
    }
}
