//! The Consul registrar: one task per registration that creates a `Behavior=delete`
//! session, writes the directory keys and acquires the nodes with it, renews it and
//! re-creates vanished nodes every update interval, starts over at once with a new
//! session when the old one is lost, reconnects with backoff, and deletes the nodes and
//! destroys the session on unregister.

use super::http::Api;
use super::{ConsulConfig, consul_key};
use crate::{Backoff, RegistryError, TaskRegistration};
use rpcx_core::registry::{
    Completer, Completion, Node, RefreshAction, Registered, Registrar, Registration, completion,
};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Registers servers in Consul (give it to `Server::registrar`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsulRegistrar {
    config: Arc<ConsulConfig>,
}

impl ConsulRegistrar {
    /// A registrar for `config`; the configuration is checked here (a session TTL under
    /// 10 s, which Consul refuses, is a [`RegistryError::Config`]).
    pub fn new(config: ConsulConfig) -> Result<Self, RegistryError> {
        config.validate()?;
        Ok(ConsulRegistrar { config: Arc::new(config) })
    }
}

impl Registrar for ConsulRegistrar {
    fn register(&self, registration: Registration) -> Completion<Box<dyn Registered>> {
        let (first_tx, first_rx) = completion();
        let (stop_tx, stop_rx) = oneshot::channel();
        let handle = TaskRegistration { address: registration.address().to_string(), stop: stop_tx };
        let base = self.config.kv_base();
        let keyed = |nodes: Vec<Node>| {
            nodes.into_iter().map(|n| Node { key: consul_key(&n.key).to_owned(), value: n.value }).collect()
        };
        let keeper = Keeper {
            name: format!("rpcx {}", registration.address()),
            dirs: keyed(registration.directories(base)),
            nodes: keyed(registration.nodes(base)),
            config: self.config.clone(),
            registration,
        };
        crate::exec::spawn(keeper.run(first_tx, handle, stop_rx));
        first_rx
    }
}

struct Keeper {
    config: Arc<ConsulConfig>,
    /// The session name (for operators listing sessions).
    name: String,
    dirs: Vec<Node>,
    nodes: Vec<Node>,
    /// What was registered (its refresh policy and rates).
    registration: Registration,
}

/// Why the task left its loop.
enum Exit {
    Unregister(Completer<()>),
    Abandoned,
}

impl Keeper {
    async fn run(
        self,
        first: Completer<Box<dyn Registered>>,
        handle: TaskRegistration,
        mut stop: oneshot::Receiver<Completer<()>>,
    ) {
        let api = Api::new(&self.config);
        let mut session = match self.establish(&api, None).await {
            Ok(s) => s,
            Err(e) => return first.complete(Err(e)),
        };
        tracing::info!(nodes = self.nodes.len(), session = %session, "registered in Consul");
        first.complete(Ok(Box::new(handle)));
        match self.keep(&api, &mut session, &mut stop).await {
            Exit::Unregister(done) => done.complete(self.unregister(&api, &session).await),
            // Dropped without unregistering: the session expires and Consul deletes the
            // nodes, as after a crash.
            Exit::Abandoned => tracing::debug!("registration dropped; its session will expire"),
        }
    }

    async fn keep(&self, api: &Api, session: &mut String, stop: &mut oneshot::Receiver<Completer<()>>) -> Exit {
        let cfg = &*self.config;
        let mut tick = tokio::time::interval(cfg.update_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        loop {
            tokio::select! {
                r = &mut *stop => return r.map_or(Exit::Abandoned, Exit::Unregister),
                _ = tick.tick() => {}
            }
            let Err(e) = self.refresh(api, session).await else { continue };
            tracing::warn!(error = %e, "Consul registration lost its connection");
            loop {
                tokio::select! {
                    r = &mut *stop => return r.map_or(Exit::Abandoned, Exit::Unregister),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                match self.establish(api, Some(session.as_str())).await {
                    Ok(s) => {
                        tracing::info!(session = %s, "Consul registration restored");
                        *session = s;
                        backoff.reset();
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "Consul still unreachable"),
                }
            }
        }
    }

    /// Make the registration whole: keep `old` if Consul still knows it (re-creating
    /// vanished nodes), else a new session and every key.
    async fn establish(&self, api: &Api, old: Option<&str>) -> Result<String, RegistryError> {
        if let Some(old) = old {
            if api.renew_session(old).await? {
                self.check_nodes(api, old).await?;
                return Ok(old.to_owned());
            }
        }
        self.new_session(api).await
    }

    async fn new_session(&self, api: &Api) -> Result<String, RegistryError> {
        let session = api.create_session(&self.name, self.config.session_ttl).await?;
        for dir in &self.dirs {
            api.put(&dir.key, dir.value.as_bytes(), None).await?;
        }
        for node in &self.nodes {
            self.acquire(api, &session, &node.key, node.value.as_bytes()).await?;
        }
        Ok(session)
    }

    /// Write `key` = `value` held by `session`. If another session holds the key (a
    /// previous process at this address whose session has not expired yet), write the
    /// value without it: the key goes with that session, and the next refresh writes
    /// it again with ours.
    async fn acquire(&self, api: &Api, session: &str, key: &str, value: &[u8]) -> Result<(), RegistryError> {
        if !api.put(key, value, Some(session)).await? {
            tracing::info!(key, "a Consul node is held by another session; writing its value only");
            api.put(key, value, None).await?;
        }
        Ok(())
    }

    /// The update tick: renew the session (a lost one is replaced at once, with every
    /// key), then re-create vanished nodes.
    async fn refresh(&self, api: &Api, session: &mut String) -> Result<(), RegistryError> {
        if api.renew_session(session).await? {
            self.check_nodes(api, session).await
        } else {
            tracing::warn!(session = %session, "Consul session lost; creating a new one and re-putting");
            *session = self.new_session(api).await?;
            Ok(())
        }
    }

    /// Re-create vanished nodes and write rates when asked (`Registration::refresh`); a
    /// present node otherwise keeps its value, and one not held by `session` is
    /// acquired with the value it has.
    async fn check_nodes(&self, api: &Api, session: &str) -> Result<(), RegistryError> {
        for node in &self.nodes {
            let Some(current) = api.get(&node.key).await? else {
                tracing::info!(key = %node.key, "re-creating a vanished Consul node");
                self.acquire(api, session, &node.key, node.value.as_bytes()).await?;
                continue;
            };
            let value = current.decoded().unwrap_or_default();
            let text = String::from_utf8_lossy(&value);
            let held = current.session.as_deref() == Some(session);
            match self.registration.refresh(&node.value, Some(&text), std::time::Instant::now()) {
                RefreshAction::Rewrite(v) => self.acquire(api, session, &node.key, v.as_bytes()).await?,
                RefreshAction::Recreate => self.acquire(api, session, &node.key, node.value.as_bytes()).await?,
                _ if held => {}
                _ => {
                    if !api.put(&node.key, &value, Some(session)).await? {
                        tracing::debug!(key = %node.key, "a Consul node is still held by another session");
                    }
                }
            }
        }
        Ok(())
    }

    /// Delete the nodes, then destroy the session.
    async fn unregister(&self, api: &Api, session: &str) -> Result<(), RegistryError> {
        for node in &self.nodes {
            api.delete(&node.key).await?;
        }
        api.destroy_session(session).await?;
        tracing::info!(nodes = self.nodes.len(), "unregistered from Consul");
        Ok(())
    }
}
