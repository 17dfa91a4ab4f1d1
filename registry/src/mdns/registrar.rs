//! The responder: one thread per registration answering queries for the server's
//! records, announcing them, and saying goodbye.

use super::packet::{self, Message, RData, Record};
use super::{MdnsConfig, ServiceMeta};
use crate::RegistryError;
use rpcx_core::registry::{Completer, Completion, Rates, Registered, Registrar, Registration, completion};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest a responder sleeps before looking at its stop channel.
const POLL: Duration = Duration::from_millis(50);
/// A: A records use 120 s at most (RFC 6762 §10, as zeroconf).
const HOST_TTL: u32 = 120;

/// Publishes a server's services by answering mDNS queries (see the module docs).
#[derive(Debug, Clone)]
pub struct MdnsRegistrar {
    config: MdnsConfig,
}

impl MdnsRegistrar {
    /// A registrar publishing with `config`; fails on an invalid config.
    pub fn new(config: MdnsConfig) -> Result<Self, RegistryError> {
        config.validate()?;
        Ok(MdnsRegistrar { config })
    }
}

impl Registrar for MdnsRegistrar {
    fn register(&self, registration: Registration) -> Completion<Box<dyn Registered>> {
        let records = match Records::new(&self.config, &registration) {
            Ok(r) => r,
            Err(e) => return Completion::ready(Err(e)),
        };
        let (tx, rx) = completion();
        let config = self.config.clone();
        let address = registration.address().to_string();
        let spawned = std::thread::Builder::new()
            .name("rpcx-mdns-responder".into())
            .stack_size(packet::DECODE_STACK)
            .spawn(move || responder(config, records, address, tx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the mDNS responder thread");
        }
        rx
    }
}

/// A live mDNS registration: unregistering sends the goodbye.
#[derive(Debug)]
struct MdnsRegistered {
    address: String,
    stop: mpsc::Sender<Completer<()>>,
}

impl Registered for MdnsRegistered {
    fn unregister(self: Box<Self>) -> Completion<()> {
        let (tx, rx) = completion();
        // If the responder is gone the completer comes back in the error and is
        // dropped: the caller sees `Stopped`.
        let _ = self.stop.send(tx);
        tracing::debug!(address = %self.address, "mDNS unregister requested");
        rx
    }
}

/// The names and records of one registration.
#[derive(Debug)]
struct Records {
    service: String,
    instance: String,
    dnssd: String,
    host: String,
    port: u16,
    txt: Vec<u8>,
    addrs: Vec<Ipv4Addr>,
    ttl: u32,
    /// The list as registered, and the rates to add to each metadata on refreshes.
    services: Vec<ServiceMeta>,
    rates: Option<Rates>,
}

impl Records {
    fn new(config: &MdnsConfig, registration: &Registration) -> Result<Self, RegistryError> {
        let address = registration.address();
        let hostport = address.address();
        let port = hostport
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| RegistryError::Config(format!("mDNS publishes a port: {address} has none")))?;
        let list: Vec<ServiceMeta> = registration
            .services()
            .iter()
            .map(|s| ServiceMeta {
                service: s.name.clone(),
                meta: s.metadata.clone(),
                service_address: address.to_string(),
            })
            .collect();
        let txt = super::encode_txt(&list);
        if txt.len() > 255 {
            return Err(RegistryError::Config(format!(
                "Go's mDNS layout holds all services in one TXT string of at most 255 bytes; \
                 these services need {} (fewer services or shorter metadata)",
                txt.len()
            )));
        }
        let rates = registration.rates().cloned();
        let host_label = super::hostname().unwrap_or_else(|| "rpcx".to_owned());
        let instance_label = config.instance.clone().unwrap_or_else(|| host_label.clone());
        let domain = config.domain.trim_matches('.');
        let service = config.service_name();
        let host = format!("{}.{domain}.", host_label.trim_matches('.'));
        let records = Records {
            instance: format!("{}.{service}", instance_label.trim_matches('.')),
            dnssd: format!("_services._dns-sd._udp.{domain}."),
            service,
            host,
            port,
            txt: txt.into_bytes(),
            addrs: host_addresses(config, hostport),
            ttl: config.ttl_secs(),
            services: list,
            rates,
        };
        // Every name must fit (a long host name, say).
        records.announcement(records.ttl).encode().map_err(|e| {
            RegistryError::Config(format!("the mDNS records of {} cannot be encoded: {e}", records.instance))
        })?;
        if records.addrs.is_empty() {
            tracing::warn!(address = %address, "no IPv4 address to publish in A records; Go's browsers need one");
        }
        Ok(records)
    }

    /// With rates, Go's update tick: every service's metadata with the current `calls`
    /// and `connections` (`metadata_with_rates`), in a new TXT. Whether the TXT changed;
    /// a list that would no longer fit one TXT string keeps the last one.
    fn refresh_txt(&mut self) -> bool {
        let Some(rates) = &self.rates else { return false };
        let (calls, conns) = rates.at(std::time::Instant::now());
        let list: Vec<ServiceMeta> = self
            .services
            .iter()
            .map(|s| ServiceMeta {
                meta: rpcx_core::registry::metadata_with_rates(&s.meta, calls, conns).unwrap_or_else(|| s.meta.clone()),
                ..s.clone()
            })
            .collect();
        let txt = super::encode_txt(&list).into_bytes();
        if txt.len() > 255 {
            tracing::warn!(instance = %self.instance, "the TXT list with rates exceeds 255 bytes; keeping the last one");
            return false;
        }
        let changed = txt != self.txt;
        self.txt = txt;
        changed
    }

    fn srv(&self, ttl: u32, flush: bool) -> Record {
        Record::new(&self.instance, flush, ttl, RData::Srv { port: self.port, target: self.host.clone() })
    }

    fn txt(&self, ttl: u32, flush: bool) -> Record {
        Record::new(&self.instance, flush, ttl, RData::Txt(vec![self.txt.clone()]))
    }

    fn ptr(&self, ttl: u32) -> Record {
        Record::new(&self.service, false, ttl, RData::Ptr(self.instance.clone()))
    }

    fn a(&self, ttl: u32, flush: bool) -> impl Iterator<Item = Record> + '_ {
        let ttl = ttl.min(HOST_TTL);
        self.addrs.iter().map(move |ip| Record::new(&self.host, flush, ttl, RData::A(*ip)))
    }

    /// zeroconf's announcement (and, with TTL 0, goodbye): SRV, TXT, PTR, the DNS-SD
    /// PTR and the A records as answers.
    fn announcement(&self, ttl: u32) -> Message {
        let mut answers = vec![
            self.srv(ttl, true),
            self.txt(ttl, true),
            self.ptr(ttl),
            Record::new(&self.dnssd, false, ttl, RData::Ptr(self.service.clone())),
        ];
        answers.extend(self.a(ttl, true));
        Message::response(answers, vec![])
    }

    /// The answer to a browse: the PTR, with SRV, TXT and A as additional records.
    fn browse_answer(&self) -> Message {
        let mut extra = vec![self.srv(self.ttl, false), self.txt(self.ttl, false)];
        extra.extend(self.a(self.ttl, false));
        Message::response(vec![self.ptr(self.ttl)], extra)
    }

    /// What one question asks of us, if anything.
    fn kind(&self, q: &packet::Question, query: &Message) -> Option<Kind> {
        let wants = |t: u16| q.qtype == t || q.qtype == packet::TYPE_ANY;
        if packet::same_name(&q.name, &self.service) && wants(packet::TYPE_PTR) {
            // Known-answer suppression (RFC 6762 §7.1): the asker has our PTR with
            // at least half its TTL left.
            let known = query.answers.iter().any(|r| {
                matches!(&r.data, RData::Ptr(p) if packet::same_name(p, &self.instance)) && r.ttl >= self.ttl / 2
            });
            return (!known).then_some(Kind::Browse);
        }
        if packet::same_name(&q.name, &self.instance) {
            return Some(Kind::Lookup);
        }
        if packet::same_name(&q.name, &self.dnssd) && wants(packet::TYPE_PTR) {
            return Some(Kind::Enumerate);
        }
        None
    }

    /// The answer of each kind, as zeroconf composes it.
    fn answer(&self, kind: Kind) -> Message {
        match kind {
            Kind::Browse => self.browse_answer(),
            Kind::Lookup => self.announcement(self.ttl),
            Kind::Enumerate => {
                let r = Record::new(&self.dnssd, false, self.ttl, RData::Ptr(self.service.clone()));
                Message::response(vec![r], vec![])
            }
        }
    }
}

/// The three questions a responder answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// PTR `_rpcxservices.<domain>`.
    Browse = 0,
    /// Anything about our instance name.
    Lookup = 1,
    /// PTR `_services._dns-sd._udp.<domain>`.
    Enumerate = 2,
}

const KINDS: [Kind; 3] = [Kind::Browse, Kind::Lookup, Kind::Enumerate];

/// Each kind of answer is sent at most once per [`MIN_GAP`](Limiter::MIN_GAP) (RFC
/// 6762 §6 asks for a second between multicasts of a record; a query flood must not
/// become an answer flood). A question arriving inside the gap is answered once when it
/// ends, by multicast, together with any others that arrived meanwhile.
#[derive(Debug, Default)]
struct Limiter {
    last: [Option<Instant>; 3],
    deferred: [bool; 3],
}

impl Limiter {
    const MIN_GAP: Duration = Duration::from_millis(200);

    /// Whether an answer of `kind` may go now (then it counts as sent); else it is
    /// deferred.
    fn offer(&mut self, kind: Kind, now: Instant) -> bool {
        let i = kind as usize;
        if self.last[i].is_some_and(|t| now < t + Self::MIN_GAP) {
            self.deferred[i] = true;
            return false;
        }
        self.last[i] = Some(now);
        true
    }

    /// The deferred answers due now (counted as sent).
    fn due(&mut self, now: Instant) -> Vec<Kind> {
        KINDS
            .into_iter()
            .filter(|k| {
                let i = *k as usize;
                let due = self.deferred[i] && self.last[i].is_none_or(|t| now >= t + Self::MIN_GAP);
                if due {
                    self.deferred[i] = false;
                    self.last[i] = Some(now);
                }
                due
            })
            .collect()
    }

    /// When the next deferred answer is due.
    fn next_due(&self) -> Option<Instant> {
        KINDS
            .into_iter()
            .filter(|k| self.deferred[*k as usize])
            .map(|k| self.last[k as usize].map_or_else(Instant::now, |t| t + Self::MIN_GAP))
            .min()
    }
}

/// The IPv4 addresses for A records: the advertised host if it is an IPv4 address,
/// else the configured interface's, else the kernel's source address towards the group.
fn host_addresses(config: &MdnsConfig, hostport: &str) -> Vec<Ipv4Addr> {
    let advertised = hostport.rsplit_once(':').and_then(|(h, _)| h.parse::<Ipv4Addr>().ok());
    if let Some(ip) = advertised.filter(|ip| !ip.is_unspecified()) {
        return vec![ip];
    }
    if !config.interface.is_unspecified() {
        return vec![config.interface];
    }
    let source = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect(super::MDNS_GROUP).map(|()| s))
        .and_then(|s| s.local_addr());
    match source {
        Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => vec![*a.ip()],
        _ => vec![],
    }
}

fn send(socket: &UdpSocket, msg: &Message, to: SocketAddr) {
    match msg.encode() {
        Ok(wire) => {
            if let Err(e) = socket.send_to(&wire, to) {
                tracing::warn!(error = %e, %to, "mDNS send failed");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode an mDNS message"),
    }
}

fn responder(config: MdnsConfig, mut records: Records, address: String, first: Completer<Box<dyn Registered>>) {
    let socket = match super::open_socket(&config) {
        Ok(s) => s,
        Err(e) => return first.complete(Err(e)),
    };
    let group = SocketAddr::V4(super::MDNS_GROUP);
    send(&socket, &records.announcement(records.ttl), group);
    let (stop_tx, stop) = mpsc::channel();
    first.complete(Ok(Box::new(MdnsRegistered { address: address.clone(), stop: stop_tx })));
    tracing::info!(%address, instance = %records.instance, "registered in mDNS");
    // A second announcement a second later (zeroconf sends two), then one every update
    // interval.
    let mut next_announce = Instant::now() + config.update_interval.min(Duration::from_secs(1));
    let mut buf = vec![0u8; packet::MAX_PACKET];
    let mut limiter = Limiter::default();
    let mut junk = super::JunkLog::default();
    loop {
        match stop.try_recv() {
            Ok(done) => {
                send(&socket, &records.announcement(0), group);
                tracing::info!(%address, "unregistered from mDNS (goodbye sent)");
                return done.complete(Ok(()));
            }
            // Dropped without unregistering: stop answering, the records expire.
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= next_announce {
            if records.refresh_txt() {
                tracing::debug!(%address, "mDNS TXT updated with rates");
            }
            send(&socket, &records.announcement(records.ttl), group);
            next_announce = now + config.update_interval;
        }
        for kind in limiter.due(now) {
            send(&socket, &records.answer(kind), group);
        }
        let deadline = limiter.next_due().map_or(next_announce, |t| t.min(next_announce));
        let wait = deadline.saturating_duration_since(now).clamp(Duration::from_millis(1), POLL);
        let _ = socket.set_read_timeout(Some(wait));
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => handle(&socket, &records, (&mut limiter, &mut junk), &buf[..n], from, group),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => {
                tracing::warn!(error = %e, "mDNS receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn handle(
    socket: &UdpSocket,
    records: &Records,
    (limiter, junk): (&mut Limiter, &mut super::JunkLog),
    wire: &[u8],
    from: SocketAddr,
    group: SocketAddr,
) {
    let query = match Message::decode(wire) {
        Ok(m) => m,
        Err(e) => {
            junk.warn(from, &format_args!("a malformed packet ({e})"));
            return;
        }
    };
    // Responses, and probes (queries with records in the authority section), as zeroconf.
    if query.is_response() || !query.authority.is_empty() {
        return;
    }
    let now = Instant::now();
    for q in &query.questions {
        if let Some(kind) = records.kind(q, &query) {
            if limiter.offer(kind, now) {
                send(socket, &records.answer(kind), if q.unicast { from } else { group });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcx_core::govern::ServerKey;
    use rpcx_core::registry::ServiceEntry;

    fn registration(services: &[(&str, &str)]) -> Registration {
        Registration::new(
            ServerKey::new("tcp@10.0.0.5:8972"),
            services.iter().map(|(n, m)| ServiceEntry { name: (*n).into(), metadata: (*m).into() }),
        )
    }

    #[test]
    fn records_are_zeroconfs() {
        let config = MdnsConfig::new().instance("node1").ttl(Duration::from_secs(30));
        let r = Records::new(&config, &registration(&[("Arith", "weight=1")])).unwrap();
        assert_eq!(r.instance, "node1._rpcxservices.local.");
        assert_eq!((r.port, r.addrs.as_slice()), (8972, &[Ipv4Addr::new(10, 0, 0, 5)][..]));
        let browse = r.browse_answer();
        assert_eq!(browse.answers, [Record::new("_rpcxservices.local.", false, 30, RData::Ptr(r.instance.clone()))]);
        assert_eq!(browse.additional.len(), 3);
        assert_eq!(browse.additional[2].ttl, 30, "A TTL is min(TTL, 120)");
        let bye = r.announcement(0);
        assert!(bye.answers.iter().all(|a| a.ttl == 0) && bye.answers.len() == 5);
        let q = Message::query("_RPCXSERVICES.local.", packet::TYPE_PTR);
        assert_eq!(r.kind(&q.questions[0], &q), Some(Kind::Browse));
        assert_eq!(r.answer(Kind::Browse), browse);
        // Known answer with enough TTL left: no answer.
        let mut known = q.clone();
        known.answers.push(r.ptr(20));
        assert_eq!(r.kind(&known.questions[0], &known), None);
        let other = Message::query("_http._tcp.local.", packet::TYPE_PTR);
        assert_eq!(r.kind(&other.questions[0], &other), None);
        let lookup = Message::query("node1._rpcxservices.local.", packet::TYPE_SRV);
        assert_eq!(r.kind(&lookup.questions[0], &lookup), Some(Kind::Lookup));
        let types = Message::query("_services._dns-sd._udp.local.", packet::TYPE_PTR);
        assert_eq!(r.kind(&types.questions[0], &types), Some(Kind::Enumerate));
    }

    #[test]
    fn a_query_flood_is_answered_at_most_once_per_gap() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let gap = Limiter::MIN_GAP;
        assert!(l.offer(Kind::Browse, t0));
        assert!(l.offer(Kind::Lookup, t0), "kinds are limited apart");
        // A thousand more browses inside the gap: one deferred answer.
        for i in 0..1000 {
            assert!(!l.offer(Kind::Browse, t0 + gap * i / 1000));
        }
        assert_eq!(l.next_due(), Some(t0 + gap));
        assert!(l.due(t0 + gap / 2).is_empty());
        assert_eq!(l.due(t0 + gap), [Kind::Browse]);
        assert!(l.due(t0 + gap * 3).is_empty() && l.next_due().is_none(), "sent once");
        assert!(!l.offer(Kind::Browse, t0 + gap + gap / 2), "the deferred answer counts as sent");
        assert!(l.offer(Kind::Browse, t0 + gap * 3));
    }

    #[test]
    fn rates_are_added_to_every_service_on_refresh() {
        let config = MdnsConfig::new().instance("node1");
        let started = std::time::Instant::now() - Duration::from_secs(4);
        let reg = registration(&[("Arith", "weight=1&a=b")]).with_rates(Rates::new(|| (10, 2), started));
        let mut r = Records::new(&config, &reg).unwrap();
        let before = r.txt.clone();
        assert!(r.refresh_txt());
        assert_ne!(r.txt, before);
        let list = super::super::decode_txt(&r.txt).unwrap();
        let metas: Vec<&str> = list.iter().map(|s| s.meta.as_str()).collect();
        // 10 calls and 2 connections over about 4 s, keys sorted as Go's Encode.
        assert!(metas[0].starts_with("a=b&calls=2.") && metas[0].ends_with("&weight=1"), "{metas:?}");
        assert!(metas[0].contains("&connections=0."), "{metas:?}");
        // Rates that no longer fit one TXT string keep the last TXT.
        let long = registration(&[("Arith", "weight=1&a=b"), ("Echo", "")]).with_rates(Rates::new(|| (1, 1), started));
        let mut r = Records::new(&config, &long).unwrap();
        let before = r.txt.clone();
        assert!(!r.refresh_txt());
        assert_eq!(r.txt, before);
        // Without rates nothing changes.
        let mut plain = Records::new(&config, &registration(&[("Arith", "w=1")])).unwrap();
        assert!(!plain.refresh_txt());
    }

    #[test]
    fn what_go_cannot_publish_is_refused() {
        let config = MdnsConfig::new();
        let many: Vec<(String, &str)> = (0..4).map(|i| (format!("Service{i}"), "weight=10&group=a")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, m)| (n.as_str(), *m)).collect();
        assert!(matches!(Records::new(&config, &registration(&many)), Err(RegistryError::Config(_))));
        let unix = Registration::new(ServerKey::new("unix@/tmp/x.sock"), []);
        assert!(matches!(Records::new(&config, &unix), Err(RegistryError::Config(_))));
    }
}
