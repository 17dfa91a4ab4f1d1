//! Selectors: V15 math vectors, distributions over 10 000 picks, the smooth weighted
//! round robin sequence, consistent-hash stability, geo selection.

use rpcx_core::govern::*;
use std::collections::HashMap;
use std::time::Duration;

fn inst(key: &str, md: &str) -> Instance {
    Instance::new(key, md)
}

fn pick(sel: &mut dyn Selector, rng: &mut SplitMix64) -> ServerKey {
    let mut ctx = SelectContext::new("Arith", "Mul", rng);
    sel.select(&mut ctx).expect("a server")
}

fn counts(sel: &mut dyn Selector, n: usize, seed: u64) -> HashMap<String, usize> {
    let mut rng = SplitMix64::new(seed);
    let mut m = HashMap::new();
    for _ in 0..n {
        *m.entry(pick(sel, &mut rng).to_string()).or_insert(0) += 1;
    }
    m
}

// ---- V15 ----

#[test]
fn v15_fnv1a64_of_go_key_strings() {
    let cases = [
        ("&{10 20}", 0x20fe73eb7bd50f79u64),
        ("{10 20}", 0x79dd90b0d3211983),
        ("hello", 0x2b410bb47e9feb1a),
        ("42", 0xbff493b93cc31840),
        ("<nil>", 0x37ddee521f702735),
    ];
    for (arg, want) in cases {
        let key = go_hash_key("Arith", "Mul", arg);
        assert_eq!(fnv1a64(key.as_bytes()), want, "{key}");
    }
    assert_eq!(go_hash_key("Arith", "Mul", "&{10 20}"), "/Arith/Mul/&{10 20}");
}

#[test]
fn v15_jump_values() {
    let k = fnv1a64(b"/Arith/Mul/&{10 20}");
    assert_eq!((1..=5).map(|n| jump(k, n)).collect::<Vec<_>>(), [0, 1, 1, 1, 1]);
    assert_eq!(jump(k.wrapping_mul(COMPACT_KEY_MULTIPLIER), 3), 2);
    assert_eq!(COMPACT_KEY_MULTIPLIER, 0xc6a4a7935bd1e995);
    let k = fnv1a64(b"/Arith/Mul/{10 20}");
    assert_eq!((1..=5).map(|n| jump(k, n)).collect::<Vec<_>>(), [0, 1, 1, 1, 1]);
    let k = fnv1a64(b"/Arith/Mul/42");
    assert_eq!((1..=5).map(|n| jump(k, n)).collect::<Vec<_>>(), [0, 0, 0, 0, 4]);
    assert_eq!(jump(0, 10), 0);
    assert_eq!(jump(1, 10), 6);
    assert_eq!(jump(0xdeadbeef, 100), 87);
    // rpcx's client.Hash treats buckets <= 0 as 1.
    assert_eq!(jump(12345, 0), 0);
}

#[test]
fn v15_geo_distance_beijing_shanghai() {
    let d = haversine_m(39.9042, 116.4074, 31.2304, 121.4737);
    assert!((d - 1068499.608).abs() < 0.01, "{d}");
    assert_eq!(EARTH_RADIUS_M, 6378100.0);
}

#[test]
fn consistent_hash_with_go_key_follows_doublejump() {
    // Three servers inserted in key order: loose = compact = [a, b, c], so the pick is
    // servers[jump(k, 3)].
    let mut sel = ConsistentHash::default();
    sel.update(&[inst("tcp@a:1", ""), inst("tcp@b:1", ""), inst("tcp@c:1", "")]);
    let key = go_hash_key("Arith", "Mul", "42");
    let mut rng = SplitMix64::new(1);
    let mut ctx = SelectContext::new("Arith", "Mul", &mut rng).with_hash_key(key.as_bytes());
    let want = ["tcp@a:1", "tcp@b:1", "tcp@c:1"][jump(fnv1a64(key.as_bytes()), 3) as usize];
    assert_eq!(sel.select(&mut ctx).unwrap().as_str(), want);
    // Remove b: the loose slot of b becomes a hole, keys there use the compact table.
    sel.update(&[inst("tcp@a:1", ""), inst("tcp@c:1", "")]);
    let k = fnv1a64(b"/Arith/Mul/&{10 20}");
    assert_eq!(jump(k, 3), 1, "this key hashed to b's slot");
    // compact after removing b (swap-remove) = [a, c]; jump(k*M, 2) picks.
    let want = ["tcp@a:1", "tcp@c:1"][jump(k.wrapping_mul(COMPACT_KEY_MULTIPLIER), 2) as usize];
    assert_eq!(sel.server_for(k).unwrap().as_str(), want);
}

// ---- distributions ----

fn four() -> Vec<Instance> {
    ["tcp@d:1", "tcp@a:1", "tcp@c:1", "tcp@b:1"].iter().map(|k| inst(k, "")).collect()
}

#[test]
fn random_is_uniform_and_reproducible() {
    let mut sel = RandomSelector::default();
    sel.update(&four());
    let c = counts(&mut sel, 10_000, 42);
    assert_eq!(c.len(), 4);
    for (k, n) in &c {
        assert!((2300..=2700).contains(n), "{k}: {n}");
    }
    assert_eq!(c, counts(&mut sel, 10_000, 42), "same seed, same picks");
}

#[test]
fn random_with_closure_rng() {
    let mut sel = RandomSelector::default();
    sel.update(&four());
    let mut x = 0u64;
    let mut rng = move || {
        x = x.wrapping_add(u64::MAX / 4 + 1);
        x
    };
    let mut ctx = SelectContext::new("S", "M", &mut rng);
    let picks: Vec<_> = (0..4).map(|_| sel.select(&mut ctx).unwrap().to_string()).collect();
    assert_eq!(picks, ["tcp@b:1", "tcp@c:1", "tcp@d:1", "tcp@a:1"]);
}

#[test]
fn round_robin_is_exact_in_key_order() {
    let mut sel = RoundRobin::default();
    sel.update(&four());
    let mut rng = SplitMix64::new(0);
    let first: Vec<_> = (0..5).map(|_| pick(&mut sel, &mut rng).to_string()).collect();
    assert_eq!(first, ["tcp@a:1", "tcp@b:1", "tcp@c:1", "tcp@d:1", "tcp@a:1"]);
    let c = counts(&mut sel, 10_000, 0);
    assert!(c.values().all(|&n| n == 2500), "{c:?}");
}

#[test]
fn smooth_weighted_round_robin_sequence() {
    let mut sel = WeightedRoundRobin::default();
    sel.update(&[inst("c", "weight=1"), inst("a", "weight=5"), inst("b", "weight=1")]);
    let mut rng = SplitMix64::new(0);
    let seq: Vec<_> = (0..14).map(|_| pick(&mut sel, &mut rng).to_string()).collect();
    assert_eq!(seq.concat(), "aabacaaaabacaa");
}

#[test]
fn weighted_round_robin_exact_counts() {
    let mut sel = WeightedRoundRobin::default();
    sel.update(&[
        inst("w1", "weight=1"),
        inst("w2", "weight=2&group=x"),
        inst("w3", "weight=3"),
        inst("w4", "weight=4"),
        inst("zero", "weight=0"),
    ]);
    let c = counts(&mut sel, 10_000, 0);
    assert_eq!(c.get("w1"), Some(&1000));
    assert_eq!(c.get("w2"), Some(&2000));
    assert_eq!(c.get("w3"), Some(&3000));
    assert_eq!(c.get("w4"), Some(&4000));
    assert_eq!(c.get("zero"), None, "weight 0 is never picked");
}

#[test]
fn weighted_round_robin_defaults_and_invalid_weights() {
    let mut sel = WeightedRoundRobin::default();
    // missing → 1, invalid → 1, negative → 1, unparsable metadata → 1.
    sel.update(&[inst("a", ""), inst("b", "weight=abc"), inst("c", "weight=-4"), inst("d", "weight=9&x=%zz")]);
    let c = counts(&mut sel, 4000, 0);
    assert!(c.values().all(|&n| n == 1000), "{c:?}");
}

#[test]
fn weighted_round_robin_all_zero_is_uniform() {
    let mut sel = WeightedRoundRobin::default();
    sel.update(&[inst("a", "weight=0"), inst("b", "weight=0"), inst("c", "weight=0")]);
    let c = counts(&mut sel, 3000, 0);
    assert!(c.values().all(|&n| n == 1000), "{c:?}");
    sel.update(&[]);
    let mut rng = SplitMix64::new(0);
    assert_eq!(sel.select(&mut SelectContext::new("S", "M", &mut rng)), None);
}

#[test]
fn calculate_weight_matches_go() {
    let cases = [(-1, 0), (0, 191), (10, 191), (11, 190), (100, 101), (200, 1), (201, 1), (999, 1), (1000, 0)];
    for (rtt, w) in cases {
        assert_eq!(calculate_weight(rtt), w, "rtt {rtt}");
    }
}

#[test]
fn weighted_latency_is_proportional_to_weights() {
    let mut sel = WeightedLatency::default();
    sel.update(&[inst("fast", ""), inst("mid", ""), inst("slow", ""), inst("down", "")]);
    let k = ServerKey::new;
    sel.observe_rtt(&k("fast"), Some(Duration::from_micros(4_900))); // 4 ms → 191
    sel.observe_rtt(&k("mid"), Some(Duration::from_millis(100))); // → 101
    sel.observe_rtt(&k("slow"), Some(Duration::from_millis(300))); // → 1
    sel.observe_rtt(&k("down"), None); // failed → 0
    assert_eq!([sel.weight(&k("fast")), sel.weight(&k("mid")), sel.weight(&k("slow"))], [191, 101, 1]);
    let c = counts(&mut sel, 29_300, 0); // 100 full cycles of 293
    assert_eq!((c["fast"], c["mid"], c["slow"], c.get("down")), (19_100, 10_100, 100, None));
    // Over 10 000 picks: within 1% of the weight share.
    let c = counts(&mut sel, 10_000, 0);
    for (name, w) in [("fast", 191.0), ("mid", 101.0)] {
        let expect = 10_000.0 * w / 293.0;
        assert!((c[name] as f64 - expect).abs() < 100.0, "{name}: {} vs {expect}", c[name]);
    }
}

#[test]
fn weighted_latency_all_failed_is_uniform_without_panic() {
    let mut sel = WeightedLatency::default();
    sel.update(&[inst("a", ""), inst("b", "")]);
    sel.observe_rtt(&ServerKey::new("a"), None);
    sel.observe_rtt(&ServerKey::new("b"), Some(Duration::from_secs(2)));
    let c = counts(&mut sel, 10_000, 0);
    assert_eq!((c["a"], c["b"]), (5000, 5000));
    // Unmeasured servers get weight 1 until measured.
    let mut sel = WeightedLatency::default().with_unmeasured_weight(3);
    sel.update(&[inst("a", ""), inst("b", "")]);
    sel.observe_rtt(&ServerKey::new("a"), Some(Duration::from_millis(200)));
    let c = counts(&mut sel, 400, 0);
    assert_eq!((c["a"], c["b"]), (100, 300));
}

// ---- consistent hash stability ----

fn servers(n: usize) -> Vec<Instance> {
    (0..n).map(|i| inst(&format!("tcp@10.0.0.{i}:8972"), "")).collect()
}

fn mapping(sel: &mut ConsistentHash, keys: &[String]) -> Vec<ServerKey> {
    let mut rng = SplitMix64::new(0);
    keys.iter()
        .map(|k| {
            let mut ctx = SelectContext::new("S", "M", &mut rng).with_hash_key(k.as_bytes());
            sel.select(&mut ctx).unwrap()
        })
        .collect()
}

fn hash_keys() -> Vec<String> {
    (0..10_000).map(|i| format!("user-{i}")).collect()
}

#[test]
fn consistent_hash_adding_moves_only_to_the_new_server() {
    let keys = hash_keys();
    let mut sel = ConsistentHash::default();
    sel.update(&servers(1));
    let mut before = mapping(&mut sel, &keys);
    for n in 2..=12 {
        let all = servers(n);
        sel.update(&all);
        let after = mapping(&mut sel, &keys);
        let new = all[n - 1].key();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(after.iter().zip(&before).all(|(a, b)| a == b || a == new), "moved only to {new}");
        let ideal = keys.len() / n;
        assert!(moved <= ideal * 13 / 10 && moved >= ideal * 7 / 10, "n={n}: moved {moved}, ideal {ideal}");
        before = after;
    }
}

#[test]
fn consistent_hash_removing_moves_only_the_removed_servers_keys() {
    let keys = hash_keys();
    let mut sel = ConsistentHash::default();
    let all = servers(8);
    sel.update(&all);
    let before = mapping(&mut sel, &keys);
    let gone = all[3].key().clone();
    let rest: Vec<_> = all.iter().filter(|s| *s.key() != gone).cloned().collect();
    sel.update(&rest);
    let after = mapping(&mut sel, &keys);
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(a, &gone);
        if b != &gone {
            assert_eq!(a, b, "a key on an untouched server stayed");
        }
    }
    // Every remaining server takes a share of the orphans (compact table spreads them).
    let orphans: Vec<_> = before.iter().zip(&after).filter(|(b, _)| **b == gone).map(|(_, a)| a).collect();
    let distinct: std::collections::HashSet<_> = orphans.iter().collect();
    assert_eq!(distinct.len(), 7);
    // Put it back: everything returns to where it was.
    sel.update(&all);
    assert_eq!(mapping(&mut sel, &keys), before);
}

#[test]
fn consistent_hash_agrees_across_processes_regardless_of_list_order() {
    let keys = hash_keys();
    let mut a = ConsistentHash::default();
    let mut b = ConsistentHash::default();
    let mut list = servers(6);
    a.update(&list);
    list.reverse();
    b.update(&list);
    assert_eq!(mapping(&mut a, &keys), mapping(&mut b, &keys));
}

#[test]
fn consistent_hash_canonical_mode_depends_only_on_the_set() {
    let keys = hash_keys();
    let mut long_lived = ConsistentHash::canonical();
    long_lived.update(&servers(6));
    long_lived.update(&servers(3));
    long_lived.update(&[servers(6)[5].clone(), servers(6)[0].clone(), servers(6)[2].clone()]);
    let mut fresh = ConsistentHash::canonical();
    fresh.update(&[servers(6)[0].clone(), servers(6)[2].clone(), servers(6)[5].clone()]);
    assert_eq!(mapping(&mut long_lived, &keys), mapping(&mut fresh, &keys));
}

#[test]
fn consistent_hash_key_sources() {
    let mut sel = ConsistentHash::default().with_key_fn(|ctx| fnv1a64(ctx.method.as_bytes()));
    sel.update(&servers(5));
    let mut rng = SplitMix64::new(0);
    let by_fn = sel.select(&mut SelectContext::new("S", "Mul", &mut rng)).unwrap();
    assert_eq!(Some(&by_fn), sel.server_for(fnv1a64(b"Mul")));
    // No key and no function: Go's key string with empty args.
    let mut plain = ConsistentHash::default();
    plain.update(&servers(5));
    let k = plain.select(&mut SelectContext::new("Arith", "Mul", &mut rng)).unwrap();
    assert_eq!(Some(&k), plain.server_for(fnv1a64(b"/Arith/Mul/")));
}

// ---- geo ----

#[test]
fn closest_picks_nearest_and_ignores_servers_without_coordinates() {
    let mut sel = Closest::new(39.9042, 116.4074); // Beijing
    sel.update(&[
        inst("shanghai", "latitude=31.2304&longitude=121.4737"),
        inst("tianjin", "latitude=39.3434&longitude=117.3616"),
        inst("nowhere", "latitude=1"),
        inst("broken", "latitude=39.9&longitude=116.4&x=%zz"),
        inst("nan", "latitude=NaN&longitude=116.4"),
    ]);
    let mut rng = SplitMix64::new(0);
    assert_eq!(pick(&mut sel, &mut rng).as_str(), "tianjin");
    sel.update(&[inst("nowhere", "latitude=1"), inst("plain", "")]);
    assert_eq!(sel.select(&mut SelectContext::new("S", "M", &mut rng)), None);
}

#[test]
fn closest_breaks_ties_with_the_rng() {
    let mut sel = Closest::new(0.0, 0.0);
    sel.update(&[
        inst("east", "latitude=0&longitude=1"),
        inst("west", "latitude=0&longitude=-1"),
        inst("far", "latitude=0&longitude=5"),
    ]);
    let c = counts(&mut sel, 10_000, 9);
    assert_eq!(c.get("far"), None);
    assert!((4700..=5300).contains(&c["east"]), "{c:?}");
}

// ---- modes and user selectors ----

#[test]
fn select_modes_have_go_values() {
    for (m, v) in [
        (SelectMode::Random, 0),
        (SelectMode::RoundRobin, 1),
        (SelectMode::WeightedRoundRobin, 2),
        (SelectMode::WeightedLatency, 3),
        (SelectMode::ConsistentHash, 4),
        (SelectMode::Closest, 5),
        (SelectMode::ByUser, 1000),
    ] {
        assert_eq!(m.as_u32(), v);
        assert_eq!(SelectMode::from_u32(v), Some(m));
    }
    assert!(SelectMode::RoundRobin.build().is_some());
    assert!(SelectMode::Closest.build().is_none());
}

/// A user-defined selector: always the last server in key order.
#[derive(Default)]
struct Last(Vec<ServerKey>);

impl Selector for Last {
    fn select(&mut self, _ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        self.0.last().cloned()
    }

    fn update(&mut self, servers: &[Instance]) {
        self.0 = servers.iter().map(|s| s.key().clone()).collect();
    }
}

#[test]
fn user_selector_through_balancer() {
    let d = MultiDiscovery::new(four());
    let mut b = Balancer::new(Box::new(Last::default()));
    b.refresh(&d);
    let mut rng = SplitMix64::new(0);
    assert_eq!(
        b.select(std::time::Instant::now(), &mut SelectContext::new("S", "M", &mut rng)).unwrap().as_str(),
        "tcp@d:1"
    );
}

#[test]
fn empty_selectors_return_none() {
    let mut rng = SplitMix64::new(0);
    let mut all: Vec<Box<dyn Selector>> = vec![
        Box::new(RandomSelector::default()),
        Box::new(RoundRobin::default()),
        Box::new(WeightedRoundRobin::default()),
        Box::new(WeightedLatency::default()),
        Box::new(ConsistentHash::default()),
        Box::new(Closest::new(0.0, 0.0)),
    ];
    for s in &mut all {
        s.update(&[]);
        assert_eq!(s.select(&mut SelectContext::new("S", "M", &mut rng)), None);
    }
}

#[test]
fn weighted_latency_keeps_measurements_of_servers_briefly_out_of_the_set() {
    let mut sel = WeightedLatency::default();
    let (a, b) = (inst("a", ""), inst("b", ""));
    sel.update(&[a.clone(), b.clone()]);
    sel.observe_rtt(b.key(), Some(Duration::from_millis(1))); // 191
    sel.update(std::slice::from_ref(&a)); // b's breaker opened
    sel.observe_rtt(b.key(), Some(Duration::from_millis(2))); // still measured meanwhile
    sel.update(&[a, b.clone()]);
    assert_eq!(sel.weight(b.key()), 191);
    let c = counts(&mut sel, 192, 0);
    assert_eq!((c["a"], c["b"]), (1, 191));
}
