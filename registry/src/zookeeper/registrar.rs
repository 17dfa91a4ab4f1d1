//! The ZooKeeper registrar: one task and one session per registration. It creates the
//! persistent parents and an ephemeral node per service, re-creates vanished nodes every
//! update interval, starts a new session and re-creates the nodes at once when the
//! session expires, and deletes the nodes on unregister.

use super::ZkConfig;
use crate::{Backoff, RegistryError, TaskRegistration};
use rpcx_core::registry::{
    Completer, Completion, Node, RefreshAction, Registered, Registrar, Registration, completion,
};
use std::sync::Arc;
use tokio::sync::oneshot;
use zookeeper_client::{Acls, Client, CreateMode, SessionState, StateWatcher};

/// Registers servers in ZooKeeper (give it to `Server::registrar`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ZkRegistrar {
    config: Arc<ZkConfig>,
}

impl ZkRegistrar {
    /// A registrar for `config`; the configuration is checked here.
    pub fn new(config: ZkConfig) -> Result<Self, RegistryError> {
        config.validate()?;
        Ok(ZkRegistrar { config: Arc::new(config) })
    }
}

impl Registrar for ZkRegistrar {
    fn register(&self, registration: Registration) -> Completion<Box<dyn Registered>> {
        if registration.address().as_str().contains('/') {
            // A ZooKeeper node name cannot hold a `/` (unix@/path addresses).
            return Completion::ready(Err(RegistryError::Config(format!(
                "{} cannot be a ZooKeeper node name (it contains '/')",
                registration.address()
            ))));
        }
        let (first_tx, first_rx) = completion();
        let (stop_tx, stop_rx) = oneshot::channel();
        let handle = TaskRegistration { address: registration.address().to_string(), stop: stop_tx };
        let keeper = Keeper {
            dirs: registration.directories(self.config.base_path()),
            nodes: registration.nodes(self.config.base_path()),
            config: self.config.clone(),
            registration,
            old_sessions: Vec::new(),
        };
        crate::exec::spawn(keeper.run(first_tx, handle, stop_rx));
        first_rx
    }
}

struct Keeper {
    config: Arc<ZkConfig>,
    dirs: Vec<Node>,
    nodes: Vec<Node>,
    /// What was registered (its refresh policy and rates).
    registration: Registration,
    /// The ids of this registration's earlier (expired) sessions: a node one of them
    /// still holds is ours to replace.
    old_sessions: Vec<i64>,
}

/// A live session and its state changes.
struct Session {
    client: Client,
    states: StateWatcher,
}

/// Why the task left its loop.
enum Exit {
    Unregister(Completer<()>),
    Abandoned,
}

impl Keeper {
    async fn run(
        mut self,
        first: Completer<Box<dyn Registered>>,
        handle: TaskRegistration,
        mut stop: oneshot::Receiver<Completer<()>>,
    ) {
        let mut session = match self.establish().await {
            Ok(s) => s,
            Err(e) => return first.complete(Err(e)),
        };
        tracing::info!(nodes = self.nodes.len(), session = %session.client.session_id(), "registered in ZooKeeper");
        first.complete(Ok(Box::new(handle)));
        match self.keep(&mut session, &mut stop).await {
            Exit::Unregister(done) => done.complete(self.unregister(&session).await),
            // Dropped without unregistering: the (detached) session expires on its own,
            // and its ephemeral nodes with it, as after a crash.
            Exit::Abandoned => tracing::debug!("registration dropped; its session will expire"),
        }
    }

    /// Keep the registration alive until asked to stop.
    async fn keep(&mut self, session: &mut Session, stop: &mut oneshot::Receiver<Completer<()>>) -> Exit {
        let mut refresh = tokio::time::interval(self.config.update_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            let recheck = tokio::select! {
                r = &mut *stop => return r.map_or(Exit::Abandoned, Exit::Unregister),
                _ = refresh.tick() => true,
                state = session.states.changed() => match state {
                    // Back on the same session: its nodes are still there, but check.
                    SessionState::SyncConnected => true,
                    SessionState::Disconnected => {
                        tracing::warn!("ZooKeeper connection lost; the session is kept while it reconnects");
                        false
                    }
                    s if s.is_terminated() => {
                        tracing::warn!(state = %s, "ZooKeeper session ended; starting a new one");
                        if let Some(exit) = self.renew(session, stop).await {
                            return exit;
                        }
                        false
                    }
                    _ => false,
                },
            };
            if recheck {
                if let Err(e) = self.refresh(&session.client).await {
                    // The client reconnects by itself; a lost session shows as a state.
                    tracing::debug!(error = %e, "ZooKeeper refresh failed");
                }
            }
        }
    }

    /// A new session with backoff until the nodes are back, or until asked to stop.
    async fn renew(&mut self, session: &mut Session, stop: &mut oneshot::Receiver<Completer<()>>) -> Option<Exit> {
        self.old_sessions.push(session.client.session_id().0);
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            match self.establish().await {
                Ok(s) => {
                    tracing::info!(session = %s.client.session_id(), "ZooKeeper registration restored");
                    *session = s;
                    return None;
                }
                Err(e) => tracing::debug!(error = %e, "ZooKeeper still unreachable"),
            }
            tokio::select! {
                r = &mut *stop => return Some(r.map_or(Exit::Abandoned, Exit::Unregister)),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// A new session with every parent and node written.
    async fn establish(&self) -> Result<Session, RegistryError> {
        let client = self.config.connect(true).await?;
        let states = client.state_watcher();
        for dir in &self.dirs {
            self.ensure_dir(&client, dir).await?;
        }
        for node in &self.nodes {
            self.create(&client, node).await?;
        }
        Ok(Session { client, states })
    }

    /// A persistent parent with its data (and any missing ancestor, empty), as libkv's
    /// `Put(dir, value)` leaves it.
    async fn ensure_dir(&self, client: &Client, dir: &Node) -> Result<(), RegistryError> {
        let cfg = &*self.config;
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for (i, _) in dir.key.match_indices('/').skip(1) {
            match cfg.op("create", client.create(&dir.key[..i], &[], &persistent)).await {
                Ok(_) => {}
                Err(RegistryError::Operation { source, .. }) if is(&source, zookeeper_client::Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        match cfg.op("create", client.create(&dir.key, dir.value.as_bytes(), &persistent)).await {
            Ok(_) => Ok(()),
            Err(RegistryError::Operation { source, .. }) if is(&source, zookeeper_client::Error::NodeExists) => {
                let (data, _) = cfg.op("get", client.get_data(&dir.key)).await?;
                if data != dir.value.as_bytes() {
                    cfg.op("set", client.set_data(&dir.key, dir.value.as_bytes(), None)).await?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Create `node` ephemeral with its metadata. A node already there is left as it is,
    /// unless one of this registration's expired sessions holds it (then it is replaced
    /// now instead of vanishing later).
    async fn create(&self, client: &Client, node: &Node) -> Result<(), RegistryError> {
        let cfg = &*self.config;
        let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        for _ in 0..2 {
            match cfg.op("create", client.create(&node.key, node.value.as_bytes(), &ephemeral)).await {
                Ok(_) => return Ok(()),
                Err(RegistryError::Operation { source, .. }) if is(&source, zookeeper_client::Error::NodeExists) => {
                    let Some(stat) = cfg.op("exists", client.check_stat(&node.key)).await? else { continue };
                    if !self.old_sessions.contains(&stat.ephemeral_owner) {
                        return Ok(());
                    }
                    tracing::info!(node = %node.key, "replacing a node held by an expired session of ours");
                    match cfg.op("delete", client.delete(&node.key, Some(stat.version))).await {
                        Ok(()) => {}
                        Err(RegistryError::Operation { source, .. })
                            if is(&source, zookeeper_client::Error::NoNode)
                                || is(&source, zookeeper_client::Error::BadVersion) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(RegistryError::Operation { source, .. }) if is(&source, zookeeper_client::Error::NoNode) => {
                    // A parent vanished (deleted by hand): write them again.
                    for dir in &self.dirs {
                        self.ensure_dir(client, dir).await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The update tick: re-create vanished nodes, keep present ones or write rates into
    /// them when asked (`Registration::refresh`).
    async fn refresh(&self, client: &Client) -> Result<(), RegistryError> {
        for node in &self.nodes {
            let cfg = &*self.config;
            // The present data is read only when rates may rewrite it.
            let (current, version) = if self.registration.rates().is_some() {
                match cfg.op("get", client.get_data(&node.key)).await {
                    Ok((data, stat)) => (Some(String::from_utf8_lossy(&data).into_owned()), Some(stat.version)),
                    Err(RegistryError::Operation { source, .. }) if is(&source, zookeeper_client::Error::NoNode) => {
                        (None, None)
                    }
                    Err(e) => return Err(e),
                }
            } else {
                (cfg.op("exists", client.check_stat(&node.key)).await?.map(|_| String::new()), None)
            };
            match self.registration.refresh(&node.value, current.as_deref(), std::time::Instant::now()) {
                RefreshAction::Recreate => {
                    tracing::info!(node = %node.key, "re-creating a vanished ZooKeeper node");
                    self.create(client, node).await?;
                }
                RefreshAction::Rewrite(value) => {
                    // Only over the version read: an operator's concurrent edit wins.
                    match cfg.op("set", client.set_data(&node.key, value.as_bytes(), version)).await {
                        Ok(_) => {}
                        Err(RegistryError::Operation { source, .. })
                            if is(&source, zookeeper_client::Error::BadVersion)
                                || is(&source, zookeeper_client::Error::NoNode) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Delete the nodes (the parents stay, as Go leaves them).
    async fn unregister(&self, session: &Session) -> Result<(), RegistryError> {
        for node in &self.nodes {
            match self.config.op("delete", session.client.delete(&node.key, None)).await {
                Ok(()) => {}
                Err(RegistryError::Operation { source, .. }) if is(&source, zookeeper_client::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(nodes = self.nodes.len(), "unregistered from ZooKeeper");
        Ok(())
    }
}

/// Whether a boxed error is the zookeeper-client error `want`.
fn is(source: &rpcx_core::registry::BoxError, want: zookeeper_client::Error) -> bool {
    source.downcast_ref::<zookeeper_client::Error>() == Some(&want)
}
