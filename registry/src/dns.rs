//! DNS discovery (Go's `client.NewDNSDiscovery`): the servers of a service are the A
//! and AAAA records of one name, all on one port, looked up again every interval.
//!
//! Keys are `network@ip:port`, sorted, with empty metadata, as Go makes them, except
//! that an IPv6 address is bracketed (`tcp@[2001:db8::1]:8972`; Go writes
//! `tcp@2001:db8::1:8972`, which no dialer can parse). Lookups go through the
//! operating system's resolver (`getaddrinfo`: `/etc/hosts`, `/etc/resolv.conf`,
//! nsswitch), like Go's default resolver on Linux, on one thread per discovery, so
//! it serves tokio, smol and rpcx-std callers alike. A failed lookup after the first
//! keeps the last list (a resolver outage does not empty the client); an answer with
//! no address does empty it, as the name then names no server.
//!
//! ```no_run
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use rpcx_registry::dns::{DnsConfig, DnsDiscovery};
//! use std::time::Duration;
//!
//! let config = DnsConfig::new("arith.service.internal", 8972).interval(Duration::from_secs(30));
//! let discovery = DnsDiscovery::connect(config).wait()?; // or `.await`
//! let xc = rpcx_std::XClient::new("Arith", std::sync::Arc::new(discovery), Default::default());
//! # let _ = xc; Ok(()) }
//! ```

use crate::RegistryError;
use rpcx_core::govern::{Instance, MultiDiscovery};
use rpcx_core::registry::{Completer, Completion, completion};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// Resolves a name to addresses (the system resolver by default).
pub type Resolver = Arc<dyn Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync>;

/// What to look up, and how often. Cheap to clone.
#[derive(Clone)]
pub struct DnsConfig {
    name: String,
    port: u16,
    network: String,
    interval: Duration,
    resolver: Resolver,
}

impl fmt::Debug for DnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsConfig")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("network", &self.network)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl DnsConfig {
    /// The servers at every address of `name`, on `port`. Defaults: network `tcp`,
    /// a lookup every 30 s, the system resolver.
    pub fn new(name: &str, port: u16) -> Self {
        DnsConfig {
            name: name.trim_end_matches('.').to_owned(),
            port,
            network: "tcp".to_owned(),
            interval: Duration::from_secs(30),
            resolver: Arc::new(system_lookup),
        }
    }

    /// The network in the keys (`tcp`, `http`, `ws`, ...; Go's `network` argument).
    #[must_use]
    pub fn network(mut self, network: &str) -> Self {
        self.network = network.to_owned();
        self
    }

    /// How often the name is looked up again.
    #[must_use]
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Look names up with `resolver` instead of the system's (a service mesh's API, a
    /// fixed table in tests).
    #[must_use]
    pub fn resolver(mut self, resolver: impl Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: &str| Err(RegistryError::Config(m.to_owned()));
        if self.name.is_empty() {
            return bad("DNS discovery needs a name");
        }
        if self.port == 0 {
            return bad("DNS discovery needs a port");
        }
        if self.network.is_empty() || self.network.contains('@') {
            return bad("the network must be a word such as tcp");
        }
        if self.interval.is_zero() {
            return bad("the lookup interval must be positive");
        }
        Ok(())
    }

    /// The keys for one answer: `network@ip:port`, IPv6 bracketed, sorted, no
    /// duplicates.
    fn keys(&self, ips: &[IpAddr]) -> Vec<String> {
        let mut keys: Vec<String> =
            ips.iter().map(|ip| format!("{}@{}", self.network, SocketAddr::new(*ip, self.port))).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The system resolver: `getaddrinfo` through std (a literal address is returned as
/// it is).
fn system_lookup(name: &str) -> io::Result<Vec<IpAddr>> {
    Ok((name, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
}

/// Servers from DNS, looked up every interval on a thread of its own (stopped when
/// this is dropped).
pub struct DnsDiscovery {
    list: Arc<MultiDiscovery>,
    lookups: Arc<AtomicU64>,
    _stop: mpsc::Sender<()>,
}

impl fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscovery").field("list", &self.list).finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// Look the name up once and keep looking every interval. The completion fails if
    /// the first lookup fails (a misspelt name is an error at start); later failures
    /// keep the last list.
    pub fn connect(config: DnsConfig) -> Completion<DnsDiscovery> {
        if let Err(e) = config.validate() {
            return Completion::ready(Err(e));
        }
        let (tx, rx) = completion();
        let (stop_tx, stop_rx) = mpsc::channel();
        let list = Arc::new(MultiDiscovery::new([]));
        let lookups = Arc::new(AtomicU64::new(0));
        let discovery = DnsDiscovery { list: list.clone(), lookups: lookups.clone(), _stop: stop_tx };
        let looker = Looker { config, list, lookups };
        let spawned = std::thread::Builder::new()
            .name("rpcx-dns-discovery".into())
            .spawn(move || looker.run(tx, discovery, stop_rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the DNS discovery thread");
            // The completer went down with the closure: the caller sees `Stopped`.
        }
        rx
    }

    /// How many lookups have succeeded so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }
}

struct Looker {
    config: DnsConfig,
    list: Arc<MultiDiscovery>,
    lookups: Arc<AtomicU64>,
}

impl Looker {
    fn run(self, first: Completer<DnsDiscovery>, discovery: DnsDiscovery, stop: mpsc::Receiver<()>) {
        let mut last = match self.lookup() {
            Ok(keys) => keys,
            Err(e) => return first.complete(Err(e)),
        };
        self.publish(&last);
        first.complete(Ok(discovery));
        // Until the discovery is dropped (the sender with it).
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(self.config.interval) {
            match self.lookup() {
                Ok(keys) if keys != last => {
                    tracing::debug!(name = %self.config.name, servers = keys.len(), "DNS answer changed");
                    self.publish(&keys);
                    last = keys;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "DNS lookup failed; keeping the last list"),
            }
        }
    }

    fn lookup(&self) -> Result<Vec<String>, RegistryError> {
        let resolver = self.config.resolver.clone();
        let name = self.config.name.as_str();
        match rpcx_core::guard::catch("DNS resolver", || resolver(name)) {
            Some(Ok(ips)) => {
                self.lookups.fetch_add(1, Ordering::SeqCst);
                Ok(self.config.keys(&ips))
            }
            Some(Err(e)) => Err(RegistryError::Operation { op: "DNS lookup", source: Box::new(e) }),
            None => Err(RegistryError::Operation { op: "DNS lookup", source: "the resolver panicked".into() }),
        }
    }

    fn publish(&self, keys: &[String]) {
        self.list.update(keys.iter().map(|k| Instance::new(k.as_str(), "")));
    }
}

discovery_through!(DnsDiscovery, list);

#[cfg(test)]
mod tests {
    use super::*;
    use rpcx_core::govern::Discovery;
    use std::sync::Mutex;

    fn keys(d: &DnsDiscovery) -> Vec<String> {
        d.snapshot().servers.iter().map(|i| i.key().to_string()).collect()
    }

    #[test]
    fn keys_are_sorted_deduplicated_and_ipv6_is_bracketed() {
        let c = DnsConfig::new("x", 8972).network("ws");
        let ips: Vec<IpAddr> =
            ["10.0.0.2", "2001:db8::1", "10.0.0.1", "10.0.0.2"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(c.keys(&ips), ["ws@10.0.0.1:8972", "ws@10.0.0.2:8972", "ws@[2001:db8::1]:8972"]);
    }

    #[test]
    fn the_system_resolver_answers_literals_and_localhost() {
        let d = DnsDiscovery::connect(DnsConfig::new("127.0.0.1", 8972)).wait().unwrap();
        assert_eq!(keys(&d), ["tcp@127.0.0.1:8972"]);
        let d = DnsDiscovery::connect(DnsConfig::new("::1", 8972)).wait().unwrap();
        assert_eq!(keys(&d), ["tcp@[::1]:8972"]);
        let d = DnsDiscovery::connect(DnsConfig::new("localhost", 1)).wait().unwrap();
        let k = keys(&d);
        assert!(!k.is_empty() && k.iter().all(|k| k == "tcp@127.0.0.1:1" || k == "tcp@[::1]:1"), "{k:?}");
    }

    #[test]
    fn a_name_that_does_not_resolve_fails_at_start() {
        let err = DnsDiscovery::connect(DnsConfig::new("no-such-host.invalid", 8972)).wait().unwrap_err();
        assert!(matches!(err, RegistryError::Operation { op: "DNS lookup", .. }), "{err:?}");
        assert!(matches!(DnsDiscovery::connect(DnsConfig::new("", 1)).wait(), Err(RegistryError::Config(_))));
        assert!(matches!(DnsDiscovery::connect(DnsConfig::new("x", 0)).wait(), Err(RegistryError::Config(_))));
    }

    #[test]
    fn answers_are_followed_and_failures_and_panics_keep_the_last_list() {
        // The answer the resolver gives next: addresses, an error, or a panic.
        let answer: Arc<Mutex<Result<Vec<&'static str>, bool>>> = Arc::new(Mutex::new(Ok(vec!["10.0.0.1"])));
        let a = answer.clone();
        let config = DnsConfig::new("svc", 9000).interval(Duration::from_millis(10)).resolver(move |_| {
            let next = a.lock().unwrap().clone();
            match next {
                Ok(ips) => Ok(ips.iter().map(|s| s.parse().unwrap()).collect()),
                Err(false) => Err(io::Error::other("SERVFAIL")),
                Err(true) => panic!("resolver bug"),
            }
        });
        let d = DnsDiscovery::connect(config).wait().unwrap();
        let changed = Arc::new(AtomicU64::new(0));
        let c = changed.clone();
        d.subscribe(Arc::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        let wait_for = |want: &[&str]| {
            let t0 = std::time::Instant::now();
            while keys(&d) != want {
                assert!(t0.elapsed() < Duration::from_secs(5), "{:?}, want {want:?}", keys(&d));
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        assert_eq!(keys(&d), ["tcp@10.0.0.1:9000"]);
        *answer.lock().unwrap() = Ok(vec!["10.0.0.2", "10.0.0.1"]);
        wait_for(&["tcp@10.0.0.1:9000", "tcp@10.0.0.2:9000"]);
        assert_eq!(changed.load(Ordering::SeqCst), 1, "one change, one callback");
        for failure in [false, true] {
            *answer.lock().unwrap() = Err(failure);
            let before = d.lookups();
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(d.lookups(), before, "no lookup succeeded");
            assert_eq!(keys(&d), ["tcp@10.0.0.1:9000", "tcp@10.0.0.2:9000"], "the last list is kept");
        }
        *answer.lock().unwrap() = Ok(vec![]);
        wait_for(&[]);
        // Unchanged answers publish nothing.
        let v = d.version();
        let n = d.lookups();
        while d.lookups() < n + 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(d.version(), v);
    }
}
