//! A cache file in front of any discovery (Go's `client.CacheDiscovery`): the last
//! good server list is kept in a file, and served when the discovery has too few
//! servers, as when the registry is unreachable at start-up or was wiped.
//!
//! The file is Go's: `json.Marshal([]*KVPair)`, `[{"Key":"tcp@10.0.0.5:8972","Value":
//! "weight=10"}]`, so a Go client and a Rust client can share one. Go's default path is
//! `.cache/discovery.json`.
//!
//! Where we differ from Go, on purpose: every list with more than `threshold` servers
//! is stored (Go stores a list only when it is longer than the one it has, so a server
//! taken out of service stays in its cache forever); the file is written to a temporary
//! name and renamed, so a crash never leaves half a file; a list read back from the
//! file at start is served at once (Go reads it but never serves it, a bug); and a
//! cache file larger than 16 MiB or not in that form is ignored with a warning rather
//! than read whole.
//!
//! ```no_run
//! # fn f(etcd: std::sync::Arc<dyn rpcx_core::govern::Discovery>) {
//! use rpcx_registry::cache::CacheDiscovery;
//!
//! // Serve the cached list whenever etcd lists no server at all.
//! let discovery = CacheDiscovery::new(etcd, ".cache/discovery.json", 0);
//! # let _ = discovery; }
//! ```

use rpcx_core::govern::{ChangeCallback, Discovery, Instance, MultiDiscovery, Snapshot, SubscriptionId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The largest cache file read back.
const MAX_FILE: u64 = 16 << 20;

/// One entry of the file, as Go's `KVPair` marshals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct KvPair {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: String,
}

/// A discovery whose list is backed by a file (see the module docs).
pub struct CacheDiscovery {
    shared: Arc<Shared>,
    subscription: Option<SubscriptionId>,
}

struct Shared {
    inner: Arc<dyn Discovery>,
    path: PathBuf,
    threshold: usize,
    /// What is served.
    served: MultiDiscovery,
    /// The last list stored or read back.
    cached: Mutex<Vec<KvPair>>,
}

impl fmt::Debug for CacheDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheDiscovery")
            .field("path", &self.shared.path)
            .field("threshold", &self.shared.threshold)
            .field("served", &self.shared.served)
            .finish_non_exhaustive()
    }
}

impl CacheDiscovery {
    /// Cache `inner`'s lists in the file at `path` (its directory is created), and
    /// serve the cached list while `inner` has `threshold` servers or fewer (0: only
    /// when it has none).
    pub fn new(inner: Arc<dyn Discovery>, path: impl AsRef<Path>, threshold: usize) -> Self {
        let path = path.as_ref().to_owned();
        let cached = read(&path);
        let shared =
            Arc::new(Shared { inner, path, threshold, served: MultiDiscovery::new([]), cached: Mutex::new(cached) });
        let weak = Arc::downgrade(&shared);
        let subscription = shared.inner.subscribe(Arc::new(move |_| {
            if let Some(s) = weak.upgrade() {
                s.refresh();
            }
        }));
        shared.refresh();
        CacheDiscovery { shared, subscription }
    }

    /// Whether the cached list is what is served now.
    pub fn serving_cache(&self) -> bool {
        self.shared.inner.snapshot().servers.len() <= self.shared.threshold && !self.shared.cached().is_empty()
    }
}

impl Shared {
    fn cached(&self) -> std::sync::MutexGuard<'_, Vec<KvPair>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-read the inner list: store it when it is long enough, and serve it or the
    /// cache.
    fn refresh(&self) {
        let now: Vec<KvPair> = self
            .inner
            .snapshot()
            .servers
            .iter()
            .map(|i| KvPair { key: i.key().to_string(), value: i.metadata().raw().to_owned() })
            .collect();
        let serve = {
            let mut cached = self.cached();
            if now.len() > self.threshold {
                if *cached != now {
                    write(&self.path, &now);
                    *cached = now.clone();
                }
                now
            } else if cached.is_empty() {
                now
            } else {
                cached.clone()
            }
        };
        let current: Vec<KvPair> = self
            .served
            .snapshot()
            .servers
            .iter()
            .map(|i| KvPair { key: i.key().to_string(), value: i.metadata().raw().to_owned() })
            .collect();
        if current != serve || self.served.version() == 0 {
            self.served.update(serve.iter().map(|kv| Instance::new(kv.key.as_str(), &kv.value)));
        }
    }
}

/// The cached list in the file, or none (with a warning when the file exists but is
/// unusable).
fn read(path: &Path) -> Vec<KvPair> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the discovery cache");
            return Vec::new();
        }
    };
    let mut data = Vec::new();
    if let Err(e) = file.take(MAX_FILE + 1).read_to_end(&mut data) {
        tracing::warn!(path = %path.display(), error = %e, "cannot read the discovery cache");
        return Vec::new();
    }
    if data.len() as u64 > MAX_FILE {
        tracing::warn!(path = %path.display(), "the discovery cache is over 16 MiB; ignored");
        return Vec::new();
    }
    if data.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    match serde_json::from_slice::<Option<Vec<KvPair>>>(&data) {
        Ok(list) => list.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the discovery cache is not a KVPair list; ignored");
            Vec::new()
        }
    }
}

/// Store `list` (a temporary file renamed over the old one); failures are logged.
fn write(path: &Path, list: &[KvPair]) {
    let result = (|| {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let data = serde_json::to_vec(list).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot store the discovery cache");
    }
}

impl Drop for CacheDiscovery {
    fn drop(&mut self) {
        if let Some(id) = self.subscription.take() {
            self.shared.inner.unsubscribe(id);
        }
    }
}

impl Discovery for CacheDiscovery {
    fn snapshot(&self) -> Snapshot {
        // An inner discovery that cannot notify is re-read on every look.
        if self.subscription.is_none() {
            self.shared.refresh();
        }
        self.shared.served.snapshot()
    }

    fn version(&self) -> u64 {
        if self.subscription.is_none() {
            self.shared.refresh();
        }
        self.shared.served.version()
    }

    fn subscribe(&self, callback: ChangeCallback) -> Option<SubscriptionId> {
        self.shared.served.subscribe(callback)
    }

    fn unsubscribe(&self, id: SubscriptionId) {
        self.shared.served.unsubscribe(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(d: &dyn Discovery) -> Vec<String> {
        d.snapshot().servers.iter().map(|i| format!("{}={}", i.key(), i.metadata().raw())).collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rpcx-cache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("sub").join("discovery.json")
    }

    #[test]
    fn lists_are_stored_in_gos_form_and_served_when_the_registry_has_too_few() {
        let path = temp("serve");
        let inner = Arc::new(MultiDiscovery::new([
            Instance::new("tcp@10.0.0.1:8972", "weight=10"),
            Instance::new("tcp@10.0.0.2:8972", ""),
        ]));
        let d = CacheDiscovery::new(inner.clone(), &path, 0);
        assert_eq!(keys(&d), ["tcp@10.0.0.1:8972=weight=10", "tcp@10.0.0.2:8972="]);
        let text = std::fs::read_to_string(&path).expect("the cache file");
        assert_eq!(text, r#"[{"Key":"tcp@10.0.0.1:8972","Value":"weight=10"},{"Key":"tcp@10.0.0.2:8972","Value":""}]"#);
        let v = d.version();
        // A server taken out is taken out of the cache too.
        inner.update([Instance::new("tcp@10.0.0.2:8972", "")]);
        assert_eq!(keys(&d), ["tcp@10.0.0.2:8972="]);
        assert!(d.version() > v);
        assert_eq!(read(&path).len(), 1);
        // The registry lists nothing: the cache is served.
        inner.update([]);
        assert_eq!(keys(&d), ["tcp@10.0.0.2:8972="]);
        assert!(d.serving_cache());
        // A fresh client (the registry still empty) starts from the file.
        let again = CacheDiscovery::new(Arc::new(MultiDiscovery::new([])), &path, 0);
        assert_eq!(keys(&again), ["tcp@10.0.0.2:8972="]);
        assert!(again.serving_cache());
        // Back to a real list.
        inner.update([Instance::new("tcp@10.0.0.3:8972", "")]);
        assert_eq!(keys(&d), ["tcp@10.0.0.3:8972="]);
        assert!(!d.serving_cache());
    }

    #[test]
    fn a_threshold_keeps_short_lists_out_of_the_cache() {
        let path = temp("threshold");
        let inner = Arc::new(MultiDiscovery::new([
            Instance::new("tcp@10.0.0.1:1", ""),
            Instance::new("tcp@10.0.0.2:1", ""),
            Instance::new("tcp@10.0.0.3:1", ""),
        ]));
        let d = CacheDiscovery::new(inner.clone(), &path, 1);
        inner.update([Instance::new("tcp@10.0.0.1:1", "")]);
        assert_eq!(keys(&d).len(), 3, "one server is at the threshold: the cache (3) is served");
        inner.update([Instance::new("tcp@10.0.0.1:1", ""), Instance::new("tcp@10.0.0.4:1", "")]);
        assert_eq!(keys(&d), ["tcp@10.0.0.1:1=", "tcp@10.0.0.4:1="]);
    }

    #[test]
    fn bad_or_huge_files_are_ignored() {
        for (name, content) in [
            ("garbage", b"not json".to_vec()),
            ("null", b"null".to_vec()),
            ("huge", vec![b' '; (MAX_FILE + 10) as usize]),
        ] {
            let path = temp(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            let inner = Arc::new(MultiDiscovery::new([Instance::new("tcp@10.0.0.1:1", "")]));
            let d = CacheDiscovery::new(inner, &path, 0);
            assert_eq!(keys(&d), ["tcp@10.0.0.1:1="], "{name}");
            assert_eq!(read(&path).len(), 1, "{name}: replaced by the good list");
        }
        let d = CacheDiscovery::new(Arc::new(MultiDiscovery::new([])), temp("missing"), 0);
        assert!(keys(&d).is_empty());
    }
}
