//! Fuzz `ServerConnection` with arbitrary operation sequences: arbitrary and
//! well-formed requests, responses to any id, pushes, time jumps, closes and EOF.
//!
//! Checked: no panic; responding to an id never handed out (or twice) is an error and
//! sends nothing; nothing follows `ConnectionLost`; the number of unanswered requests
//! never exceeds `max_in_flight`; every byte the server transmits is a valid rpcx frame
//! stream, and every response frame echoes its request's seq.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcx_core::compress::{Compressors, Gzip};
use rpcx_core::conn::{CloseMode, RequestId, Response, ServerConfig, ServerConnection, ServerEvent};
use rpcx_core::wire::EncoderConfig;
use rpcx_core::wire::{CompressType, Message, MessageType, SerializeType, StreamDecoder};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_IN_FLIGHT: usize = 4;
/// gzip requests per execution, past which the flag is dropped: one costs an inflate
/// and (for its response) a deflate, more than all the rest of an execution, so one
/// keep the fuzzer fast (the decompress target covers gzip itself).
const MAX_GZIP_FRAMES: usize = 1;

/// gzip at the fastest level: deflating at the default level was most of an
/// execution's time, and the level does not change what the machine does with the
/// bytes (the decompress target covers every level).
fn fast_gzip() -> EncoderConfig {
    let mut compressors = Compressors::default();
    compressors.register(CompressType::GZIP, Arc::new(Gzip::with_level(1)));
    EncoderConfig { compressors, ..Default::default() }
}

thread_local! {
    static FRAMES: std::cell::RefCell<BTreeMap<(u8, u64), Vec<u8>>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let encoder = fast_gzip();
    let cfg = ServerConfig {
        encoder: encoder.clone(),
        max_in_flight: MAX_IN_FLIGHT,
        max_unsent_bytes: 8192,
        read_timeout: Some(Duration::from_secs(5)),
        // rpcx only: the http_conn target covers connections that speak HTTP.
        http: rpcx_core::http::HttpConfig::disabled(),
        ..Default::default()
    };
    let mut conn = ServerConnection::new(cfg, now);
    let mut open: BTreeMap<RequestId, u64> = BTreeMap::new();
    let mut answered: BTreeSet<RequestId> = BTreeSet::new();
    let mut seqs_asked: BTreeSet<u64> = BTreeSet::new();
    // Every byte the server is given, decoded alongside: the seqs of all requests it
    // could answer (arbitrary input can hold whole frames too).
    let mut mirror = Some(StreamDecoder::default());
    let mut asked = |bytes: &[u8], seqs: &mut BTreeSet<u64>| {
        let Some(m) = mirror.as_mut() else { return };
        m.feed(bytes);
        loop {
            match m.next_raw() {
                Ok(Some(msg)) => {
                    seqs.insert(msg.header.seq());
                }
                Ok(None) => break,
                Err(_) => {
                    mirror = None;
                    break;
                }
            }
        }
    };
    let mut sent = StreamDecoder::default();
    let mut lost = false;
    let mut gzipped = 0;
    let mut i = 0;
    let next = |i: &mut usize| -> u8 {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    while i < data.len() {
        match next(&mut i) % 7 {
            0 => {
                let n = usize::from(next(&mut i) % 64);
                let start = i.min(data.len());
                let end = (start + n).min(data.len());
                asked(&data[start..end], &mut seqs_asked);
                conn.handle_input(now, &data[start..end]);
                i = end;
            }
            1 => {
                let mut arg = next(&mut i);
                let seq = u64::from(next(&mut i));
                if arg & 4 == 4 {
                    gzipped += 1;
                    if gzipped > MAX_GZIP_FRAMES {
                        arg &= !4;
                    }
                }
                // The frame depends on these two bytes only: built (and gzipped) once.
                let buf = FRAMES.with(|f| {
                    f.borrow_mut()
                        .entry((arg, seq))
                        .or_insert_with(|| {
                            let mut m = Message::request(SerializeType::MSGPACK, seq, "S", "M");
                            m.header.set_oneway(arg & 1 == 1);
                            m.header.set_heartbeat(arg & 2 == 2);
                            if arg & 4 == 4 {
                                m.header.set_compress_type(CompressType::GZIP);
                            }
                            if arg & 8 == 8 {
                                m.metadata.insert("__ServerTimeout", format!("{}", i64::from(arg) - 100));
                            }
                            m.payload = vec![7u8; usize::from(arg) * 3].into();
                            let mut buf = Vec::new();
                            m.encode(&encoder, &mut buf).expect("encode");
                            buf
                        })
                        .clone()
                });
                asked(&buf, &mut seqs_asked);
                conn.handle_input(now, &buf);
            }
            2 => {
                let arg = next(&mut i);
                let id = RequestId(u64::from(arg % 32));
                let resp = if arg & 0x80 != 0 {
                    Response::error("boom")
                } else {
                    Response::ok(vec![3u8; usize::from(arg) * 11])
                };
                let was_open = open.remove(&id).is_some();
                let res = conn.respond(now, id, resp);
                if was_open && !conn.is_closing() {
                    assert!(res.is_ok(), "{res:?}");
                    answered.insert(id);
                } else if !was_open {
                    assert!(res.is_err(), "responding to {id:?} that is not open must fail");
                }
            }
            3 => {
                let _ = conn.push(now, "P", "N", Default::default(), vec![1u8; usize::from(next(&mut i))]);
            }
            4 => {
                now += Duration::from_millis(u64::from(next(&mut i)) * 40);
                conn.handle_timeout(now);
            }
            5 => {
                let mode = [CloseMode::Graceful, CloseMode::Flush, CloseMode::Immediate][usize::from(next(&mut i) % 3)];
                conn.close(now, mode);
                if mode != CloseMode::Graceful {
                    open.clear();
                }
            }
            _ => {
                if next(&mut i) % 8 == 0 {
                    conn.handle_eof(now);
                    open.clear();
                }
            }
        }
        let mut out = Vec::new();
        while conn.poll_transmit(&mut out).is_some() {}
        sent.feed(&out);
        while let Some(m) = sent.next_message().expect("server transmitted an invalid frame") {
            if m.header.message_type() == MessageType::Response {
                assert!(seqs_asked.contains(&m.header.seq()), "response echoes a requested seq");
            } else {
                assert!(m.header.is_server_push());
            }
        }
        while let Some(ev) = conn.poll_event() {
            assert!(!lost, "event after ConnectionLost: {ev:?}");
            match ev {
                ServerEvent::Request(r) => {
                    assert!(!answered.contains(&r.id) && !open.contains_key(&r.id), "request id reused");
                    open.insert(r.id, r.message.header.seq());
                }
                ServerEvent::ConnectionLost(_) => {
                    lost = true;
                    open.clear();
                }
                _ => {}
            }
        }
        assert!(conn.in_flight() <= MAX_IN_FLIGHT);
        assert!(open.len() <= MAX_IN_FLIGHT);
    }
});
