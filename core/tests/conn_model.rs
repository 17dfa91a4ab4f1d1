//! Property test against a reference model of "outstanding calls": random operation
//! sequences on a client/server pair; after every operation, every accepted call has
//! ended at most once, and once the pair is closed and drained every accepted call has
//! ended exactly once, with `ConnectionLost` once and last.

mod support;

use proptest::prelude::*;
use rpcx_core::conn::{CallSpec, ClientConfig, ClientEvent, CloseMode, Response, ServerConfig};
use rpcx_core::wire::SerializeType;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::{App, Pair};

#[derive(Debug, Clone)]
enum Op {
    Call { oneway: bool, deadline_ms: Option<u16>, size: u16 },
    Cancel(prop::sample::Index),
    Respond { which: prop::sample::Index, error: bool },
    Advance(u16),
    Garbage,
    Eof,
    Close(u8),
    Push,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), prop::option::of(0u16..3000), 0u16..3000).prop_map(|(oneway, deadline_ms, size)| Op::Call { oneway, deadline_ms, size }),
        1 => any::<prop::sample::Index>().prop_map(Op::Cancel),
        5 => (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(which, error)| Op::Respond { which, error }),
        3 => (0u16..5000).prop_map(Op::Advance),
        1 => Just(Op::Push),
        1 => prop_oneof![Just(Op::Garbage), Just(Op::Eof), (0u8..3).prop_map(Op::Close)].boxed(),
    ]
}

/// The model: which seqs were accepted, and how often each ended.
#[derive(Default)]
struct Model {
    accepted: BTreeSet<u64>,
    ended: BTreeMap<u64, u32>,
    lost: u32,
    events_after_lost: u32,
}

impl Model {
    fn observe(&mut self, events: Vec<ClientEvent>) {
        for e in events {
            if self.lost > 0 {
                self.events_after_lost += 1;
            }
            match e {
                ClientEvent::Response { seq, .. } | ClientEvent::Failed { seq, .. } | ClientEvent::Sent { seq } => {
                    *self.ended.entry(seq).or_default() += 1;
                }
                ClientEvent::ConnectionLost(_) => self.lost += 1,
                _ => {}
            }
        }
    }

    fn check_at_most_once(&self) -> Result<(), TestCaseError> {
        for (seq, n) in &self.ended {
            prop_assert!(self.accepted.contains(seq), "event for a call never accepted: {seq}");
            prop_assert_eq!(*n, 1, "call {} ended {} times", seq, n);
        }
        prop_assert!(self.lost <= 1);
        prop_assert_eq!(self.events_after_lost, 0, "events after ConnectionLost");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn every_accepted_call_ends_exactly_once(ops in prop::collection::vec(op(), 1..80), seed in any::<u64>()) {
        let client = ClientConfig { max_in_flight: 16, max_unsent_bytes: 8192, heartbeat_interval: Some(Duration::from_millis(700)), max_wait_for_heartbeat: Duration::from_secs(2), ..Default::default() };
        let server = ServerConfig { max_in_flight: 4, read_timeout: Some(Duration::from_secs(10)), ..Default::default() };
        let mut p = Pair::new(client, server, seed);
        p.app = App::Manual;
        p.latency = Duration::from_millis(3);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Call { oneway, deadline_ms, size } => {
                    let mut s = CallSpec::new("S", "M", SerializeType::NONE, vec![7u8; size as usize]);
                    s.oneway = oneway;
                    s.deadline = deadline_ms.map(|ms| p.now + Duration::from_millis(ms.into()));
                    if let Ok(seq) = p.client.call(p.now, s) {
                        prop_assert!(model.accepted.insert(seq), "seq reused");
                    }
                }
                Op::Cancel(i) => {
                    if !model.accepted.is_empty() {
                        let seq = *model.accepted.iter().nth(i.index(model.accepted.len())).unwrap();
                        p.client.cancel(p.now, seq);
                    }
                }
                Op::Respond { which, error } => {
                    if !p.requests.is_empty() {
                        let r = p.requests.remove(which.index(p.requests.len()));
                        let resp = if error { Response::error("boom") } else { Response::ok(r.message.payload.clone()) };
                        let _ = p.server.respond(p.now, r.id, resp);
                    }
                }
                Op::Advance(ms) => p.run_for(Duration::from_millis(ms.into())),
                Op::Garbage => p.client.handle_input(p.now, b"\x07junk"),
                Op::Eof => p.client.handle_eof(p.now),
                Op::Close(m) => p.client.close(p.now, [CloseMode::Graceful, CloseMode::Flush, CloseMode::Immediate][m as usize]),
                Op::Push => { let _ = p.server.push(p.now, "P", "N", Default::default(), "x"); }
            }
            p.settle();
            model.observe(p.take_client_events());
            model.check_at_most_once()?;
            prop_assert_eq!(p.client.in_flight() as u64 <= 16, true);
        }
        // Finish: close immediately and drain; everything accepted has now ended.
        p.client.close(p.now, CloseMode::Immediate);
        p.settle();
        model.observe(p.take_client_events());
        model.check_at_most_once()?;
        prop_assert_eq!(model.lost, 1, "ConnectionLost exactly once");
        let ended: BTreeSet<u64> = model.ended.keys().copied().collect();
        prop_assert_eq!(ended, model.accepted.clone(), "every accepted call ended");
    }
}
