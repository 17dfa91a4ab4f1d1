//! The discovery data model: server keys (`network@addr`), their URL-query metadata,
//! the group/state filter, and the [`Discovery`] trait with static implementations.

use crate::addr::{AddrError, ServerAddr};
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// A server's identity as rpcx spells it: `network@address` (`tcp@10.0.0.1:8972`,
/// `unix@/tmp/s.sock`, `memu@name`). A key without `@` means `tcp`.
///
/// Keys are compared as strings, exactly like Go's `map[string]string`:
/// `127.0.0.1:1` and `tcp@127.0.0.1:1` are two different keys. Cloning is cheap.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey(Arc<str>);

impl ServerKey {
    /// A key from its string form (not validated: any string is a key).
    pub fn new(key: &str) -> Self {
        ServerKey(Arc::from(key))
    }

    /// The in-process ("memu") key for `name`: `memu@name`.
    pub fn in_process(name: &str) -> Self {
        ServerKey::new(&format!("{IN_PROCESS_NETWORK}@{name}"))
    }

    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The network before `@`, or `tcp` when there is no `@`.
    pub fn network(&self) -> &str {
        self.0.split_once('@').map_or("tcp", |(n, _)| n)
    }

    /// The address after `@` (the whole key when there is no `@`). Go's `Inform`
    /// receipts report this form.
    pub fn address(&self) -> &str {
        self.0.split_once('@').map_or(&self.0, |(_, a)| a)
    }

    /// Whether this names an in-process (`memu`) server.
    pub fn is_in_process(&self) -> bool {
        self.network() == IN_PROCESS_NETWORK
    }

    /// The socket address to dial, for the networks the runtimes speak.
    pub fn server_addr(&self) -> Result<ServerAddr, AddrError> {
        self.0.parse()
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ServerKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ServerKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ServerKey {
    fn from(s: &str) -> Self {
        ServerKey::new(s)
    }
}

impl From<String> for ServerKey {
    fn from(s: String) -> Self {
        ServerKey(Arc::from(s))
    }
}

/// The network name of in-process servers (Go's `memu`).
pub const IN_PROCESS_NETWORK: &str = "memu";

/// A server's metadata: the URL query string a registry stores next to its key
/// (`group=a&group=b&weight=10&state=inactive`), parsed the way Go's `url.ParseQuery`
/// parses it.
///
/// When Go's parser would report an error (a bad `%` escape, a `;` in a pair), the
/// whole string counts as *unparsable*, as in Go: such a server is kept by every filter
/// regardless of its group or state, and selectors read no weight or coordinates from
/// it. Escaped bytes that are not UTF-8 are decoded lossily.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    raw: String,
    pairs: Option<Vec<(String, String)>>,
}

impl Metadata {
    /// Parse a metadata query string.
    pub fn parse(raw: &str) -> Self {
        Metadata { raw: raw.to_owned(), pairs: parse_query(raw) }
    }

    /// The string as the registry stored it.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether the string parsed (Go's `url.ParseQuery` returned no error).
    pub fn is_parsed(&self) -> bool {
        self.pairs.is_some()
    }

    /// The first value of `key` (Go's `Values.Get`); `None` if absent or unparsable.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().flatten().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order; empty if absent or unparsable.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().flatten().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `state=inactive`: the server asked not to be selected. `false` if unparsable.
    pub fn is_inactive(&self) -> bool {
        self.get("state") == Some("inactive")
    }

    /// Whether a `group` value equals `group`. `false` if unparsable.
    pub fn in_group(&self, group: &str) -> bool {
        self.values("group").any(|g| g == group)
    }

    /// The `weight` for weighted round robin: Go's `strconv.Atoi` of the first value.
    /// Missing, unparsable, negative or out of range gives the default 1; `0` is kept
    /// (such a server is never picked while some server has a positive weight).
    pub fn weight(&self) -> u32 {
        match self.get("weight").map(parse_go_int) {
            Some(Some(w)) if w >= 0 => u32::try_from(w).unwrap_or(1),
            _ => 1,
        }
    }

    /// `latitude` and `longitude` as finite floats, if both are present and valid.
    pub fn coordinates(&self) -> Option<(f64, f64)> {
        let lat = self.get("latitude")?.parse::<f64>().ok().filter(|v| v.is_finite())?;
        let lon = self.get("longitude")?.parse::<f64>().ok().filter(|v| v.is_finite())?;
        Some((lat, lon))
    }
}

/// Go's `strconv.Atoi`: optional sign, ASCII digits, no spaces, 64-bit range.
fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `url.ParseQuery`: `None` if Go would return an error.
fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    let (pairs, err) = crate::query::parse(query);
    let lossy =
        |b: Vec<u8>| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    err.is_none().then(|| pairs.into_iter().map(|(k, v)| (lossy(k), lossy(v))).collect())
}

/// One server as discovery reports it: its key and metadata. Cloning is cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    key: ServerKey,
    metadata: Arc<Metadata>,
}

impl Instance {
    /// A server from its key and metadata query string (Go's `KVPair{Key, Value}`).
    pub fn new(key: impl Into<ServerKey>, metadata: &str) -> Self {
        Instance { key: key.into(), metadata: Arc::new(Metadata::parse(metadata)) }
    }

    /// The server key.
    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// The parsed metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// Which servers a client may use: Go's `filterByStateAndGroup` plus an optional
/// caller predicate (Go's `SetFilter`).
///
/// A server is dropped if its metadata says `state=inactive`, or if a group is set and
/// none of its `group` values equals it. A server whose metadata does not parse is
/// kept regardless of group and state, as in Go (the predicate still applies).
#[derive(Clone, Default)]
pub struct ServerFilter {
    group: Option<String>,
    predicate: Option<FilterFn>,
}

/// A caller's server predicate (Go's `ServiceDiscoveryFilter`).
pub type FilterFn = Arc<dyn Fn(&Instance) -> bool + Send + Sync>;

impl fmt::Debug for ServerFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFilter")
            .field("group", &self.group)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl ServerFilter {
    /// Keep every active server.
    pub fn new() -> Self {
        ServerFilter::default()
    }

    /// Keep only servers in `group` (Go's `Option.Group`; an empty string means none).
    #[must_use]
    pub fn group(mut self, group: &str) -> Self {
        self.group = (!group.is_empty()).then(|| group.to_owned());
        self
    }

    /// Also require `predicate` to hold.
    #[must_use]
    pub fn predicate(mut self, predicate: impl Fn(&Instance) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether `server` passes.
    pub fn keep(&self, server: &Instance) -> bool {
        let md = server.metadata();
        let by_metadata =
            !md.is_parsed() || (!md.is_inactive() && self.group.as_deref().is_none_or(|g| md.in_group(g)));
        by_metadata && self.predicate.as_ref().is_none_or(|p| p(server))
    }

    /// The servers that pass, in their given order.
    pub fn apply(&self, servers: &[Instance]) -> Vec<Instance> {
        servers.iter().filter(|s| self.keep(s)).cloned().collect()
    }
}

/// One version of a discovery's server list: unique keys, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Bumped on every change; a client re-filters when it differs from what it saw.
    pub version: u64,
    /// The servers, sorted by key, no duplicate keys.
    pub servers: Arc<[Instance]>,
}

impl Snapshot {
    /// A snapshot from servers in any order; a later duplicate key replaces an earlier
    /// one (Go keeps servers in a map).
    pub fn new(version: u64, servers: impl IntoIterator<Item = Instance>) -> Self {
        let map: BTreeMap<ServerKey, Instance> = servers.into_iter().map(|s| (s.key.clone(), s)).collect();
        Snapshot { version, servers: map.into_values().collect() }
    }
}

/// Identifies a change callback registered with [`Discovery::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

/// A change callback: called with the new version after every change, outside any
/// lock held by the discovery (it may call [`Discovery::snapshot`]). It should be quick:
/// wake a task or send on a channel.
pub type ChangeCallback = Arc<dyn Fn(u64) + Send + Sync>;

/// Where a client learns its servers (Go's `ServiceDiscovery`), runtime-neutral.
///
/// A client reads [`snapshot`](Self::snapshot) and, before each call, compares
/// [`version`](Self::version) with the one it saw; runtimes that want to react at once
/// register a callback with [`subscribe`](Self::subscribe). Registry-backed
/// implementations (etcd, ZooKeeper, ...) live in their own crates.
pub trait Discovery: Send + Sync {
    /// The current servers.
    fn snapshot(&self) -> Snapshot;

    /// The current version (cheaper than a snapshot for implementations that can).
    fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// Register a change callback. `None` means the list never changes.
    fn subscribe(&self, callback: ChangeCallback) -> Option<SubscriptionId> {
        let _ = callback;
        None
    }

    /// Remove a callback; unknown ids are ignored.
    fn unsubscribe(&self, id: SubscriptionId) {
        let _ = id;
    }
}

/// One fixed server (Go's `Peer2PeerDiscovery`). Its version is always 0.
#[derive(Debug, Clone)]
pub struct PeerDiscovery {
    snapshot: Snapshot,
}

impl PeerDiscovery {
    /// The single server `key` with `metadata` (often empty).
    pub fn new(key: impl Into<ServerKey>, metadata: &str) -> Self {
        PeerDiscovery { snapshot: Snapshot::new(0, [Instance::new(key, metadata)]) }
    }
}

impl Discovery for PeerDiscovery {
    fn snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }

    fn version(&self) -> u64 {
        0
    }
}

/// A list of servers the application sets and replaces (Go's
/// `MultipleServersDiscovery`). Share it behind an `Arc`; [`update`](Self::update)
/// bumps the version and runs the callbacks.
#[derive(Default)]
pub struct MultiDiscovery {
    inner: Mutex<MultiState>,
}

#[derive(Default)]
struct MultiState {
    snapshot: Option<Snapshot>,
    next_id: u64,
    subscribers: Vec<(SubscriptionId, ChangeCallback)>,
}

impl fmt::Debug for MultiDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiDiscovery").field("snapshot", &self.snapshot()).finish_non_exhaustive()
    }
}

impl MultiDiscovery {
    /// Start with `servers` at version 0.
    pub fn new(servers: impl IntoIterator<Item = Instance>) -> Self {
        let state = MultiState { snapshot: Some(Snapshot::new(0, servers)), ..MultiState::default() };
        MultiDiscovery { inner: Mutex::new(state) }
    }

    /// Replace the list, bump the version and notify subscribers. Returns the new
    /// version.
    pub fn update(&self, servers: impl IntoIterator<Item = Instance>) -> u64 {
        let (version, callbacks) = {
            let mut st = self.lock();
            let version = st.snapshot.as_ref().map_or(0, |s| s.version) + 1;
            st.snapshot = Some(Snapshot::new(version, servers));
            (version, st.subscribers.iter().map(|(_, cb)| cb.clone()).collect::<Vec<_>>())
        };
        for cb in callbacks {
            crate::guard::catch("discovery change callback", || cb(version));
        }
        version
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MultiState> {
        // The state stays consistent even if a holder panicked: recover it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Discovery for MultiDiscovery {
    fn snapshot(&self) -> Snapshot {
        self.lock().snapshot.clone().unwrap_or_else(|| Snapshot::new(0, []))
    }

    fn version(&self) -> u64 {
        self.lock().snapshot.as_ref().map_or(0, |s| s.version)
    }

    fn subscribe(&self, callback: ChangeCallback) -> Option<SubscriptionId> {
        let mut st = self.lock();
        let id = SubscriptionId(st.next_id);
        st.next_id += 1;
        st.subscribers.push((id, callback));
        Some(id)
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.lock().subscribers.retain(|(i, _)| *i != id);
    }
}

/// In-process servers (Go's `memu` network): keys `memu@<name>`, for tests and
/// debugging. Only the discovery side; a runtime maps these keys to in-memory
/// transports.
#[derive(Debug, Default)]
pub struct InProcessDiscovery {
    inner: MultiDiscovery,
}

impl InProcessDiscovery {
    /// Servers named `names` (keys `memu@<name>`, empty metadata).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        InProcessDiscovery { inner: MultiDiscovery::new(Self::instances(names)) }
    }

    /// Replace the names; returns the new version.
    pub fn update<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> u64 {
        self.inner.update(Self::instances(names))
    }

    fn instances<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Instance> {
        names.into_iter().map(|n| Instance::new(ServerKey::in_process(n), "")).collect()
    }
}

impl Discovery for InProcessDiscovery {
    fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    fn version(&self) -> u64 {
        self.inner.version()
    }

    fn subscribe(&self, callback: ChangeCallback) -> Option<SubscriptionId> {
        self.inner.subscribe(callback)
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.inner.unsubscribe(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_query_matches_go() {
        let md = Metadata::parse("group=a&group=b&weight=10&x=%41+b&&flag");
        assert!(md.is_parsed());
        assert_eq!(md.values("group").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(md.get("x"), Some("A b"));
        assert_eq!(md.get("flag"), Some(""));
        assert_eq!(md.weight(), 10);
        for bad in ["a=%zz", "a=%4", "a=1;b=2", "%=1", "a=%"] {
            assert!(!Metadata::parse(bad).is_parsed(), "{bad}");
        }
        assert!(Metadata::parse("").is_parsed());
    }

    #[test]
    fn weight_parsing() {
        for (s, w) in [
            ("weight=%2B7", 7),
            ("weight=+7", 1),
            ("weight=-3", 1),
            ("weight=x", 1),
            ("weight= 2", 1),
            ("weight=0", 0),
            ("", 1),
        ] {
            assert_eq!(Metadata::parse(s).weight(), w, "{s}");
        }
        assert_eq!(Metadata::parse("weight=99999999999").weight(), 1);
    }

    #[test]
    fn key_parts() {
        let k = ServerKey::new("tcp@1.2.3.4:5");
        assert_eq!((k.network(), k.address()), ("tcp", "1.2.3.4:5"));
        let k = ServerKey::new("1.2.3.4:5");
        assert_eq!((k.network(), k.address()), ("tcp", "1.2.3.4:5"));
        assert!(ServerKey::in_process("x").is_in_process());
        assert_eq!(ServerKey::in_process("x").as_str(), "memu@x");
    }
}
