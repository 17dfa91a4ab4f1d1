//! The browser: one thread per discovery querying every query interval and following
//! answers and announcements, with TTLs.

use super::packet::{self, Message, RData};
use super::{MAX_INSTANCES, MdnsConfig};
use crate::RegistryError;
use rpcx_core::govern::{Instance, MultiDiscovery, ServerKey};
use rpcx_core::registry::{Completer, Completion, completion};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// The longest the browser sleeps before looking at its stop channel.
const POLL: Duration = Duration::from_millis(50);
/// Changes within this window after the first are published as one update.
const COALESCE: Duration = Duration::from_millis(20);

/// The servers of one service, found by mDNS (stopped when this is dropped).
pub struct MdnsDiscovery {
    list: Arc<MultiDiscovery>,
    _stop: mpsc::Sender<()>,
}

impl fmt::Debug for MdnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdnsDiscovery").field("list", &self.list).finish_non_exhaustive()
    }
}

impl MdnsDiscovery {
    /// Browse for the servers of `service` (the rpcx service path, e.g. `Arith`). The
    /// completion resolves once a server answered or after the browse timeout, with
    /// what was found (possibly nothing); it fails only if the socket cannot be set up.
    pub fn connect(config: MdnsConfig, service: &str) -> Completion<MdnsDiscovery> {
        if let Err(e) = config.validate() {
            return Completion::ready(Err(e));
        }
        if service.is_empty() {
            return Completion::ready(Err(RegistryError::Config("mDNS discovery needs a service".to_owned())));
        }
        let (tx, rx) = completion();
        let (stop_tx, stop_rx) = mpsc::channel();
        let list = Arc::new(MultiDiscovery::new([]));
        let discovery = MdnsDiscovery { list: list.clone(), _stop: stop_tx };
        let browser = Browser {
            service_name: config.service_name(),
            config,
            service: service.to_owned(),
            list,
            instances: HashMap::new(),
            published: Vec::new(),
            dirty: None,
            queries: 0,
            junk: super::JunkLog::default(),
        };
        let spawned = std::thread::Builder::new()
            .name("rpcx-mdns-discovery".into())
            .stack_size(packet::DECODE_STACK)
            .spawn(move || browser.run(tx, discovery, stop_rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the mDNS discovery thread");
        }
        rx
    }
}

/// What one instance publishes for our service, and until when.
#[derive(Debug)]
struct Entry {
    servers: Vec<(String, String)>,
    expires: Instant,
    /// How many queries had been sent when it last answered or announced.
    seen_at_query: u64,
}

struct Browser {
    config: MdnsConfig,
    service_name: String,
    service: String,
    list: Arc<MultiDiscovery>,
    /// By lower-cased instance name.
    instances: HashMap<String, Entry>,
    published: Vec<(String, String)>,
    /// When the first unpublished change happened.
    dirty: Option<Instant>,
    /// Queries sent so far.
    queries: u64,
    junk: super::JunkLog,
}

impl Browser {
    fn run(mut self, first: Completer<MdnsDiscovery>, discovery: MdnsDiscovery, stop: mpsc::Receiver<()>) {
        let socket = match super::open_socket(&self.config) {
            Ok(s) => s,
            Err(e) => return first.complete(Err(e)),
        };
        let query = Message::query(&self.service_name, packet::TYPE_PTR);
        let group = SocketAddr::V4(super::MDNS_GROUP);
        let start = Instant::now();
        let mut pending = Some((first, discovery));
        let mut next_query = start;
        let mut buf = vec![0u8; packet::MAX_PACKET];
        loop {
            if let Err(mpsc::TryRecvError::Disconnected) = stop.try_recv() {
                return;
            }
            let now = Instant::now();
            if now >= next_query {
                if self.evict_unanswered() {
                    self.dirty.get_or_insert(now);
                }
                send_query(&socket, &query, group);
                self.queries += 1;
                // Two quick queries at start (a lost datagram), then every interval.
                next_query = if now < start + Duration::from_millis(100) {
                    now + Duration::from_millis(250).min(self.config.query_interval)
                } else {
                    now + self.config.query_interval
                };
            }
            self.tick(now);
            if pending.is_some() && (!self.published.is_empty() || now >= start + self.config.browse_timeout) {
                if let Some((first, discovery)) = pending.take() {
                    first.complete(Ok(discovery));
                }
            }
            let next_expiry = self.instances.values().map(|e| e.expires).min();
            let mut deadline = next_expiry.map_or(next_query, |e| e.min(next_query));
            if let Some(t) = self.dirty {
                deadline = deadline.min(t + COALESCE);
            }
            let wait = deadline.saturating_duration_since(now).clamp(Duration::from_millis(1), POLL);
            let _ = socket.set_read_timeout(Some(wait));
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    if self.apply(&buf[..n], from, now) {
                        self.dirty.get_or_insert(now);
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "mDNS receive failed");
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    /// Expire what is due and publish a change whose coalescing window has passed.
    fn tick(&mut self, now: Instant) {
        if self.expire(now) {
            self.dirty.get_or_insert(now);
        }
        if self.dirty.is_some_and(|t| now >= t + COALESCE) {
            self.dirty = None;
            self.publish();
        }
    }

    /// Before a query: drop the instances that left the last `evict_unanswered` queries
    /// unanswered (each had a full interval for its answer); whether any was dropped.
    fn evict_unanswered(&mut self) -> bool {
        let n = u64::from(self.config.evict_unanswered);
        if n == 0 {
            return false;
        }
        let queries = self.queries;
        let before = self.instances.len();
        self.instances.retain(|name, e| {
            let keep = queries - e.seen_at_query < n;
            if !keep {
                tracing::debug!(instance = %name, "mDNS instance stopped answering");
            }
            keep
        });
        self.instances.len() != before
    }

    /// Drop the instances whose TTL passed; whether any was dropped.
    fn expire(&mut self, now: Instant) -> bool {
        let before = self.instances.len();
        self.instances.retain(|name, e| {
            let keep = e.expires > now;
            if !keep {
                tracing::debug!(instance = %name, "mDNS record expired");
            }
            keep
        });
        self.instances.len() != before
    }

    /// Apply one packet; whether the instances changed.
    fn apply(&mut self, wire: &[u8], from: SocketAddr, now: Instant) -> bool {
        let msg = match Message::decode(wire) {
            Ok(m) => m,
            Err(e) => {
                self.junk.warn(from, &format_args!("a malformed packet ({e})"));
                return false;
            }
        };
        if !msg.is_response() {
            return false;
        }
        let mut changed = false;
        for r in msg.records() {
            let instance = match &r.data {
                RData::Ptr(target) if packet::same_name(&r.name, &self.service_name) => target,
                RData::Srv { .. } | RData::Txt(_) => &r.name,
                _ => continue,
            };
            if !self.is_instance(instance) {
                continue;
            }
            let key = instance.to_ascii_lowercase();
            if r.ttl == 0 {
                // Goodbye.
                changed |= self.instances.remove(&key).is_some();
                continue;
            }
            let RData::Txt(strings) = &r.data else { continue };
            // Go reads the first string only.
            let Some(list) = strings.first().and_then(|s| super::decode_txt(s)) else {
                self.junk.warn(from, &format_args!("the TXT of {instance} is not Go's rpcx list"));
                continue;
            };
            let ours: Vec<_> = list.into_iter().filter(|s| s.service == self.service).collect();
            let before = ours.len();
            // A key of no network the runtimes dial is junk (Go would hand it to its
            // XClient).
            let mut servers: Vec<(String, String)> = ours
                .into_iter()
                .filter(|s| ServerKey::new(&s.service_address).server_addr().is_ok())
                .map(|s| (s.service_address, s.meta))
                .collect();
            if servers.len() != before {
                self.junk.warn(from, &format_args!("{instance} lists server keys that are not addresses"));
            }
            servers.sort();
            servers.dedup_by(|a, b| a.0 == b.0);
            let expires =
                now.checked_add(Duration::from_secs(u64::from(r.ttl))).unwrap_or(now + Duration::from_secs(86_400));
            let full = self.instances.len() >= MAX_INSTANCES;
            match self.instances.get_mut(&key) {
                // No longer serving our service (Go's UnregisterAll empties the list).
                Some(_) if servers.is_empty() => {
                    self.instances.remove(&key);
                    changed = true;
                }
                Some(e) => {
                    changed |= e.servers != servers;
                    e.servers = servers;
                    e.expires = expires;
                    e.seen_at_query = self.queries;
                }
                // Instances of other services take no room.
                None if servers.is_empty() => {}
                None if full => {
                    self.junk.warn(from, &format_args!("more than {MAX_INSTANCES} instances; {instance} left out"));
                }
                None => {
                    changed = true;
                    self.instances.insert(key, Entry { servers, expires, seen_at_query: self.queries });
                }
            }
        }
        changed
    }

    /// `<label(s)>._rpcxservices.<domain>.`
    fn is_instance(&self, name: &str) -> bool {
        let (name, suffix) = (name.as_bytes(), self.service_name.as_bytes());
        name.len() > suffix.len() + 1
            && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            && name[name.len() - suffix.len() - 1] == b'.'
    }

    /// Publish the union of the instances' servers if it changed (by key, sorted; the
    /// first instance listing a key wins).
    fn publish(&mut self) {
        let mut all: Vec<(String, String)> = self.instances.values().flat_map(|e| e.servers.iter().cloned()).collect();
        all.sort();
        all.dedup_by(|a, b| a.0 == b.0);
        if all != self.published {
            tracing::debug!(service = %self.service, servers = all.len(), "mDNS list changed");
            self.list.update(all.iter().map(|(k, m)| Instance::new(k.as_str(), m)));
            self.published = all;
        }
    }
}

fn send_query(socket: &UdpSocket, query: &Message, group: SocketAddr) {
    match query.encode() {
        Ok(wire) => {
            if let Err(e) = socket.send_to(&wire, group) {
                tracing::warn!(error = %e, "mDNS query failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode the mDNS query"),
    }
}

discovery_through!(MdnsDiscovery, list);

#[cfg(test)]
mod tests {
    use super::super::{ServiceMeta, encode_txt};
    use super::*;
    use packet::Record;
    use rpcx_core::govern::Discovery;

    fn browser() -> Browser {
        let config = MdnsConfig::new();
        Browser {
            service_name: config.service_name(),
            config,
            service: "Arith".into(),
            list: Arc::new(MultiDiscovery::new([])),
            instances: HashMap::new(),
            published: Vec::new(),
            dirty: None,
            queries: 0,
            junk: crate::mdns::JunkLog::default(),
        }
    }

    fn txt(instance: &str, ttl: u32, services: &[(&str, &str)]) -> Vec<u8> {
        let list: Vec<ServiceMeta> = services
            .iter()
            .map(|(s, a)| ServiceMeta { service: (*s).into(), meta: "w=1".into(), service_address: (*a).into() })
            .collect();
        let name = format!("{instance}._rpcxservices.local.");
        let r = Record::new(&name, true, ttl, RData::Txt(vec![encode_txt(&list).into_bytes()]));
        Message::response(vec![r], vec![]).encode().unwrap()
    }

    fn keys(b: &Browser) -> Vec<&str> {
        b.published.iter().map(|(k, _)| k.as_str()).collect()
    }

    const FROM: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 5353));

    #[test]
    fn only_our_service_is_listed_and_ttls_and_goodbyes_are_honoured() {
        let mut b = browser();
        let t0 = Instant::now();
        assert!(b.apply(&txt("a", 2, &[("Arith", "tcp@1.1.1.1:1"), ("Echo", "tcp@1.1.1.1:1")]), FROM, t0));
        assert!(!b.apply(&txt("b", 2, &[("Echo", "tcp@2.2.2.2:2")]), FROM, t0), "only Echo: not kept");
        assert!(b.apply(&txt("c", 10, &[("Arith", "tcp@3.3.3.3:3")]), FROM, t0));
        assert_eq!(b.instances.len(), 2);
        b.publish();
        assert_eq!(keys(&b), ["tcp@1.1.1.1:1", "tcp@3.3.3.3:3"]);
        assert_eq!(b.list.snapshot().servers[0].metadata().raw(), "w=1");
        // A refresh moves a's expiry to t0 + 3 s.
        assert!(!b.apply(&txt("A", 2, &[("Arith", "tcp@1.1.1.1:1")]), FROM, t0 + Duration::from_secs(1)));
        assert!(!b.expire(t0 + Duration::from_millis(2500)), "a was refreshed");
        assert!(b.expire(t0 + Duration::from_millis(3500)));
        b.publish();
        assert_eq!(keys(&b), ["tcp@3.3.3.3:3"]);
        // A goodbye (PTR with TTL 0) removes at once.
        let bye = Record::new("_rpcxservices.local.", false, 0, RData::Ptr("c._rpcxservices.local.".into()));
        assert!(b.apply(&Message::response(vec![bye], vec![]).encode().unwrap(), FROM, t0));
        b.publish();
        assert!(keys(&b).is_empty());
        // An instance whose list stops naming our service (Go's UnregisterAll) goes.
        assert!(b.apply(&txt("d", 60, &[("Arith", "tcp@4.4.4.4:4")]), FROM, t0));
        assert!(b.apply(&txt("d", 60, &[]), FROM, t0));
        assert!(b.instances.is_empty());
    }

    #[test]
    fn instances_that_stop_answering_are_evicted_when_asked() {
        let mut b = browser();
        let t0 = Instant::now();
        assert!(!b.evict_unanswered(), "off by default");
        b.config = b.config.clone().evict_unanswered(2);
        // Query 1 goes out; a and z answer it.
        b.queries = 1;
        b.apply(&txt("a", 3200, &[("Arith", "tcp@1.1.1.1:1")]), FROM, t0);
        b.apply(&txt("z", 3200, &[("Arith", "tcp@9.9.9.9:9")]), FROM, t0);
        // Query 2: only z answers.
        assert!(!b.evict_unanswered());
        b.queries = 2;
        b.apply(&txt("z", 3200, &[("Arith", "tcp@9.9.9.9:9")]), FROM, t0);
        // Before query 3: a missed one query, not yet two.
        assert!(!b.evict_unanswered());
        b.queries = 3;
        b.apply(&txt("z", 3200, &[("Arith", "tcp@9.9.9.9:9")]), FROM, t0);
        // Before query 4: a missed queries 2 and 3; its TTL has most of an hour left.
        assert!(b.evict_unanswered());
        b.publish();
        assert_eq!(keys(&b), ["tcp@9.9.9.9:9"]);
    }

    #[test]
    fn a_burst_of_changes_is_one_update() {
        let mut b = browser();
        let t0 = Instant::now();
        for (i, at) in [0u64, 5, 10].iter().enumerate() {
            let now = t0 + Duration::from_millis(*at);
            if b.apply(&txt(&format!("i{i}"), 60, &[("Arith", &format!("tcp@10.0.0.{i}:1"))]), FROM, now) {
                b.dirty.get_or_insert(now);
            }
            b.tick(now);
        }
        assert_eq!(b.list.version(), 0, "still inside the window");
        b.tick(t0 + COALESCE);
        assert_eq!((b.list.version(), b.published.len()), (1, 3), "one update with all three");
        b.tick(t0 + Duration::from_secs(1));
        assert_eq!(b.list.version(), 1, "nothing new");
        // Expiry is published too, once.
        b.tick(t0 + Duration::from_secs(61));
        b.tick(t0 + Duration::from_secs(61) + COALESCE);
        assert_eq!((b.list.version(), b.published.len()), (2, 0));
    }

    #[test]
    fn junk_is_ignored_and_instances_are_bounded() {
        let mut b = browser();
        let t0 = Instant::now();
        let good = txt("a", 60, &[("Arith", "tcp@1.1.1.1:1")]);
        for n in 0..good.len() {
            assert!(!b.apply(&good[..n], FROM, t0), "truncated at {n}");
        }
        let junk_txt = |s: &[u8]| {
            let r = Record::new("x._rpcxservices.local.", false, 60, RData::Txt(vec![s.to_vec()]));
            Message::response(vec![r], vec![]).encode().unwrap()
        };
        for s in [&b""[..], b"%ZZ", b"%5B", b"not json", b"%7B%7D"] {
            assert!(!b.apply(&junk_txt(s), FROM, t0));
        }
        // Keys that are not addresses.
        for key in ["", "tcp@", "unix@", "bogus@1.2.3.4:5", "kcp@1.2.3.4:5"] {
            assert!(!b.apply(&txt("k", 60, &[("Arith", key)]), FROM, t0), "{key:?}");
        }
        // Other services' names, a query, a bare "_rpcxservices.local." TXT.
        let other = Record::new("a._http._tcp.local.", false, 60, RData::Txt(vec![b"%5B%5D".to_vec()]));
        let bare = Record::new("_rpcxservices.local.", false, 60, RData::Txt(vec![b"%5B%5D".to_vec()]));
        assert!(!b.apply(&Message::response(vec![other, bare], vec![]).encode().unwrap(), FROM, t0));
        assert!(!b.apply(&Message::query("_rpcxservices.local.", packet::TYPE_PTR).encode().unwrap(), FROM, t0));
        assert!(b.instances.is_empty());
        for i in 0..MAX_INSTANCES + 10 {
            b.apply(&txt(&format!("i{i}"), 60, &[("Arith", &format!("tcp@10.0.0.1:{}", i + 1))]), FROM, t0);
        }
        assert_eq!(b.instances.len(), MAX_INSTANCES);
    }
}
