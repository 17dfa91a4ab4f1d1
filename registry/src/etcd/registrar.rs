//! The etcd registrar: one task per registration that grants a lease, puts every key on
//! it, keeps it alive, refreshes the nodes every update interval, recovers from a lost
//! lease or a lost registry, and deletes the nodes on unregister.

use super::EtcdConfig;
use crate::{Backoff, RegistryError, TaskRegistration};
use etcd_client::{Client, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use rpcx_core::registry::{
    Completer, Completion, Node, RefreshAction, Registered, Registrar, Registration, completion,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Registers servers in etcd (give it to `Server::registrar`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct EtcdRegistrar {
    config: Arc<EtcdConfig>,
}

impl EtcdRegistrar {
    /// A registrar for `config`; the configuration is checked here.
    pub fn new(config: EtcdConfig) -> Result<Self, RegistryError> {
        config.validate()?;
        Ok(EtcdRegistrar { config: Arc::new(config) })
    }
}

impl Registrar for EtcdRegistrar {
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
    config: Arc<EtcdConfig>,
    dirs: Vec<Node>,
    nodes: Vec<Node>,
    /// What was registered (its refresh policy and rates).
    registration: Registration,
}

/// A connection with a live lease and its keep-alive stream.
struct Session {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
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
        let mut session = match self.establish(None).await {
            Ok(s) => s,
            Err(e) => return first.complete(Err(e)),
        };
        tracing::info!(nodes = self.nodes.len(), lease = session.lease, "registered in etcd");
        first.complete(Ok(Box::new(handle)));
        let exit = self.keep(&mut session, &mut stop).await;
        match exit {
            Exit::Unregister(done) => done.complete(self.unregister(&mut session).await),
            // Dropped without unregistering: leave the nodes to their lease, as a crash.
            Exit::Abandoned => tracing::debug!("registration dropped; its lease will expire"),
        }
    }

    /// Keep the registration alive until asked to stop.
    async fn keep(&self, session: &mut Session, stop: &mut oneshot::Receiver<Completer<()>>) -> Exit {
        let cfg = &*self.config;
        let keepalive_every = (cfg.lease_ttl / 3).max(Duration::from_millis(300));
        let mut keepalive = tokio::time::interval(keepalive_every);
        let mut refresh = tokio::time::interval(cfg.update_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        refresh.tick().await;
        let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        loop {
            let step = tokio::select! {
                r = &mut *stop => return r.map_or(Exit::Abandoned, Exit::Unregister),
                _ = keepalive.tick() => self.keep_alive(session).await,
                _ = refresh.tick() => self.refresh(session).await,
            };
            match step {
                Ok(true) => {}
                Ok(false) => {
                    // The lease is gone (expired during an outage, or the registry lost
                    // its data): a new lease and every key at once.
                    tracing::warn!(lease = session.lease, "etcd lease lost; granting a new one and re-putting");
                    if let Err(e) = self.replace_lease(session).await {
                        tracing::warn!(error = %e, "re-registering failed");
                        if let Some(exit) = self.recover(session, stop, &mut backoff).await {
                            return exit;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "etcd registration lost its connection");
                    if let Some(exit) = self.recover(session, stop, &mut backoff).await {
                        return exit;
                    }
                }
            }
        }
    }

    /// Reconnect with backoff until the registration is back (the old lease kept if it
    /// is still alive, else a new one), or until asked to stop.
    async fn recover(
        &self,
        session: &mut Session,
        stop: &mut oneshot::Receiver<Completer<()>>,
        backoff: &mut Backoff,
    ) -> Option<Exit> {
        loop {
            tokio::select! {
                r = &mut *stop => return Some(r.map_or(Exit::Abandoned, Exit::Unregister)),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
            match self.establish(Some(session.lease)).await {
                Ok(s) => {
                    tracing::info!(lease = s.lease, "etcd registration restored");
                    *session = s;
                    backoff.reset();
                    return None;
                }
                Err(e) => tracing::debug!(error = %e, "etcd still unreachable"),
            }
        }
    }

    /// Connect and make the registration whole: keep `old` if it is still alive (and
    /// re-create missing nodes), else grant a new lease and put every key on it.
    async fn establish(&self, old: Option<i64>) -> Result<Session, RegistryError> {
        let cfg = &*self.config;
        let mut client = cfg.connect().await?;
        if let Some(lease) = old {
            // The lease survives a registry restart that kept its data: keep it.
            if let Some((keeper, stream)) = self.open_keep_alive(&mut client, lease).await? {
                let mut s = Session { client, lease, keeper, stream };
                self.refresh(&mut s).await?;
                return Ok(s);
            }
        }
        let (lease, keeper, stream) = self.new_lease(&mut client).await?;
        let mut s = Session { client, lease, keeper, stream };
        self.put_all(&mut s).await?;
        Ok(s)
    }

    /// Start keeping `lease` alive; `None` if the registry no longer knows it.
    async fn open_keep_alive(
        &self,
        client: &mut Client,
        lease: i64,
    ) -> Result<Option<(LeaseKeeper, LeaseKeepAliveStream)>, RegistryError> {
        let cfg = &*self.config;
        match tokio::time::timeout(cfg.op_timeout, client.lease_keep_alive(lease)).await {
            Ok(Ok(pair)) => Ok(Some(pair)),
            // etcd-client's answer to a keep-alive with TTL 0.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("lease not found") => Ok(None),
            Ok(Err(e)) => Err(cfg.typed("keep-alive", e)),
            Err(_) => Err(RegistryError::Timeout { op: "keep-alive", after: cfg.op_timeout }),
        }
    }

    async fn new_lease(&self, client: &mut Client) -> Result<(i64, LeaseKeeper, LeaseKeepAliveStream), RegistryError> {
        let cfg = &*self.config;
        let lease = cfg.op("lease grant", client.lease_grant(cfg.ttl_secs(), None)).await?.id();
        match self.open_keep_alive(client, lease).await? {
            Some((keeper, stream)) => Ok((lease, keeper, stream)),
            None => Err(RegistryError::Operation { op: "keep-alive", source: "a new lease vanished at once".into() }),
        }
    }

    async fn replace_lease(&self, session: &mut Session) -> Result<(), RegistryError> {
        let (lease, keeper, stream) = self.new_lease(&mut session.client).await?;
        session.lease = lease;
        session.keeper = keeper;
        session.stream = stream;
        self.put_all(session).await
    }

    async fn put_all(&self, s: &mut Session) -> Result<(), RegistryError> {
        for node in self.dirs.iter().chain(&self.nodes) {
            self.put(s, node).await?;
        }
        Ok(())
    }

    async fn put(&self, s: &mut Session, node: &Node) -> Result<(), RegistryError> {
        let opts = PutOptions::new().with_lease(s.lease);
        self.config.op("put", s.client.put(node.key.as_str(), node.value.as_str(), Some(opts))).await?;
        Ok(())
    }

    /// One keep-alive round trip: `Ok(false)` if the lease is gone.
    async fn keep_alive(&self, s: &mut Session) -> Result<bool, RegistryError> {
        let cfg = &*self.config;
        cfg.op("keep-alive", s.keeper.keep_alive()).await?;
        match cfg.op("keep-alive", s.stream.message()).await? {
            Some(r) => Ok(r.ttl() > 0),
            None => Err(RegistryError::Operation { op: "keep-alive", source: "keep-alive stream closed".into() }),
        }
    }

    /// The update tick: re-create vanished nodes, write rates when asked
    /// (`Registration::refresh`); `Ok(true)` always
    /// when the registry answered (the lease is checked by the keep-alive).
    async fn refresh(&self, s: &mut Session) -> Result<bool, RegistryError> {
        for node in &self.nodes {
            let got = self.config.op("get", s.client.get(node.key.as_str(), Some(GetOptions::new()))).await?;
            let current = got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            match self.registration.refresh(&node.value, current.as_deref(), std::time::Instant::now()) {
                RefreshAction::Recreate => {
                    tracing::info!(key = %node.key, "re-creating a vanished etcd node");
                    self.put(s, node).await?;
                }
                RefreshAction::Rewrite(value) => self.put(s, &Node { key: node.key.clone(), value }).await?,
                _ => {}
            }
        }
        Ok(true)
    }

    /// Delete the nodes, then revoke the lease (which removes the directory keys this
    /// registration wrote last).
    async fn unregister(&self, s: &mut Session) -> Result<(), RegistryError> {
        let cfg = &*self.config;
        for node in &self.nodes {
            cfg.op("delete", s.client.delete(node.key.as_str(), None)).await?;
        }
        cfg.op("lease revoke", s.client.lease_revoke(s.lease)).await?;
        tracing::info!(nodes = self.nodes.len(), "unregistered from etcd");
        Ok(())
    }
}
