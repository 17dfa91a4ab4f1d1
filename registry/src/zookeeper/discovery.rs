//! ZooKeeper discovery: list the service node's children and each child's data, watch
//! the children and every child's data (one-shot watches, set again as they fire),
//! coalesce bursts of events, and after a lost session or a failed read reconnect with
//! backoff and list again; the last known list stays served meanwhile.

use super::ZkConfig;
use crate::{Backoff, RegistryError};
use rpcx_core::govern::MultiDiscovery;
use rpcx_core::registry::{Completer, Completion, completion};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use zookeeper_client::{Client, EventType, OneshotWatcher, SessionState, StateWatcher, WatchedEvent};

/// The servers of one service as ZooKeeper lists them (Go's `NewZookeeperDiscovery(
/// basePath, servicePath, ...)`): the children `network@host:port` of
/// `BasePath/<service>`, their data the metadata. Give it to an XClient behind an `Arc`;
/// dropping it stops its watches.
#[derive(Debug)]
pub struct ZkDiscovery {
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

impl ZkDiscovery {
    /// Connect, list `service` once, and keep the list current in the background. The
    /// completion fails if ZooKeeper cannot be reached and listed within the
    /// configuration's operation timeout (as Go's constructor fails); afterwards any
    /// outage is ridden out. A service node that does not exist yet lists as empty and
    /// is watched for.
    pub fn connect(config: ZkConfig, service: &str) -> Completion<ZkDiscovery> {
        if let Err(e) = config.validate() {
            return Completion::ready(Err(e));
        }
        if service.is_empty() || service.contains('/') {
            return Completion::ready(Err(RegistryError::Config(format!("{service:?} is not a service name"))));
        }
        let (tx, rx) = completion();
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let discovery = ZkDiscovery { shared: shared.clone(), _stop: stop_tx };
        let watcher = Watcher { dir: format!("{}/{service}", config.base_path()), config, shared };
        crate::exec::spawn(watcher.run(tx, discovery, stop_rx));
        rx
    }

    /// Whether the session is connected now (`false` while reconnecting; the last list
    /// is served).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// How many times the service was listed: 1 after [`connect`](Self::connect), one
    /// more for every reconnection.
    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::SeqCst)
    }
}

discovery_through!(ZkDiscovery, shared.list);

struct Watcher {
    config: ZkConfig,
    /// `BasePath/<service>`.
    dir: String,
    shared: Arc<Shared>,
}

/// Child names and their data.
type Servers = BTreeMap<String, String>;

/// A watch that fired.
enum Fired {
    /// The service node's children (or the service node itself) changed.
    Children(WatchedEvent),
    /// A child's data changed or it was deleted.
    Data(String, WatchedEvent),
}

/// One session's view: the client, the servers and the watches set on them.
struct View {
    client: Client,
    states: StateWatcher,
    servers: Servers,
    watches: JoinSet<Fired>,
    /// Children with a data watch set.
    watched: BTreeSet<String>,
}

/// Why a watch session ended.
enum End {
    Stop,
    Broken(RegistryError),
}

impl Watcher {
    async fn run(self, first: Completer<ZkDiscovery>, discovery: ZkDiscovery, mut stop: oneshot::Receiver<()>) {
        let mut view = match self.connect_and_list(None).await {
            Ok(v) => v,
            Err(e) => return first.complete(Err(e)),
        };
        first.complete(Ok(discovery));
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let end = self.watch(&mut view, &mut stop).await;
            self.shared.connected.store(false, Ordering::SeqCst);
            match end {
                End::Stop => return,
                End::Broken(e) => tracing::warn!(error = %e, dir = %self.dir, "ZooKeeper watch broken; listing again"),
            }
            // List again with backoff (on the same session while it lives); the old list
            // is served meanwhile.
            let mut client = Some(view.client.clone());
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                if client.as_ref().is_some_and(|c| c.state().is_terminated()) {
                    client = None;
                }
                match self.connect_and_list(client.clone()).await {
                    Ok(v) => {
                        view = v;
                        backoff.reset();
                        break;
                    }
                    Err(e) => tracing::debug!(error = %e, "ZooKeeper still unreachable"),
                }
            }
        }
    }

    /// Connect (unless given a live client), list the children and their data with
    /// watches on all of them, and publish the list.
    async fn connect_and_list(&self, client: Option<Client>) -> Result<View, RegistryError> {
        let client = match client {
            Some(c) => c,
            None => self.config.connect(false).await?,
        };
        let states = client.state_watcher();
        if client.state().is_terminated() {
            return Err(RegistryError::Connect {
                endpoints: self.config.cluster(),
                source: format!("session {}", client.state()).into(),
            });
        }
        let mut view =
            View { client, states, servers: Servers::new(), watches: JoinSet::new(), watched: BTreeSet::new() };
        let children = self.watch_children(&mut view).await?;
        for child in children {
            self.watch_data(&mut view, child).await?;
        }
        self.publish(&view.servers);
        self.shared.lists.fetch_add(1, Ordering::SeqCst);
        self.shared.connected.store(true, Ordering::SeqCst);
        tracing::debug!(dir = %self.dir, servers = view.servers.len(), "listed");
        Ok(view)
    }

    /// List the children with a watch; a missing service node lists as empty, with a
    /// watch for its creation.
    async fn watch_children(&self, view: &mut View) -> Result<Vec<String>, RegistryError> {
        let cfg = &self.config;
        loop {
            match cfg.op("list", view.client.list_and_watch_children(&self.dir)).await {
                Ok((children, w)) => {
                    spawn_watch(&mut view.watches, w, Fired::Children);
                    return Ok(children);
                }
                Err(RegistryError::Operation { source, .. }) if is_no_node(&source) => {
                    let (stat, w) = cfg.op("exists", view.client.check_and_watch_stat(&self.dir)).await?;
                    spawn_watch(&mut view.watches, w, Fired::Children);
                    if stat.is_none() {
                        return Ok(Vec::new());
                    }
                    // Created in between: list it.
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Read `child`'s data with a watch and record it; a child gone meanwhile is dropped.
    async fn watch_data(&self, view: &mut View, child: String) -> Result<(), RegistryError> {
        if child.is_empty() || child.contains('/') {
            return Ok(());
        }
        let path = format!("{}/{child}", self.dir);
        match self.config.op("get", view.client.get_and_watch_data(&path)).await {
            Ok((data, _, w)) => {
                let name = child.clone();
                spawn_watch(&mut view.watches, w, move |ev| Fired::Data(name, ev));
                view.watched.insert(child.clone());
                view.servers.insert(child, String::from_utf8_lossy(&data).into_owned());
                Ok(())
            }
            Err(RegistryError::Operation { source, .. }) if is_no_node(&source) => {
                view.servers.remove(&child);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Follow the watches until one read fails, the session ends, or discovery is
    /// dropped.
    async fn watch(&self, view: &mut View, stop: &mut oneshot::Receiver<()>) -> End {
        loop {
            let mut children_changed = false;
            let mut data_changed = BTreeSet::new();
            let first = tokio::select! {
                _ = &mut *stop => return End::Stop,
                Some(fired) = view.watches.join_next() => fired,
                state = view.states.changed() => {
                    match state {
                        SessionState::Disconnected => self.shared.connected.store(false, Ordering::SeqCst),
                        // Back on the same session: the watches were set again by the
                        // client, but events during the outage may be lost: list again.
                        SessionState::SyncConnected => {
                            return End::Broken(RegistryError::Connect {
                                endpoints: self.config.cluster(),
                                source: "reconnected".into(),
                            });
                        }
                        s if s.is_terminated() => {
                            return End::Broken(RegistryError::Connect {
                                endpoints: self.config.cluster(),
                                source: format!("session {s}").into(),
                            });
                        }
                        _ => {}
                    }
                    continue;
                }
            };
            let mut note = |fired: Result<Fired, tokio::task::JoinError>| -> Result<(), End> {
                match fired {
                    Ok(Fired::Children(ev)) if ev.event_type != EventType::Session => children_changed = true,
                    Ok(Fired::Data(child, ev)) if ev.event_type != EventType::Session => {
                        data_changed.insert(child);
                    }
                    Ok(Fired::Children(ev) | Fired::Data(_, ev)) => {
                        return Err(End::Broken(RegistryError::Connect {
                            endpoints: self.config.cluster(),
                            source: format!("session {}", ev.session_state).into(),
                        }));
                    }
                    Err(e) => {
                        return Err(End::Broken(RegistryError::Operation { op: "watch", source: Box::new(e) }));
                    }
                }
                Ok(())
            };
            if let Err(end) = note(first) {
                return end;
            }
            // Coalesce a burst: take whatever fires within the coalescing window (a
            // steady stream of events still publishes at least every ten windows).
            let latest = tokio::time::Instant::now() + self.config.coalesce * 10;
            while tokio::time::Instant::now() < latest {
                match tokio::time::timeout(self.config.coalesce, view.watches.join_next()).await {
                    Ok(Some(fired)) => {
                        if let Err(end) = note(fired) {
                            return end;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if let Err(e) = self.apply(view, children_changed, data_changed).await {
                self.publish(&view.servers);
                return End::Broken(e);
            }
            self.publish(&view.servers);
        }
    }

    /// Re-read what the fired watches point at, setting the watches again.
    async fn apply(
        &self,
        view: &mut View,
        children_changed: bool,
        data_changed: BTreeSet<String>,
    ) -> Result<(), RegistryError> {
        for child in &data_changed {
            view.watched.remove(child);
        }
        if children_changed {
            let children: BTreeSet<String> = self.watch_children(view).await?.into_iter().collect();
            view.servers.retain(|k, _| children.contains(k));
            for child in children {
                if !view.watched.contains(&child) && !data_changed.contains(&child) {
                    self.watch_data(view, child).await?;
                }
            }
        }
        for child in data_changed {
            self.watch_data(view, child).await?;
        }
        Ok(())
    }

    /// Publish `servers` if they differ from what clients see.
    fn publish(&self, servers: &Servers) {
        crate::publish::publish(&self.shared.list, servers, &self.dir);
    }
}

/// Wait for `w` in the set (aborted when the set is dropped: a new list replaces it).
fn spawn_watch(
    set: &mut JoinSet<Fired>,
    w: OneshotWatcher,
    fired: impl FnOnce(WatchedEvent) -> Fired + Send + 'static,
) {
    set.spawn(async move { fired(w.changed().await) });
}

fn is_no_node(source: &rpcx_core::registry::BoxError) -> bool {
    source.downcast_ref::<zookeeper_client::Error>() == Some(&zookeeper_client::Error::NoNode)
}
