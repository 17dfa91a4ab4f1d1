//! Discovery data model: keys, metadata, group/state filtering (unparsable metadata
//! kept, as Go), versioned static discoveries with callbacks, the balancer's sync.

use rpcx_core::addr::ServerAddr;
use rpcx_core::govern::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn keys(servers: &[Instance]) -> Vec<&str> {
    servers.iter().map(|s| s.key().as_str()).collect()
}

fn fleet() -> Vec<Instance> {
    vec![
        Instance::new("tcp@a:1", "group=blue&group=green&weight=10"),
        Instance::new("tcp@b:1", "group=green"),
        Instance::new("tcp@c:1", ""),
        Instance::new("tcp@d:1", "group=blue&state=inactive"),
        Instance::new("tcp@e:1", "group=red&state=inactive&bad=%zz"), // unparsable
        Instance::new("tcp@f:1", "state=active;x=1"),                 // unparsable (semicolon)
        Instance::new("tcp@g:1", "state=inactive"),
    ]
}

#[test]
fn no_group_drops_only_inactive() {
    let kept = ServerFilter::new().apply(&fleet());
    assert_eq!(keys(&kept), ["tcp@a:1", "tcp@b:1", "tcp@c:1", "tcp@e:1", "tcp@f:1"]);
}

#[test]
fn group_keeps_members_and_unparsable() {
    let kept = ServerFilter::new().group("blue").apply(&fleet());
    assert_eq!(keys(&kept), ["tcp@a:1", "tcp@e:1", "tcp@f:1"]);
    let kept = ServerFilter::new().group("green").apply(&fleet());
    assert_eq!(keys(&kept), ["tcp@a:1", "tcp@b:1", "tcp@e:1", "tcp@f:1"]);
    // An empty group means no group filter (Go's Option.Group == "").
    assert_eq!(ServerFilter::new().group("").apply(&fleet()).len(), 5);
}

#[test]
fn predicate_applies_on_top() {
    let f = ServerFilter::new().group("green").predicate(|s| s.key().as_str() != "tcp@b:1");
    assert_eq!(keys(&f.apply(&fleet())), ["tcp@a:1", "tcp@e:1", "tcp@f:1"]);
}

#[test]
fn metadata_accessors() {
    let md = Metadata::parse("group=a&group=b&weight=10&latitude=1.5&longitude=-2&name=hello+w%6Frld");
    assert!(md.is_parsed());
    assert_eq!(md.values("group").collect::<Vec<_>>(), ["a", "b"]);
    assert!(md.in_group("b") && !md.in_group("c"));
    assert_eq!(md.weight(), 10);
    assert_eq!(md.coordinates(), Some((1.5, -2.0)));
    assert_eq!(md.get("name"), Some("hello world"));
    let bad = Metadata::parse("group=a&weight=5&x=%g0");
    assert!(!bad.is_parsed());
    assert_eq!((bad.get("group"), bad.weight(), bad.raw()), (None, 1, "group=a&weight=5&x=%g0"));
}

#[test]
fn server_keys() {
    let k = ServerKey::new("tcp@127.0.0.1:8972");
    assert_eq!(k.server_addr(), Ok(ServerAddr::Tcp("127.0.0.1:8972".into())));
    assert_eq!(ServerKey::new("127.0.0.1:1").network(), "tcp");
    assert_eq!(ServerKey::new("unix@/tmp/s").address(), "/tmp/s");
    let memu = ServerKey::in_process("svc");
    assert_eq!((memu.as_str(), memu.is_in_process()), ("memu@svc", true));
    assert_eq!(memu.server_addr(), Ok(ServerAddr::Memory("svc".into())), "dialable through the memu transport");
    // Keys compare as strings, like Go's map keys.
    assert_ne!(ServerKey::new("127.0.0.1:1"), ServerKey::new("tcp@127.0.0.1:1"));
}

#[test]
fn snapshot_sorts_and_dedups_last_wins() {
    let s = Snapshot::new(3, [Instance::new("b", "weight=1"), Instance::new("a", ""), Instance::new("b", "weight=2")]);
    assert_eq!(keys(&s.servers), ["a", "b"]);
    assert_eq!(s.servers[1].metadata().weight(), 2);
    assert_eq!(s.version, 3);
}

#[test]
fn peer_discovery_is_static() {
    let d = PeerDiscovery::new("tcp@x:1", "group=g");
    assert_eq!(d.version(), 0);
    assert_eq!(keys(&d.snapshot().servers), ["tcp@x:1"]);
    assert!(d.subscribe(Arc::new(|_| {})).is_none());
}

#[test]
fn multi_discovery_versions_and_callbacks() {
    let d = Arc::new(MultiDiscovery::new([Instance::new("a", "")]));
    assert_eq!(d.version(), 0);
    let seen = Arc::new(AtomicU64::new(0));
    let (seen2, d2) = (seen.clone(), d.clone());
    // The callback may read the discovery: it runs outside the lock.
    let id = d
        .subscribe(Arc::new(move |v| {
            assert_eq!(d2.snapshot().version, v);
            seen2.store(v, Ordering::SeqCst);
        }))
        .unwrap();
    assert_eq!(d.update([Instance::new("a", ""), Instance::new("b", "")]), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(keys(&d.snapshot().servers), ["a", "b"]);
    d.unsubscribe(id);
    assert_eq!(d.update([]), 2);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "unsubscribed");
    assert!(d.snapshot().servers.is_empty());
}

#[test]
fn in_process_discovery_uses_memu_keys() {
    let d = InProcessDiscovery::new(["beta", "alpha"]);
    assert_eq!(keys(&d.snapshot().servers), ["memu@alpha", "memu@beta"]);
    assert_eq!(d.update(["gamma"]), 1);
    assert_eq!(keys(&d.snapshot().servers), ["memu@gamma"]);
}

#[test]
fn balancer_syncs_only_on_new_versions_and_filters() {
    let d = MultiDiscovery::new(fleet());
    let mut b = Balancer::new(Box::new(RoundRobin::default())).with_filter(ServerFilter::new().group("blue"));
    assert!(b.refresh(&d));
    assert!(!b.refresh(&d), "same version: nothing to do");
    assert_eq!(keys(b.servers()), ["tcp@a:1", "tcp@e:1", "tcp@f:1"]);
    d.update([Instance::new("tcp@z:1", "group=blue"), Instance::new("tcp@y:1", "group=red")]);
    assert!(b.refresh(&d));
    assert_eq!(b.version(), Some(1));
    assert_eq!(keys(b.servers()), ["tcp@z:1"]);
    let mut rng = SplitMix64::new(0);
    let now = Instant::now();
    assert_eq!(b.select(now, &mut SelectContext::new("S", "M", &mut rng)).unwrap().as_str(), "tcp@z:1");
    assert!(b.admit(now, &ServerKey::new("tcp@z:1")));
    assert!(!b.admit(now, &ServerKey::new("tcp@a:1")), "left discovery");
}

#[test]
fn policy_types_can_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Balancer>();
    send::<Box<dyn Selector>>();
    send_sync::<Plan>();
    send_sync::<Gather<String>>();
    send_sync::<MultiDiscovery>();
    send_sync::<InProcessDiscovery>();
    send_sync::<ServerFilter>();
    send::<BreakerSet>();
}
