//! Service registration, written once for every runtime's server: what a server
//! publishes (its advertised address and each service's metadata), the registry key
//! layout Go's plugins use, the [`Registrar`] hook a registry backend implements, and the
//! life cycle the servers follow.
//!
//! # Life cycle (every runtime's server does exactly this)
//!
//! 1. `bind` binds the listener and starts accepting, then calls [`begin`]: with no
//!    registrar configured nothing happens; otherwise the advertised address is worked
//!    out ([`advertised_key`]: a server bound to `0.0.0.0` / `[::]` must be told what to
//!    publish) and [`Registrar::register`] is started. `bind` waits for its
//!    [`Completion`]; if the first registration fails the server is closed and `bind`
//!    returns the error (as Go's `Serve` does when the plugin cannot start).
//! 2. While the server runs, the backend keeps its nodes alive (lease or TTL) and every
//!    update interval re-reads them, re-creating a node that vanished with its original
//!    metadata ([`Registration::refresh`]); a value that is present is left as it is, so
//!    an operator's `state=inactive` flip survives refreshes. With
//!    [`RegistrySettings::publish_rates`] (Go's `Metrics` on its register plugins) the
//!    tick also writes `calls` and `connections`, the server's mean rates per second
//!    since it started formatted `%.2f`, into the present value, keeping every other key
//!    (so the flip still survives) and re-encoding it as Go's `url.Values.Encode` does.
//! 3. `shutdown` and `close` call [`Registered::unregister`] and wait for it **before**
//!    the server stops accepting and drains its connections (Go's `Shutdown` calls
//!    `UnregisterAll` first), so clients stop picking the server while it still answers.
//!    Dropping a [`Registered`] without unregistering stops the refreshes only: the nodes
//!    expire with their lease or TTL, as after a crash.

use crate::addr::ServerAddr;
use crate::govern::ServerKey;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// A boxed error from a registry client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a registration, an unregistration or a discovery failed. Grouped by who is at
/// fault: the local configuration ([`Advertise`](Self::Advertise),
/// [`Config`](Self::Config)), the registry being unreachable or slow
/// ([`Connect`](Self::Connect), [`Timeout`](Self::Timeout)), the registry refusing an
/// operation ([`Operation`](Self::Operation)), or the backend having stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The address to publish could not be worked out.
    #[error(transparent)]
    Advertise(#[from] AdvertiseError),
    /// The registry configuration is unusable (no endpoints, a zero TTL, ...).
    #[error("registry configuration: {0}")]
    Config(String),
    /// A server `register` hook refused a service.
    #[error("a register hook refused: {0}")]
    Refused(String),
    /// The registry could not be reached.
    #[error("cannot connect to the registry at {endpoints}: {source}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The client library's error.
        source: BoxError,
    },
    /// An operation was refused or failed.
    #[error("registry {op} failed: {source}")]
    Operation {
        /// What was attempted (`put`, `grant`, `list`, ...).
        op: &'static str,
        /// The client library's error.
        source: BoxError,
    },
    /// An operation did not finish in time.
    #[error("registry {op} timed out after {after:?}")]
    Timeout {
        /// What was attempted.
        op: &'static str,
        /// The bound that passed.
        after: std::time::Duration,
    },
    /// The backend's task or thread ended before answering.
    #[error("the registry backend stopped")]
    Stopped,
}

impl From<RegistryError> for std::io::Error {
    fn from(e: RegistryError) -> Self {
        let kind = match &e {
            RegistryError::Advertise(_) | RegistryError::Config(_) => std::io::ErrorKind::InvalidInput,
            RegistryError::Timeout { .. } => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Why a server's address cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertiseError {
    /// The server listens on every interface (`0.0.0.0`, `[::]`): clients cannot dial
    /// that, so the address to publish must be given (`advertise_address`).
    #[error(
        "the server is bound to the unspecified address {bound}; set advertise_address(\"tcp@<host>:<port>\") \
         (or just the host) to say which address to publish"
    )]
    Unspecified {
        /// The bound address.
        bound: String,
    },
    /// The address given to advertise is not `network@host:port` (or a bare host) with a
    /// dialable host.
    #[error("cannot advertise {given:?}: {reason}")]
    Invalid {
        /// What was given.
        given: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The key a server is published under: `advertise` if given (`tcp@10.0.0.5:8972`, or
/// a bare host such as `10.0.0.5` / `[fd00::5]` / `node1.example` combined with the bound
/// port), else the bound address itself, which must then not be unspecified.
pub fn advertised_key(bound: &str, advertise: Option<&str>) -> Result<ServerKey, AdvertiseError> {
    let Some(given) = advertise else {
        let unspecified = match bound.parse::<ServerAddr>() {
            Ok(ServerAddr::Tcp(a)) => host_of(&a).is_some_and(is_unspecified),
            _ => false,
        };
        if unspecified {
            return Err(AdvertiseError::Unspecified { bound: bound.to_owned() });
        }
        return Ok(ServerKey::new(bound));
    };
    let invalid = |reason| AdvertiseError::Invalid { given: given.to_owned(), reason };
    let (network, rest) = match given.split_once('@') {
        Some((n, r)) => (Some(n), r),
        None => (None, given),
    };
    if rest.is_empty() {
        return Err(invalid("empty address"));
    }
    if network.is_some_and(|n| !matches!(n, "tcp" | "tcp4" | "tcp6")) {
        // Other networks (unix, memu, quic, ...) are published as given.
        return Ok(ServerKey::new(given));
    }
    let network = network.unwrap_or("tcp");
    let full = if host_port(rest).is_some() {
        rest.to_owned()
    } else {
        // A bare host: take the bound port.
        let port = bound
            .parse::<ServerAddr>()
            .ok()
            .and_then(|a| match a {
                ServerAddr::Tcp(a) => host_port(&a).map(|(_, p)| p.to_owned()),
                _ => None,
            })
            .ok_or_else(|| invalid("a bare host needs a TCP server to take the port from"))?;
        let host = if rest.contains(':') && !rest.starts_with('[') {
            rest.parse::<std::net::Ipv6Addr>().map_err(|_| invalid("expected host:port or a bare host"))?;
            format!("[{rest}]")
        } else {
            rest.to_owned()
        };
        format!("{host}:{port}")
    };
    let (host, port) = host_port(&full).ok_or_else(|| invalid("expected host:port"))?;
    if host.is_empty() {
        return Err(invalid("empty host"));
    }
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(invalid("the port must be 1-65535"));
    }
    if is_unspecified(host) {
        return Err(invalid("an unspecified address (0.0.0.0, [::]) cannot be dialed"));
    }
    Ok(ServerKey::new(&format!("{network}@{full}")))
}

/// `host:port` split at the last colon; an IPv6 host must be bracketed.
fn host_port(s: &str) -> Option<(&str, &str)> {
    let (host, port) = s.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None;
    }
    Some((host, port))
}

fn host_of(addr: &str) -> Option<&str> {
    host_port(addr).map(|(h, _)| h)
}

fn is_unspecified(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.is_empty() || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// One service a server publishes, with the metadata given at registration (Go's
/// `Register(name, rcvr, "weight=10&group=a")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The service path.
    pub name: String,
    /// The metadata URL query string, possibly empty.
    pub metadata: String,
}

/// Everything a server asks a registry to publish: its advertised key and services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    address: ServerKey,
    services: Vec<ServiceEntry>,
    rates: Option<Rates>,
}

/// The server's call and connection counts since it started, for the `calls` and
/// `connections` rates Go's register plugins publish (go-metrics meters' mean rates).
#[derive(Clone)]
pub struct Rates {
    counts: Arc<dyn Fn() -> (u64, u64) + Send + Sync>,
    started: std::time::Instant,
}

impl Rates {
    /// Rates over `counts` (calls handled, connections accepted), from `started`.
    pub fn new(counts: impl Fn() -> (u64, u64) + Send + Sync + 'static, started: std::time::Instant) -> Self {
        Rates { counts: Arc::new(counts), started }
    }

    /// Calls and connections per second at `now`, each averaged since the start.
    pub fn at(&self, now: std::time::Instant) -> (f64, f64) {
        let secs = now.saturating_duration_since(self.started).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        let (calls, conns) = (self.counts)();
        (calls as f64 / secs, conns as f64 / secs)
    }
}

impl fmt::Debug for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rates").field("started", &self.started).finish_non_exhaustive()
    }
}

impl PartialEq for Rates {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.counts, &other.counts) && self.started == other.started
    }
}

impl Eq for Rates {}

/// `current` metadata with `calls` and `connections` set to the rates, as Go's plugins
/// write it each tick: `url.ParseQuery`, `Set` both keys (`%.2f`), `Values.Encode()`
/// (keys sorted, every value escaped). `None` for a value Go cannot parse (Go then
/// leaves the node as it is).
pub fn metadata_with_rates(current: &str, calls: f64, connections: f64) -> Option<String> {
    let (mut pairs, err) = crate::query::parse(current);
    if err.is_some() {
        return None;
    }
    pairs.retain(|(k, _)| k != b"calls" && k != b"connections");
    let calls = format!("{calls:.2}");
    let connections = format!("{connections:.2}");
    let mut all: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    all.push((b"calls", calls.as_bytes()));
    all.push((b"connections", connections.as_bytes()));
    Some(crate::query::encode_sorted(all))
}

/// One registry entry: a key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The full key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// The value Go's plugins write under the base path.
pub const BASE_PATH_VALUE: &str = "rpcx_path";

impl Registration {
    /// Publish `services` (sorted by name) under `address`.
    pub fn new(address: ServerKey, services: impl IntoIterator<Item = ServiceEntry>) -> Self {
        let mut services: Vec<_> = services.into_iter().collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        services.dedup_by(|a, b| a.name == b.name);
        Registration { address, services, rates: None }
    }

    /// Publish `rates` on every refresh (see the module docs).
    #[must_use]
    pub fn with_rates(mut self, rates: Rates) -> Self {
        self.rates = Some(rates);
        self
    }

    /// The rates published on refreshes, if any.
    pub fn rates(&self) -> Option<&Rates> {
        self.rates.as_ref()
    }

    /// What a refresh tick does with the node it registered with `registered` as value,
    /// given the registry's `current` value (`None`: the node vanished), at `now`:
    /// re-create a vanished node with its original metadata; without rates leave a
    /// present one alone; with rates rewrite it when the rates changed it.
    pub fn refresh(&self, registered: &str, current: Option<&str>, now: std::time::Instant) -> RefreshAction {
        let Some(current) = current else {
            let _ = registered;
            return RefreshAction::Recreate;
        };
        let Some(rates) = &self.rates else {
            return RefreshAction::Keep;
        };
        let (calls, conns) = rates.at(now);
        match metadata_with_rates(current, calls, conns) {
            Some(v) if v != current => RefreshAction::Rewrite(v),
            _ => RefreshAction::Keep,
        }
    }

    /// The advertised key (`tcp@10.0.0.5:8972`).
    pub fn address(&self) -> &ServerKey {
        &self.address
    }

    /// The services, sorted by name.
    pub fn services(&self) -> &[ServiceEntry] {
        &self.services
    }

    /// The directory entries Go's KV plugins write besides the nodes: `base_path` with
    /// value `rpcx_path` and `base_path/<service>` with the service name as value
    /// (rpcx-ui reads them; discovery does not need them).
    pub fn directories(&self, base_path: &str) -> Vec<Node> {
        let mut out = vec![Node { key: base_path.to_owned(), value: BASE_PATH_VALUE.to_owned() }];
        out.extend(
            self.services.iter().map(|s| Node { key: service_prefix_dir(base_path, &s.name), value: s.name.clone() }),
        );
        out
    }

    /// One node per service: key `base_path/<service>/<address>`, value the metadata.
    pub fn nodes(&self, base_path: &str) -> Vec<Node> {
        self.services
            .iter()
            .map(|s| Node { key: node_key(base_path, &s.name, self.address.as_str()), value: s.metadata.clone() })
            .collect()
    }
}

fn service_prefix_dir(base_path: &str, service: &str) -> String {
    format!("{base_path}/{service}")
}

/// A node's key exactly as Go's etcd plugin concatenates it: `base/service/address`
/// (no normalisation: `/rpcx_test` + `Arith` + `tcp@127.0.0.1:8972` gives
/// `/rpcx_test/Arith/tcp@127.0.0.1:8972`).
pub fn node_key(base_path: &str, service: &str, address: &str) -> String {
    format!("{base_path}/{service}/{address}")
}

/// The prefix discovery lists and watches for `service`: `base/service/`. The trailing
/// `/` keeps `Arith2`'s nodes out of `Arith`'s list (Go's Redis discovery leaks them).
pub fn service_prefix(base_path: &str, service: &str) -> String {
    format!("{base_path}/{service}/")
}

/// The discovery key of a listed registry key: the part after `prefix` (from
/// [`service_prefix`]); `None` for the directory key itself, keys outside the prefix,
/// and keys with a further `/` below a node (never written by rpcx servers).
pub fn discovered_key<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix).filter(|k| !k.is_empty() && !k.contains('/'))
}

/// What a refresh tick does with one node, given what the registry holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshAction {
    /// The node is there: leave its value alone (an operator may have edited it, e.g.
    /// `state=inactive`), only keep its lease or TTL alive.
    Keep,
    /// The node vanished: write it again with the registration's metadata.
    Recreate,
    /// The node is there: write this value (the present one with new rates), keeping
    /// its lease or TTL.
    Rewrite(String),
}

/// The refresh policy (see the module docs): re-create vanished nodes, keep the rest.
pub fn refresh_action(current: Option<&str>) -> RefreshAction {
    match current {
        Some(_) => RefreshAction::Keep,
        None => RefreshAction::Recreate,
    }
}

/// A registry backend as a server sees it (etcd, Redis, ...). Implementations run
/// their own IO (a task, a thread) and answer through a [`Completion`], which a tokio,
/// smol or blocking caller can wait on alike.
pub trait Registrar: Send + Sync + fmt::Debug {
    /// Publish `registration` and keep it published (refresh every update interval,
    /// re-create vanished nodes) until the returned [`Registered`] is unregistered or
    /// dropped. The completion resolves once the first write has succeeded or failed
    /// (within the backend's own operation timeout).
    fn register(&self, registration: Registration) -> Completion<Box<dyn Registered>>;
}

/// A boxed registrar is one (a backend chosen at run time, as from a URL).
impl<R: Registrar + ?Sized> Registrar for Box<R> {
    fn register(&self, registration: Registration) -> Completion<Box<dyn Registered>> {
        (**self).register(registration)
    }
}

/// A live registration. Dropping it stops the refreshes without deleting anything: the
/// nodes expire with their lease or TTL, as when the process dies.
pub trait Registered: Send + Sync + fmt::Debug {
    /// Delete the nodes and stop refreshing. Resolves when the registry confirmed it,
    /// or with an error within the backend's operation timeout.
    fn unregister(self: Box<Self>) -> Completion<()>;
}

/// A server's registry settings (part of
/// [`ServerSettings`](crate::service::ServerSettings)).
#[derive(Clone, Debug, Default)]
pub struct RegistrySettings {
    /// The backend, if the server registers at all.
    pub registrar: Option<Arc<dyn Registrar>>,
    /// The address to publish (`tcp@host:port` or a bare host); `None`: the bound one.
    pub advertise_address: Option<String>,
    /// Write `calls` and `connections` rates into the nodes on every refresh (Go's
    /// `Metrics` on its register plugins).
    pub publish_rates: bool,
}

/// Step 1 of the life cycle: with a registrar configured, start registering `router`'s
/// services under the advertised form of `bound` (the server's bound address in rpcx
/// form). `Ok(None)` when nothing is to be registered; else the published key and the
/// registration's completion.
///
/// `dispatcher` is the server's: its router names the services, and its counters feed
/// the rates when [`RegistrySettings::publish_rates`] is on, counted from `now`.
pub fn begin(
    settings: &RegistrySettings,
    dispatcher: &Arc<crate::service::Dispatcher>,
    bound: &str,
    now: std::time::Instant,
) -> Result<Option<Pending>, RegistryError> {
    dispatcher.register_services().map_err(RegistryError::Refused)?;
    let Some(registrar) = &settings.registrar else {
        return Ok(None);
    };
    let key = advertised_key(bound, settings.advertise_address.as_deref())?;
    let services = dispatcher
        .router()
        .services()
        .map(|(name, metadata)| ServiceEntry { name: name.to_owned(), metadata: metadata.to_owned() });
    let mut registration = Registration::new(key, services);
    if settings.publish_rates {
        let d = Arc::downgrade(dispatcher);
        let counts = move || {
            d.upgrade().map_or((0, 0), |d| {
                let t = d.stats();
                (t.requests, t.connections_accepted)
            })
        };
        registration = registration.with_rates(Rates::new(counts, now));
    }
    tracing::debug!(address = %registration.address(), services = registration.services().len(), "registering");
    let key = key_of(&registration);
    // A registrar is user code: a panic fails the registration instead of the bind.
    let registered = crate::guard::catch("registrar", || registrar.register(registration))
        .unwrap_or_else(|| Completion::ready(Err(panicked("register"))));
    Ok(Some(Pending { key, registered }))
}

/// Unregister `r` (what every server's shutdown and close call, before draining); a
/// panicking `unregister` is an error, not a crashed shutdown.
pub fn end(r: Box<dyn Registered>) -> Completion<()> {
    crate::guard::catch("unregister", || r.unregister())
        .unwrap_or_else(|| Completion::ready(Err(panicked("unregister"))))
}

fn panicked(op: &'static str) -> RegistryError {
    RegistryError::Operation { op, source: "the registrar panicked".into() }
}

/// A registration [`begin`] started: the key it publishes and its completion.
#[derive(Debug)]
pub struct Pending {
    /// The advertised key.
    pub key: ServerKey,
    /// Resolves once the first registration succeeded or failed.
    pub registered: Completion<Box<dyn Registered>>,
}

fn key_of(r: &Registration) -> ServerKey {
    r.address.clone()
}

/// The answer to a request made to another task or thread: `.await` it on any async
/// runtime, or [`wait`](Self::wait) for it on a plain thread. Resolves to
/// [`RegistryError::Stopped`] if the other side went away without answering.
pub struct Completion<T> {
    inner: Arc<Slot<T>>,
}

/// The sending half of a [`Completion`].
pub struct Completer<T> {
    inner: Arc<Slot<T>>,
}

struct Slot<T> {
    state: Mutex<SlotState<T>>,
    cv: Condvar,
}

struct SlotState<T> {
    value: Option<Result<T, RegistryError>>,
    done: bool,
    waker: Option<Waker>,
}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

/// A connected [`Completer`] / [`Completion`] pair.
pub fn completion<T>() -> (Completer<T>, Completion<T>) {
    let inner =
        Arc::new(Slot { state: Mutex::new(SlotState { value: None, done: false, waker: None }), cv: Condvar::new() });
    (Completer { inner: inner.clone() }, Completion { inner })
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, value: Result<T, RegistryError>) {
        let waker = {
            let mut st = self.lock();
            if st.done {
                return;
            }
            st.value = Some(value);
            st.done = true;
            st.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Completer<T> {
    /// Answer.
    pub fn complete(self, value: Result<T, RegistryError>) {
        self.inner.set(value);
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        self.inner.set(Err(RegistryError::Stopped));
    }
}

impl<T> Completion<T> {
    /// A completion that is already resolved.
    pub fn ready(value: Result<T, RegistryError>) -> Self {
        let (tx, rx) = completion();
        tx.complete(value);
        rx
    }

    /// Block the thread until answered.
    pub fn wait(self) -> Result<T, RegistryError> {
        let mut st = self.inner.lock();
        loop {
            if st.done {
                return st.value.take().unwrap_or(Err(RegistryError::Stopped));
            }
            st = self.inner.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<T> Future for Completion<T> {
    type Output = Result<T, RegistryError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.inner.lock();
        if st.done {
            return Poll::Ready(st.value.take().unwrap_or(Err(RegistryError::Stopped)));
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Panicking;

    impl Registrar for Panicking {
        fn register(&self, _: Registration) -> Completion<Box<dyn Registered>> {
            panic!("registrar bug")
        }
    }

    impl Registered for Panicking {
        fn unregister(self: Box<Self>) -> Completion<()> {
            panic!("unregister bug")
        }
    }

    #[test]
    fn a_panicking_registrar_is_an_error_not_a_crash() {
        let settings = RegistrySettings { registrar: Some(Arc::new(Panicking)), ..Default::default() };
        let router = crate::service::Router::new().service(crate::service::Service::new("Arith"));
        let dispatcher = Arc::new(crate::service::Dispatcher::new(router, Default::default()));
        let pending = begin(&settings, &dispatcher, "tcp@127.0.0.1:8972", std::time::Instant::now())
            .expect("an advertisable address")
            .expect("pending");
        assert!(matches!(pending.registered.wait(), Err(RegistryError::Operation { op: "register", .. })));
        assert!(matches!(end(Box::new(Panicking)).wait(), Err(RegistryError::Operation { op: "unregister", .. })));
    }

    #[test]
    fn unspecified_bind_needs_an_advertised_address() {
        for bound in ["tcp@0.0.0.0:8972", "tcp@[::]:8972", "0.0.0.0:1"] {
            assert!(matches!(advertised_key(bound, None), Err(AdvertiseError::Unspecified { .. })), "{bound}");
        }
        assert_eq!(advertised_key("tcp@127.0.0.1:8972", None).unwrap().as_str(), "tcp@127.0.0.1:8972");
        assert_eq!(advertised_key("tcp@0.0.0.0:8972", Some("10.0.0.5")).unwrap().as_str(), "tcp@10.0.0.5:8972");
        assert_eq!(advertised_key("tcp@[::]:8972", Some("fd00::5")).unwrap().as_str(), "tcp@[fd00::5]:8972");
        assert_eq!(advertised_key("tcp@0.0.0.0:1", Some("tcp@node1:9000")).unwrap().as_str(), "tcp@node1:9000");
        assert_eq!(advertised_key("unix@/tmp/s", None).unwrap().as_str(), "unix@/tmp/s");
        for bad in ["tcp@0.0.0.0:9", "[::]", "tcp@", "tcp@h:0", "tcp@h:99999", "tcp@h:x1"] {
            assert!(
                matches!(advertised_key("tcp@0.0.0.0:8972", Some(bad)), Err(AdvertiseError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_match_go_etcd_layout() {
        let r = Registration::new(
            ServerKey::new("tcp@127.0.0.1:8972"),
            [
                ServiceEntry { name: "Arith".into(), metadata: "weight=10&group=a".into() },
                ServiceEntry { name: "Echo".into(), metadata: String::new() },
            ],
        );
        let nodes = r.nodes("/rpcx_test");
        assert_eq!(
            nodes[0],
            Node { key: "/rpcx_test/Arith/tcp@127.0.0.1:8972".into(), value: "weight=10&group=a".into() }
        );
        assert_eq!(nodes[1].key, "/rpcx_test/Echo/tcp@127.0.0.1:8972");
        let dirs = r.directories("/rpcx_test");
        assert_eq!(dirs[0], Node { key: "/rpcx_test".into(), value: "rpcx_path".into() });
        assert_eq!(dirs[1], Node { key: "/rpcx_test/Arith".into(), value: "Arith".into() });
        let prefix = service_prefix("/rpcx_test", "Arith");
        assert_eq!(discovered_key(&prefix, "/rpcx_test/Arith/tcp@1.2.3.4:5"), Some("tcp@1.2.3.4:5"));
        for k in ["/rpcx_test/Arith", "/rpcx_test/Arith/", "/rpcx_test/Arith2/tcp@1.2.3.4:5", "/rpcx_test/Arith/a/b"] {
            assert_eq!(discovered_key(&prefix, k), None, "{k}");
        }
    }

    #[test]
    fn refresh_recreates_only_vanished_nodes() {
        assert_eq!(refresh_action(None), RefreshAction::Recreate);
        assert_eq!(refresh_action(Some("state=inactive")), RefreshAction::Keep);
        let r = Registration::new(ServerKey::new("tcp@10.0.0.1:1"), []);
        let now = std::time::Instant::now();
        assert_eq!(r.refresh("weight=1", None, now), RefreshAction::Recreate);
        assert_eq!(r.refresh("weight=1", Some("state=inactive"), now), RefreshAction::Keep);
    }

    #[test]
    fn rates_are_written_as_gos_plugins_write_them() {
        assert_eq!(
            metadata_with_rates("weight=10&state=inactive&group=b&group=a", 12.345, 0.5).as_deref(),
            Some("calls=12.35&connections=0.50&group=b&group=a&state=inactive&weight=10")
        );
        assert_eq!(metadata_with_rates("", 0.0, 0.0).as_deref(), Some("calls=0.00&connections=0.00"));
        assert_eq!(
            metadata_with_rates("calls=1.00&connections=2.00&name=a+b", 3.0, 4.0).as_deref(),
            Some("calls=3.00&connections=4.00&name=a+b")
        );
        assert_eq!(metadata_with_rates("bad=%zz", 1.0, 1.0), None, "Go leaves what it cannot parse");
        // 60 calls and 6 connections over (at least) 0.2 s.
        let started = std::time::Instant::now();
        let now = started + std::time::Duration::from_secs(4);
        let r = Registration::new(ServerKey::new("tcp@10.0.0.1:1"), []).with_rates(Rates::new(|| (60, 6), started));
        assert_eq!(r.rates().unwrap().at(now), (15.0, 1.5));
        let RefreshAction::Rewrite(v) = r.refresh("weight=1", Some("weight=1&state=inactive"), now) else {
            panic!("rates rewrite a present node");
        };
        let q = crate::govern::Metadata::parse(&v);
        assert_eq!(v, "calls=15.00&connections=1.50&state=inactive&weight=1");
        assert_eq!(q.get("state"), Some("inactive"), "the operator's flip survives");
        assert_eq!(r.refresh("weight=1", None, now), RefreshAction::Recreate);
    }

    #[test]
    fn completion_resolves_once_and_reports_a_dropped_sender() {
        let (tx, rx) = completion::<u32>();
        let t = std::thread::spawn(move || tx.complete(Ok(7)));
        assert_eq!(rx.wait().unwrap(), 7);
        t.join().unwrap();
        let (tx, rx) = completion::<u32>();
        drop(tx);
        assert!(matches!(rx.wait(), Err(RegistryError::Stopped)));
    }
}
