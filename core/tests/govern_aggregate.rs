//! Broadcast, Fork and Inform as pure aggregators over results and `now`.

use rpcx_core::govern::*;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

fn servers(n: usize) -> Vec<ServerKey> {
    (0..n).map(|i| ServerKey::new(&format!("tcp@s{i}:1"))).collect()
}

fn gather(mode: GatherMode, n: usize, t0: Instant) -> Gather<String> {
    Gather::new(mode, servers(n), t0, DEFAULT_GATHER_TIMEOUT)
}

#[test]
fn default_timeout_is_one_minute() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Broadcast, 2, t0);
    assert_eq!(DEFAULT_GATHER_TIMEOUT, Duration::from_secs(60));
    assert_eq!(g.next(t0), GatherStep::Wait { until: t0 + Duration::from_secs(60) });
}

#[test]
fn broadcast_all_ok() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Broadcast, 3, t0);
    for i in [2, 0, 1] {
        assert!(matches!(g.next(t0), GatherStep::Wait { .. }));
        assert!(g.on_result(t0 + MS, i, Outcome::Ok, format!("r{i}")));
    }
    assert_eq!(g.next(t0 + MS), GatherStep::Done { abandon: vec![] });
    let r = g.into_report();
    assert!(r.succeeded());
    assert_eq!(r.winner, Some(2), "first to arrive");
    assert_eq!(r.first_success().unwrap().1, "r2");
}

#[test]
fn broadcast_waits_for_everyone_and_reports_every_result() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Broadcast, 3, t0);
    g.on_result(t0, 1, Outcome::Transport, "lost".into());
    assert!(matches!(g.next(t0), GatherStep::Wait { .. }), "keeps waiting for the others");
    g.on_result(t0, 0, Outcome::Ok, "r0".into());
    g.on_result(t0, 2, Outcome::Remote, "boom".into());
    assert_eq!(g.next(t0), GatherStep::Done { abandon: vec![] });
    let r = g.into_report();
    assert!(!r.succeeded());
    let failed: Vec<_> = r.failures().map(|e| e.server.as_str()).collect();
    assert_eq!(failed, ["tcp@s1:1", "tcp@s2:1"]);
    assert_eq!(r.entries[2].result, EntryResult::Done { outcome: Outcome::Remote, value: "boom".into() });
}

#[test]
fn broadcast_fail_fast_says_what_it_abandoned() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Broadcast, 3, t0).fail_fast(true);
    g.on_result(t0, 0, Outcome::Ok, "r0".into());
    g.on_result(t0, 1, Outcome::Dial, "no route".into());
    assert_eq!(g.next(t0), GatherStep::Done { abandon: vec![2] });
    assert!(!g.on_result(t0, 2, Outcome::Ok, "late".into()), "late results are dropped");
    let r = g.into_report();
    assert_eq!(r.entries[2].result, EntryResult::Abandoned);
    assert!(!r.succeeded() && !r.timed_out());
}

#[test]
fn broadcast_deadline_times_out_the_rest() {
    let t0 = Instant::now();
    let mut g = Gather::new(GatherMode::Broadcast, servers(2), t0, 100 * MS);
    g.on_result(t0 + MS, 0, Outcome::Ok, "r0".to_owned());
    assert_eq!(g.next(t0 + 99 * MS), GatherStep::Wait { until: t0 + 100 * MS });
    assert_eq!(g.next(t0 + 100 * MS), GatherStep::Done { abandon: vec![1] });
    let r = g.into_report();
    assert!(r.timed_out() && !r.succeeded());
    assert_eq!(r.entries[1].result, EntryResult::TimedOut);
}

#[test]
fn fork_first_success_wins_and_abandons_the_rest() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Fork, 4, t0);
    g.on_result(t0, 0, Outcome::Transport, "e0".into());
    assert!(matches!(g.next(t0), GatherStep::Wait { .. }), "a failure does not end a fork");
    g.on_result(t0 + MS, 3, Outcome::Ok, "r3".into());
    assert_eq!(g.next(t0 + MS), GatherStep::Done { abandon: vec![1, 2] });
    let r = g.into_report();
    assert!(r.succeeded());
    assert_eq!(r.first_success(), Some((&ServerKey::new("tcp@s3:1"), &"r3".to_owned())));
    assert_eq!(r.entries[1].result, EntryResult::Abandoned);
}

#[test]
fn fork_fails_only_if_all_fail() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Fork, 2, t0);
    g.on_result(t0, 0, Outcome::Remote, "e0".into());
    g.on_result(t0, 1, Outcome::Dial, "e1".into());
    assert_eq!(g.next(t0), GatherStep::Done { abandon: vec![] });
    let r = g.into_report();
    assert!(!r.succeeded());
    assert_eq!(r.winner, None);
    assert_eq!(r.failures().count(), 2);
}

#[test]
fn inform_gives_each_server_its_own_error() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Inform, 3, t0);
    g.on_result(t0, 0, Outcome::Ok, "r0".into());
    g.on_result(t0, 1, Outcome::Remote, "e1".into());
    assert!(matches!(g.next(t0), GatherStep::Wait { .. }));
    g.on_result(t0, 2, Outcome::Transport, "e2".into());
    assert_eq!(g.next(t0), GatherStep::Done { abandon: vec![] });
    let r = g.into_report();
    assert!(r.succeeded(), "every server answered");
    let got: Vec<_> = r
        .entries
        .iter()
        .map(|e| match &e.result {
            EntryResult::Done { outcome, value } => (e.server.address().to_owned(), *outcome, value.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            ("s0:1".to_owned(), Outcome::Ok, "r0".to_owned()),
            ("s1:1".to_owned(), Outcome::Remote, "e1".to_owned()),
            ("s2:1".to_owned(), Outcome::Transport, "e2".to_owned()),
        ]
    );
}

#[test]
fn no_servers_is_done_and_unsuccessful() {
    let t0 = Instant::now();
    for mode in [GatherMode::Broadcast, GatherMode::Fork, GatherMode::Inform] {
        let mut g = gather(mode, 0, t0);
        assert_eq!(g.next(t0), GatherStep::Done { abandon: vec![] });
        assert!(!g.into_report().succeeded());
    }
}

#[test]
fn bad_and_duplicate_results_are_rejected() {
    let t0 = Instant::now();
    let mut g = gather(GatherMode::Inform, 1, t0);
    assert!(!g.on_result(t0, 5, Outcome::Ok, "x".into()));
    assert!(g.on_result(t0, 0, Outcome::Ok, "a".into()));
    assert!(!g.on_result(t0, 0, Outcome::Remote, "b".into()));
    assert_eq!(g.next(t0), GatherStep::Done { abandon: vec![] });
    assert_eq!(g.next(t0), GatherStep::Done { abandon: vec![] }, "sticky");
}
