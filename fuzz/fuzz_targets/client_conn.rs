//! Fuzz `ClientConnection` with arbitrary operation sequences: calls, arbitrary and
//! well-formed input from the "server", cancels, time jumps, closes and EOF.
//!
//! Checked after every operation: no panic; every event names a call that was accepted;
//! no call ends twice; nothing follows `ConnectionLost`; the in-flight count stays within
//! its bound; every byte the client transmits is a valid rpcx frame stream. At the end,
//! an immediate close makes every accepted call end exactly once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcx_core::compress::{Compressors, Gzip};
use rpcx_core::conn::{CallSpec, ClientConfig, ClientConnection, ClientEvent, CloseMode};
use rpcx_core::wire::EncoderConfig;
use rpcx_core::wire::{CompressType, MessageStatus, MessageType, SerializeType, StreamDecoder};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_IN_FLIGHT: usize = 8;

struct Check {
    accepted: BTreeSet<u64>,
    ended: BTreeMap<u64, u32>,
    lost: bool,
    sent: StreamDecoder,
}

impl Check {
    fn drain(&mut self, conn: &mut ClientConnection) {
        let mut out = Vec::new();
        while conn.poll_transmit(&mut out).is_some() {}
        self.sent.feed(&out);
        while let Some(m) = self.sent.next_message().expect("client transmitted an invalid frame") {
            assert_eq!(m.header.message_type(), MessageType::Request);
        }
        while let Some(ev) = conn.poll_event() {
            assert!(!self.lost, "event after ConnectionLost: {ev:?}");
            match ev {
                ClientEvent::Response { seq, .. } | ClientEvent::Failed { seq, .. } | ClientEvent::Sent { seq } => {
                    assert!(self.accepted.contains(&seq), "event for unknown call {seq}");
                    let n = self.ended.entry(seq).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "call {seq} ended twice");
                }
                ClientEvent::ConnectionLost(_) => self.lost = true,
                _ => {}
            }
        }
        assert!(conn.in_flight() <= MAX_IN_FLIGHT);
    }
}

/// gzip calls per execution, past which calls go uncompressed.
const MAX_GZIP_CALLS: usize = 2;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut compressors = Compressors::default();
    // gzip at the fastest level: deflating at the default level was most of an
    // execution's time, and the level does not change what the machine does with the
    // bytes (the decompress target covers every level).
    compressors.register(CompressType::GZIP, Arc::new(Gzip::with_level(1)));
    let cfg = ClientConfig {
        encoder: EncoderConfig { compressors, ..Default::default() },
        max_in_flight: MAX_IN_FLIGHT,
        max_unsent_bytes: 4096,
        heartbeat_interval: Some(Duration::from_millis(500)),
        max_wait_for_heartbeat: Duration::from_secs(2),
        idle_timeout: Some(Duration::from_secs(20)),
        ..Default::default()
    };
    let mut conn = ClientConnection::new(cfg, now);
    let mut check =
        Check { accepted: BTreeSet::new(), ended: BTreeMap::new(), lost: false, sent: StreamDecoder::default() };
    let mut gzipped = 0;
    let mut i = 0;
    let next = |i: &mut usize| -> u8 {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    while i < data.len() {
        let op = next(&mut i);
        match op % 8 {
            0 | 1 => {
                let arg = next(&mut i);
                let mut spec = CallSpec::new("S", "M", SerializeType::MSGPACK, vec![0x5a; usize::from(arg) * 6]);
                spec.oneway = arg & 1 == 1;
                // A few gzip calls per execution: each deflate costs more than the rest of
                // an execution (the decompress target covers gzip itself).
                let gzip = arg & 2 == 2 && gzipped < MAX_GZIP_CALLS;
                gzipped += usize::from(gzip);
                spec.compress = if gzip { CompressType::GZIP } else { CompressType::NONE };
                spec.deadline = (arg & 4 == 4).then(|| now + Duration::from_millis(u64::from(arg) * 10));
                if let Ok(seq) = conn.call(now, spec) {
                    assert!(check.accepted.insert(seq), "seq reused");
                }
            }
            2 => {
                // Arbitrary bytes from the server.
                let n = usize::from(next(&mut i) % 64);
                let start = i.min(data.len());
                let end = (start + n).min(data.len());
                conn.handle_input(now, &data[start..end]);
                i = end;
            }
            3 => {
                // A well-formed response (or push) for some seq.
                let arg = next(&mut i);
                let seq = u64::from(next(&mut i) % 16);
                let mut m = rpcx_core::wire::Message::request(SerializeType::MSGPACK, seq, "S", "M");
                if arg & 1 == 0 {
                    m.header.set_message_type(MessageType::Response);
                } else {
                    m.header.set_oneway(true);
                }
                if arg & 2 == 2 {
                    m.header.set_status(MessageStatus::ERROR);
                    m.metadata.insert("__rpcx_error__", "boom");
                }
                m.header.set_heartbeat(arg & 4 == 4);
                m.payload = vec![1u8; usize::from(arg)].into();
                let mut buf = Vec::new();
                m.encode(&Default::default(), &mut buf).expect("encode");
                let split = usize::from(next(&mut i)) % (buf.len() + 1);
                conn.handle_input(now, &buf[..split]);
                conn.handle_input(now, &buf[split..]);
            }
            4 => {
                now += Duration::from_millis(u64::from(next(&mut i)) * 20);
                conn.handle_timeout(now);
            }
            5 => {
                let seq = u64::from(next(&mut i) % 16);
                conn.cancel(now, seq);
            }
            6 => {
                let mode = [CloseMode::Graceful, CloseMode::Flush, CloseMode::Immediate][usize::from(next(&mut i) % 3)];
                conn.close(now, mode);
            }
            _ => {
                if next(&mut i) % 8 == 0 {
                    conn.handle_eof(now);
                }
            }
        }
        check.drain(&mut conn);
        if let Some(t) = conn.poll_timeout() {
            assert!(t >= t0, "timeout before the connection started");
        }
    }
    conn.close(now, CloseMode::Immediate);
    check.drain(&mut conn);
    assert!(check.lost, "ConnectionLost after close");
    let ended: BTreeSet<u64> = check.ended.keys().copied().collect();
    assert_eq!(ended, check.accepted, "every accepted call ended");
});
