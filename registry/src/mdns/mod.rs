//! Multicast DNS, in Go's layout (`serverplugin.NewMDNSRegisterPlugin` and
//! `client.NewMDNSDiscovery`, over github.com/grandcat/zeroconf): no registry process,
//! servers answer queries on the local link themselves.
//!
//! # Go's layout
//!
//! * Service name `_rpcxservices.<domain>` (domain `local.` by default; note: **no**
//!   `._tcp`, so DNS-SD libraries that insist on `_tcp`/`_udp`, such as `mdns-sd`,
//!   cannot speak it), one instance per server, `<instance>._rpcxservices.local.`, the
//!   instance being the host name (`os.Hostname()`).
//! * A browse (a PTR query for the service name) is answered with the PTR record, and
//!   as additional records the instance's SRV (port = the advertised address's port,
//!   target `<host>.local.`), its TXT and the host's A records (TTL 120 s); the other
//!   records carry the TTL (zeroconf's default is 3200 s). A server announces itself on
//!   start (SRV, TXT, PTR, the DNS-SD `_services._dns-sd._udp` PTR and A, cache-flush
//!   set on SRV, TXT and A), re-announces every update interval (Go re-sends its TXT),
//!   and says goodbye on shutdown: the same records with TTL 0.
//! * With `publish_rates(true)` on the server (Go's `Metrics` on the plugin) every
//!   update tick sets `calls` and `connections` in each service's metadata
//!   (`metadata_with_rates`, as Go's `url.Values.Encode`) before re-announcing; rates that
//!   would push the list past one TXT string keep the last TXT.
//! * **One TXT string for all services of the server**:
//!   `url.QueryEscape(json.Marshal([{"service":…,"meta":…,"service_address":…}]))`
//!   (`meta` left out when empty, `&<>` escaped as `\u0026`… as Go's encoder does). A TXT
//!   string holds at most 255 bytes, so a registration whose escaped list is longer is
//!   refused with [`RegistryError::Config`] (Go's zeroconf fails to pack it and stops
//!   answering).
//! * A client browses, takes the first TXT string of each instance, unescapes and
//!   decodes it, and lists `service_address` with `meta` as the server's metadata.
//!
//! # Where we differ from Go, on purpose
//!
//! * **Discovery lists only the service it was asked for.** Go's `MDNSDiscovery` lists
//!   every `service_address` of every TXT, whatever the service, so an XClient for
//!   `Arith` would call a server that only serves `Echo`.
//! * **Records expire with their TTL**: an instance is listed until its TXT's TTL passes
//!   without a refresh (a query answered, an announcement), and a goodbye (TTL 0) removes
//!   it at once. Go browses for `timeout` every `watchInterval` and lists what answered.
//!   Between refreshes the last list is kept; a quiet network does not empty it.
//! * The TTL is configurable ([`MdnsConfig::ttl`]); a short one makes a killed server
//!   disappear quickly at the cost of more traffic. For servers whose TTL we do not
//!   choose (Go's: 3200 s), [`MdnsConfig::evict_unanswered`] drops an instance that
//!   stopped answering queries.
//! * Changes arriving within 20 ms of each other are published as one update, and
//!   subscribers hear of a change only when the list really changed.
//! * **IPv4 only** (224.0.0.251:5353); Go's zeroconf also joins ff02::fb. Go's browsers
//!   and servers speak IPv4 too, so they interoperate.
//! * Several servers on one host need distinct instance names
//!   ([`MdnsConfig::instance`]): mDNS caches key records by name, and Go would publish
//!   every server of a host under the same one.
//!
//! DNS messages are encoded and decoded by `hickory-proto` (default features off, `std`
//! only), behind the small types of the private `packet` module.
//! A peer's packet is untrusted: packets, names, records and the number of instances
//! are bounded before and after the crate parses them, junk is ignored and logged (`tracing` warnings, at most one per 10 s
//! with a count of the rest), and nothing panics.
//! A responder sends each kind of answer at most once per 200 ms (a question inside
//! that gap is answered once when it ends), so a query flood does not become an answer
//! flood. mDNS has no authentication, though: anything on the link can announce a server, as
//! with Go's plugin, so use it only on links you trust.
//! Responder and browser are plain threads with std UDP sockets (SO_REUSEADDR and
//! SO_REUSEPORT on port 5353, shared with other mDNS stacks on the host), so tokio,
//! smol and rpcx-std servers and XClients use them alike.
//!
//! # Tests never multicast on a real network
//!
//! The tests, the Go interop tests and the example run in a network namespace of their
//! own with only a loopback interface (see `mdns::testing`, feature `test-support`), and
//! multicast through 127.0.0.1 ([`MdnsConfig::interface`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use rpcx_registry::mdns::{MdnsConfig, MdnsDiscovery, MdnsRegistrar};
//! use rpcx_tokio::core::service::{Context, Router, Service};
//! use std::sync::Arc;
//!
//! let config = MdnsConfig::new();
//! let router = Router::new().service(
//!     Service::new("Arith").method("Mul", |_c: Context, (a, b): (i64, i64)| async move { Ok(a * b) }),
//! );
//! let server = rpcx_tokio::Server::new(router)
//!     .registrar(MdnsRegistrar::new(config.clone())?)
//!     .advertise_address("10.0.0.5")
//!     .bind("tcp@0.0.0.0:8972")
//!     .await?;
//! let discovery = MdnsDiscovery::connect(config, "Arith").await?;
//! let xc = rpcx_tokio::XClient::new("Arith", Arc::new(discovery), Default::default());
//! let c: i64 = xc.call("Mul", &(6, 7)).await?;
//! server.shutdown(std::time::Duration::from_secs(5)).await; // says goodbye first
//! # let _ = c; Ok(()) }
//! ```

mod discovery;
mod packet;
mod registrar;
#[cfg(feature = "test-support")]
pub mod testing;

pub use discovery::MdnsDiscovery;
pub use registrar::MdnsRegistrar;

use crate::RegistryError;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

/// The mDNS group and port.
pub const MDNS_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353);
/// Go's service: `_rpcxservices`.
pub const SERVICE: &str = "_rpcxservices";
/// The most instances a discovery keeps track of (a hostile network cannot grow it
/// further).
pub const MAX_INSTANCES: usize = 1024;

/// The link, the names and the timings. Cheap to clone; one config serves registrars
/// and discoveries.
#[derive(Debug, Clone)]
pub struct MdnsConfig {
    domain: String,
    instance: Option<String>,
    update_interval: Duration,
    query_interval: Duration,
    browse_timeout: Duration,
    evict_unanswered: u32,
    ttl: Duration,
    interface: Ipv4Addr,
    op_timeout: Duration,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl MdnsConfig {
    /// Defaults: domain `local.`, instance the host name, records with TTL 3200 s
    /// (zeroconf's), re-announced every 60 s, a discovery query every 10 s, a discovery
    /// waiting up to 1 s for the first answers, multicast on the kernel's choice of
    /// interface, 5 s per socket operation.
    pub fn new() -> Self {
        MdnsConfig {
            domain: "local.".to_owned(),
            instance: None,
            update_interval: Duration::from_secs(60),
            query_interval: Duration::from_secs(10),
            browse_timeout: Duration::from_secs(1),
            evict_unanswered: 0,
            ttl: Duration::from_secs(3200),
            interface: Ipv4Addr::UNSPECIFIED,
            op_timeout: Duration::from_secs(5),
        }
    }

    /// The domain (Go's `domain` argument; `local.` when empty).
    #[must_use]
    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = if domain.is_empty() { "local.".to_owned() } else { domain.to_owned() };
        self
    }

    /// The instance name a registrar publishes (default: the host name).
    #[must_use]
    pub fn instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.to_owned());
        self
    }

    /// How often a registrar re-announces its records (Go's `UpdateInterval`).
    #[must_use]
    pub fn update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }

    /// How often a discovery queries (Go's `watchInterval`).
    #[must_use]
    pub fn query_interval(mut self, d: Duration) -> Self {
        self.query_interval = d;
        self
    }

    /// How long [`MdnsDiscovery::connect`] waits for the first answers (Go's
    /// `timeout`); it completes earlier as soon as a server of the service answered.
    #[must_use]
    pub fn browse_timeout(mut self, d: Duration) -> Self {
        self.browse_timeout = d;
        self
    }

    /// Drop an instance from a discovery once it left `queries` consecutive queries
    /// unanswered while its TTL still runs (RFC 6762 §10.5, passive observation of
    /// failures): a crashed Go server, whose records carry zeroconf's 3200 s TTL, is then
    /// gone after `queries` query intervals. 0 (the default) relies on TTLs alone, which
    /// keeps the last list through a network outage of up to the TTL.
    #[must_use]
    pub fn evict_unanswered(mut self, queries: u32) -> Self {
        self.evict_unanswered = queries;
        self
    }

    /// The TTL of the records a registrar publishes (whole seconds, at least 1 s): how
    /// long a crashed server stays listed.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The local IPv4 address of the interface to multicast on and join the group on
    /// (default `0.0.0.0`: the kernel's choice; `127.0.0.1` in the tests' namespaces).
    #[must_use]
    pub fn interface(mut self, addr: Ipv4Addr) -> Self {
        self.interface = addr;
        self
    }

    /// The bound on one socket operation (a send).
    #[must_use]
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// `_rpcxservices.<domain>.`
    fn service_name(&self) -> String {
        format!("{SERVICE}.{}.", self.domain.trim_matches('.'))
    }

    fn ttl_secs(&self) -> u32 {
        u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX)
    }

    fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: String| Err(RegistryError::Config(m));
        let probe = packet::Message::query(&self.service_name(), packet::TYPE_PTR);
        if self.domain.trim_matches('.').is_empty() || probe.encode().is_err() {
            return bad(format!("the mDNS domain {:?} is not a valid DNS name", self.domain));
        }
        if let Some(i) = &self.instance {
            let name = format!("{}.{}", i.trim_matches('.'), self.service_name());
            if i.trim_matches('.').is_empty() || packet::Message::query(&name, packet::TYPE_SRV).encode().is_err() {
                return bad(format!("the mDNS instance {i:?} is not a valid DNS label"));
            }
        }
        if self.ttl < Duration::from_secs(1) {
            return bad("the mDNS record TTL must be at least 1 s".to_owned());
        }
        for (what, d) in [
            ("update interval", self.update_interval),
            ("query interval", self.query_interval),
            ("operation timeout", self.op_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("the mDNS {what} must be positive"));
            }
        }
        if self.interface.is_multicast() || self.interface.is_broadcast() {
            return bad(format!("{} is not an interface address", self.interface));
        }
        Ok(())
    }
}

/// One element of Go's TXT list (field names and `omitempty` as Go's `serviceMeta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ServiceMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    meta: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    service_address: String,
}

/// Go's TXT string: the list as JSON (with Go's HTML escapes), query-escaped.
fn encode_txt(services: &[ServiceMeta]) -> String {
    // Serializing plain strings cannot fail.
    let json = serde_json::to_string(services).unwrap_or_else(|_| "[]".to_owned());
    let mut go = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '&' => go.push_str("\\u0026"),
            '<' => go.push_str("\\u003c"),
            '>' => go.push_str("\\u003e"),
            '\u{2028}' => go.push_str("\\u2028"),
            '\u{2029}' => go.push_str("\\u2029"),
            c => go.push(c),
        }
    }
    query_escape(&go)
}

/// Go's TXT string read back: unescaped and decoded; `None` if it is not one.
fn decode_txt(txt: &[u8]) -> Option<Vec<ServiceMeta>> {
    let json = query_unescape(txt)?;
    serde_json::from_slice(&json).ok()
}

/// Go's `url.QueryEscape`: unreserved bytes as they are, space as `+`, the rest `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`: `+` as space, `%XX` decoded; `None` on a bad escape.
fn query_unescape(s: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'%' => {
                let (h, l) = (hex(*s.get(i + 1)?)?, hex(*s.get(i + 2)?)?);
                out.push(h << 4 | l);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The host name, as Go's `os.Hostname()` reads it on Linux (`/proc/sys/kernel/hostname`,
/// the `uname` node name).
fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = raw.trim();
    (!name.is_empty() && name.len() <= 253).then(|| name.to_owned())
}

/// Warnings about a peer's junk, at most one per [`JunkLog::EVERY`] with the count of
/// those left out since (a hostile peer cannot flood the log).
#[derive(Debug, Default)]
struct JunkLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl JunkLog {
    const EVERY: Duration = Duration::from_secs(10);

    /// Log `what` about `from` unless a warning went out within the last period;
    /// whether it was logged.
    fn warn(&mut self, from: SocketAddr, what: &dyn std::fmt::Display) -> bool {
        self.warn_at(std::time::Instant::now(), from, what)
    }

    fn warn_at(&mut self, now: std::time::Instant, from: SocketAddr, what: &dyn std::fmt::Display) -> bool {
        if self.last.is_some_and(|t| now < t + Self::EVERY) {
            self.suppressed += 1;
            return false;
        }
        tracing::warn!(%from, suppressed = self.suppressed, "ignoring mDNS junk: {what}");
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

/// A UDP socket on port 5353 shared with the host's other mDNS stacks, in the group on
/// `interface`, multicasting through it with loopback on and TTL 255.
fn open_socket(config: &MdnsConfig) -> Result<UdpSocket, RegistryError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let connect = |e: std::io::Error| RegistryError::Connect { endpoints: MDNS_GROUP.to_string(), source: Box::new(e) };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(connect)?;
    socket.set_reuse_address(true).map_err(connect)?;
    socket.set_reuse_port(true).map_err(connect)?;
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_GROUP.port())).into())
        .map_err(connect)?;
    socket.join_multicast_v4(MDNS_GROUP.ip(), &config.interface).map_err(connect)?;
    if !config.interface.is_unspecified() {
        socket.set_multicast_if_v4(&config.interface).map_err(connect)?;
    }
    socket.set_multicast_loop_v4(true).map_err(connect)?;
    socket.set_multicast_ttl_v4(255).map_err(connect)?;
    socket.set_write_timeout(Some(config.op_timeout)).map_err(connect)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_is_gos_escaped_json_and_reads_back() {
        let list = vec![
            ServiceMeta {
                service: "Arith".into(),
                meta: "weight=10&group=a".into(),
                service_address: "tcp@127.0.0.1:8972".into(),
            },
            ServiceMeta { service: "Echo".into(), meta: String::new(), service_address: "tcp@127.0.0.1:8972".into() },
        ];
        let txt = encode_txt(&list);
        // What Go's url.QueryEscape(json.Marshal(...)) gives for the same list.
        assert_eq!(
            txt,
            "%5B%7B%22service%22%3A%22Arith%22%2C%22meta%22%3A%22weight%3D10%5Cu0026group%3Da%22%2C%22service_address%22%3A%22tcp%40127.0.0.1%3A8972%22%7D%2C%7B%22service%22%3A%22Echo%22%2C%22service_address%22%3A%22tcp%40127.0.0.1%3A8972%22%7D%5D"
        );
        assert_eq!(decode_txt(txt.as_bytes()), Some(list));
        assert_eq!(query_unescape(b"a+b%41"), Some(b"a bA".to_vec()));
        for junk in [&b"%"[..], b"%4", b"%zz", b"[", b"%5B%7B", b"{}", b"\xff"] {
            assert_eq!(decode_txt(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn junk_warnings_are_rate_limited() {
        let mut log = JunkLog::default();
        let from: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let t0 = std::time::Instant::now();
        assert!(log.warn_at(t0, from, &"first"));
        assert!((1..100).all(|i| !log.warn_at(t0 + Duration::from_millis(i), from, &"flood")));
        assert_eq!(log.suppressed, 99);
        assert!(log.warn_at(t0 + JunkLog::EVERY, from, &"later"));
        assert_eq!(log.suppressed, 0);
    }

    #[test]
    fn configs_are_validated() {
        assert!(MdnsConfig::new().validate().is_ok());
        assert_eq!(MdnsConfig::new().domain("").service_name(), "_rpcxservices.local.");
        for bad in [
            MdnsConfig::new().domain("."),
            MdnsConfig::new().domain("a..b"),
            MdnsConfig::new().instance(""),
            MdnsConfig::new().instance(&"x".repeat(64)),
            MdnsConfig::new().ttl(Duration::from_millis(500)),
            MdnsConfig::new().query_interval(Duration::ZERO),
            MdnsConfig::new().interface(Ipv4Addr::new(224, 0, 0, 251)),
        ] {
            assert!(matches!(bad.validate(), Err(RegistryError::Config(_))), "{bad:?}");
        }
        assert!(hostname().is_some());
    }
}
