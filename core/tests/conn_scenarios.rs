//! Scenario tests for the connection machines, one behaviour each, over the
//! deterministic in-memory pair (tests/support).

mod support;

use bytes::Bytes;
use rpcx_core::conn::{
    CallError, CallRejected, CallSpec, ClientConfig, ClientEvent, CloseMode, LostReason, RespondError, Response,
    ServerConfig, ServerEvent,
};
use rpcx_core::wire::{CompressType, DecodeError, Metadata, SerializeType};
use std::time::Duration;
use support::{App, Pair};

trait DrainNow {
    fn take_client_events_now(&mut self) -> Vec<ClientEvent>;
}

impl DrainNow for Pair {
    fn take_client_events_now(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }
}

fn spec(payload: &'static [u8]) -> CallSpec {
    CallSpec::new("Arith", "Mul", SerializeType::MSGPACK, payload)
}

fn responses(events: &[ClientEvent]) -> Vec<(u64, Bytes)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Response { seq, response } => Some((*seq, response.payload.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn round_trip() {
    let mut p = Pair::default_pair();
    let seq = p.client.call(p.now, spec(b"hello")).unwrap();
    assert_eq!(seq, 0);
    p.settle();
    assert_eq!(responses(&p.client_events), vec![(0, Bytes::from_static(b"hello"))]);
    assert_eq!(p.client.in_flight(), 0);
}

#[test]
fn seqs_start_at_zero_and_increase() {
    let mut p = Pair::default_pair();
    let seqs: Vec<u64> = (0..5).map(|_| p.client.call(p.now, spec(b"x")).unwrap()).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
}

#[test]
fn ten_thousand_concurrent_calls_answered_in_reverse_order() {
    let mut p = Pair::new(ClientConfig::default(), ServerConfig { max_in_flight: 20_000, ..Default::default() }, 7);
    p.app = App::Manual;
    p.max_chunk = 4096;
    for i in 0..10_000u32 {
        p.client
            .call(p.now, CallSpec::new("S", "M", SerializeType::NONE, Bytes::from(i.to_be_bytes().to_vec())))
            .unwrap();
    }
    p.settle();
    assert_eq!(p.requests.len(), 10_000);
    let reqs = std::mem::take(&mut p.requests);
    for r in reqs.iter().rev() {
        p.server.respond(p.now, r.id, Response::ok(r.message.payload.clone())).unwrap();
    }
    p.settle();
    let got = responses(&p.client_events);
    assert_eq!(got.len(), 10_000);
    assert_eq!(got[0].0, 9_999, "answered in reverse order");
    for (seq, payload) in got {
        assert_eq!(payload.as_ref(), (seq as u32).to_be_bytes(), "matched by seq");
    }
}

#[test]
fn deadline_fails_exactly_that_call_and_its_late_reply_is_dropped() {
    let mut p = Pair::default_pair();
    p.app = App::Manual;
    let mut with_deadline = spec(b"slow");
    with_deadline.deadline = Some(p.now + Duration::from_millis(500));
    let slow = p.client.call(p.now, with_deadline).unwrap();
    let other = p.client.call(p.now, spec(b"other")).unwrap();
    p.settle();
    // The server saw the deadline as __ServerTimeout = 500 ms.
    assert_eq!(p.requests[0].message.metadata.get_str("__ServerTimeout").unwrap(), Some("500"));
    assert_eq!(p.requests[0].deadline, Some(p.now + Duration::from_millis(500)));
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.take_client_events(), vec![ClientEvent::Failed { seq: slow, error: CallError::TimedOut }]);
    // Late replies: the timed-out one is dropped and counted, the other completes.
    for r in std::mem::take(&mut p.requests) {
        p.server.respond(p.now, r.id, Response::ok(r.message.payload.clone())).unwrap();
    }
    p.settle();
    assert_eq!(responses(&p.client_events), vec![(other, Bytes::from_static(b"other"))]);
    assert_eq!(p.client.stats().unknown_seq_dropped, 1);
}

#[test]
fn heartbeat_keeps_an_idle_connection_alive() {
    let client = ClientConfig { heartbeat_interval: Some(Duration::from_secs(1)), ..Default::default() };
    let server = ServerConfig { read_timeout: Some(Duration::from_secs(3)), ..Default::default() };
    let mut p = Pair::new(client, server, 3);
    p.latency = Duration::from_millis(20);
    p.run_for(Duration::from_secs(60));
    assert!(!p.client.is_closed() && !p.server.is_closed());
    assert!(p.client.stats().heartbeats_sent >= 55, "{:?}", p.client.stats());
    assert_eq!(p.client.stats().last_heartbeat_rtt, Some(Duration::from_millis(40)));
    assert!(p.client_events.is_empty(), "heartbeat replies never surface: {:?}", p.client_events);
    assert!(p.server.stats().heartbeats >= 55);
}

#[test]
fn blackholed_heartbeat_fails_all_in_flight_after_the_max_wait() {
    let client = ClientConfig {
        heartbeat_interval: Some(Duration::from_secs(1)),
        max_wait_for_heartbeat: Duration::from_secs(5),
        ..Default::default()
    };
    let mut p = Pair::new(client, ServerConfig::default(), 4);
    p.app = App::Manual;
    p.s2c.blackhole = true;
    let a = p.client.call(p.now, spec(b"a")).unwrap();
    let b = p.client.call(p.now, spec(b"b")).unwrap();
    let start = p.now;
    p.run_for(Duration::from_secs(10));
    let lost = LostReason::HeartbeatTimeout(Duration::from_secs(5));
    assert_eq!(
        p.take_client_events(),
        vec![
            ClientEvent::Failed { seq: a, error: CallError::ConnectionLost(lost.clone()) },
            ClientEvent::Failed { seq: b, error: CallError::ConnectionLost(lost.clone()) },
            ClientEvent::ConnectionLost(lost),
        ]
    );
    assert!(p.client.is_closed());
    // The first heartbeat went out at 1 s, so the connection died at 6 s.
    assert!(p.now >= start + Duration::from_secs(6));
}

#[test]
fn oneway_gets_no_response() {
    let mut p = Pair::default_pair();
    let mut s = spec(b"fire");
    s.oneway = true;
    let seq = p.client.call(p.now, s).unwrap();
    assert_eq!(p.client.in_flight(), 0, "a oneway call awaits nothing");
    p.settle();
    assert_eq!(p.take_client_events(), vec![ClientEvent::Sent { seq }]);
    assert_eq!(p.server.stats().requests, 1);
    assert_eq!(p.server.stats().responses, 0);
    assert_eq!(p.s2c.delivered, 0, "not a byte came back");
}

#[test]
fn error_response_carries_its_text() {
    let mut p = Pair::default_pair();
    p.app = App::Auto(|_| Response::error("rpcx: can't find method Foo"));
    let seq = p.client.call(p.now, spec(b"")).unwrap();
    p.settle();
    match p.take_client_events().as_slice() {
        [ClientEvent::Failed { seq: s, error: CallError::Remote(e) }] => {
            assert_eq!(*s, seq);
            assert_eq!(e.text, "rpcx: can't find method Foo");
            assert_eq!(e.to_string(), "rpcx: can't find method Foo");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_push_reaches_the_clients_push_events() {
    let mut p = Pair::default_pair();
    let mut md = Metadata::new();
    md.insert("i", "1");
    assert_eq!(p.server.push(p.now, "notify", "push", md.clone(), "hello").unwrap(), 1);
    assert_eq!(p.server.push(p.now, "notify", "push", Metadata::new(), "again").unwrap(), 2);
    p.settle();
    let pushes: Vec<_> = p
        .take_client_events()
        .into_iter()
        .map(|e| match e {
            ClientEvent::Push(m) => (m.header.seq(), m.payload, m.metadata, m.header.serialize_type()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(pushes[0], (1, Bytes::from_static(b"hello"), md, SerializeType::NONE));
    assert_eq!(pushes[1].0, 2);
}

#[test]
fn server_idle_timeout_closes() {
    let server = ServerConfig { read_timeout: Some(Duration::from_secs(2)), ..Default::default() };
    let mut p = Pair::new(ClientConfig::default(), server, 5);
    p.client.call(p.now, spec(b"x")).unwrap();
    p.run_for(Duration::from_secs(1));
    assert!(!p.server.is_closed(), "a request resets the read timeout");
    p.run_for(Duration::from_secs(3));
    assert!(p.server.is_closed());
    assert_eq!(
        p.server_events.last(),
        Some(&ServerEvent::ConnectionLost(LostReason::IdleTimeout(Duration::from_secs(2))))
    );
}

#[test]
fn garbage_from_the_server_fails_every_in_flight_call() {
    let mut p = Pair::default_pair();
    p.app = App::Manual;
    let a = p.client.call(p.now, spec(b"a")).unwrap();
    p.settle();
    p.client.handle_input(p.now, b"\x09garbage");
    let lost = LostReason::Protocol(DecodeError::BadMagic(9));
    assert_eq!(
        p.take_client_events_now(),
        vec![
            ClientEvent::Failed { seq: a, error: CallError::ConnectionLost(lost.clone()) },
            ClientEvent::ConnectionLost(lost)
        ]
    );
    assert!(matches!(p.client.call(p.now, spec(b"b")), Err(CallRejected::Closed(LostReason::Protocol(_)))));
}

#[test]
fn garbage_from_the_client_loses_the_server_connection() {
    let mut p = Pair::default_pair();
    p.server.handle_input(p.now, &[0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    match p.server.poll_event() {
        Some(ServerEvent::ConnectionLost(LostReason::Protocol(DecodeError::MessageTooLong { .. }))) => {}
        other => panic!("{other:?}"),
    }
    assert!(p.server.is_closed() && !p.server.wants_read());
}

#[test]
fn blocked_then_unblocked() {
    let client = ClientConfig { max_in_flight: 2, ..Default::default() };
    let mut p = Pair::new(client, ServerConfig::default(), 6);
    p.app = App::Manual;
    p.client.call(p.now, spec(b"1")).unwrap();
    p.client.call(p.now, spec(b"2")).unwrap();
    assert_eq!(p.client.call(p.now, spec(b"3")), Err(CallRejected::Blocked));
    assert!(p.client.is_blocked());
    p.settle();
    let r = p.requests.remove(0);
    p.server.respond(p.now, r.id, Response::ok("ok")).unwrap();
    p.settle();
    let unblocked = p.client_events.iter().filter(|e| **e == ClientEvent::Unblocked).count();
    assert_eq!(unblocked, 1);
    assert!(p.client.call(p.now, spec(b"3")).is_ok());
}

#[test]
fn unsent_bytes_bound_blocks_too() {
    let client = ClientConfig { max_unsent_bytes: 100, ..Default::default() };
    let mut p = Pair::new(client, ServerConfig::default(), 6);
    p.client.call(p.now, CallSpec::new("S", "M", SerializeType::NONE, vec![0u8; 200])).unwrap();
    assert_eq!(p.client.call(p.now, spec(b"x")), Err(CallRejected::Blocked));
    p.settle();
    assert!(p.client_events.contains(&ClientEvent::Unblocked));
}

#[test]
fn wants_read_false_under_a_slow_application() {
    let server = ServerConfig { max_in_flight: 3, ..Default::default() };
    let mut p = Pair::new(ClientConfig::default(), server, 8);
    p.app = App::Manual;
    for _ in 0..10 {
        p.client.call(p.now, spec(b"x")).unwrap();
    }
    p.settle();
    assert_eq!(p.requests.len(), 3);
    assert!(!p.server.wants_read());
    assert!(p.c2s.delivered < 10 * 47, "the rest stays in the link, not in the server");
    let r = p.requests.remove(0);
    p.server.respond(p.now, r.id, Response::ok("")).unwrap();
    p.settle();
    assert_eq!(p.requests.len(), 3, "one answered, one more admitted");
}

#[test]
fn heartbeat_is_echoed_even_when_oneway() {
    let mut p = Pair::default_pair();
    // V5a with the oneway bit set.
    let mut hb =
        hex::decode("0800403000000000000000030000001900000000000000000000000000000009d317979cfe3d85cd15").unwrap();
    hb[2] |= 0x20;
    p.server.handle_input(p.now, &hb);
    let mut out = Vec::new();
    assert!(p.server.poll_transmit(&mut out).is_some());
    let mut expect = hb.clone();
    expect[2] |= 0x80;
    assert_eq!(out, expect);
    assert_eq!(p.server.poll_event(), Some(ServerEvent::Heartbeat { seq: 3 }));
    assert_eq!(p.server.in_flight(), 0, "the application never sees it");
}

#[test]
fn responding_twice_is_misuse_and_sends_nothing() {
    let mut p = Pair::default_pair();
    p.app = App::Manual;
    p.client.call(p.now, spec(b"x")).unwrap();
    p.settle();
    let r = p.requests.remove(0);
    p.server.respond(p.now, r.id, Response::ok("a")).unwrap();
    assert_eq!(p.server.respond(p.now, r.id, Response::ok("b")), Err(RespondError::UnknownRequest(r.id)));
    let mut out = Vec::new();
    while p.server.poll_transmit(&mut out).is_some() {}
    assert_eq!(out.len(), 16 + 4 + 5 + 4 + 3 + 4 + 4 + 1, "exactly one frame");
}

#[test]
fn response_echoes_the_whole_request_header() {
    let mut p = Pair::default_pair();
    p.app = App::Manual;
    // V2 with version 7 and reserved nibble 0xA.
    let mut req =
        hex::decode("0800003000000000000000000000001f000000054172697468000000034d756c000000000000000782a1410aa14214")
            .unwrap();
    req[1] = 7;
    req[3] |= 0x0A;
    p.server.handle_input(p.now, &req);
    let Some(ServerEvent::Request(r)) = p.server.poll_event() else { panic!() };
    p.server.respond(p.now, r.id, Response::ok(Bytes::from_static(&[0x81, 0xa1, 0x43, 0xcc, 0xc8]))).unwrap();
    let mut out = Vec::new();
    while p.server.poll_transmit(&mut out).is_some() {}
    let mut v3 =
        hex::decode("0800803000000000000000000000001d000000054172697468000000034d756c000000000000000581a143ccc8")
            .unwrap();
    v3[1] = 7;
    v3[3] |= 0x0A;
    assert_eq!(hex::encode(out), hex::encode(v3));
}

#[test]
fn response_compressed_only_when_request_was_and_over_1024() {
    let mut p = Pair::default_pair();
    let mut big = CallSpec::new("S", "M", SerializeType::NONE, vec![b'z'; 5000]);
    big.compress = CompressType::GZIP;
    p.client.call(p.now, big).unwrap();
    let mut small = CallSpec::new("S", "M", SerializeType::NONE, vec![b'z'; 100]);
    small.compress = CompressType::GZIP;
    p.client.call(p.now, small).unwrap();
    p.settle();
    let mut compress = Vec::new();
    for e in p.take_client_events() {
        if let ClientEvent::Response { response, .. } = e {
            compress.push((response.payload.len(), response.header.compress_type()));
        }
    }
    assert_eq!(compress, vec![(5000, CompressType::GZIP), (100, CompressType::NONE)]);
    assert!(p.c2s.delivered < 1000, "the 5000-byte request went out compressed");
}

#[test]
fn graceful_close_lets_in_flight_calls_finish() {
    let mut p = Pair::default_pair();
    p.app = App::Manual;
    let a = p.client.call(p.now, spec(b"a")).unwrap();
    p.settle();
    p.client.close(p.now, CloseMode::Graceful);
    assert_eq!(p.client.call(p.now, spec(b"b")), Err(CallRejected::Closing));
    assert!(!p.client.is_closed());
    let r = p.requests.remove(0);
    p.server.respond(p.now, r.id, Response::ok("done")).unwrap();
    p.settle();
    let events = p.take_client_events();
    assert_eq!(responses(&events), vec![(a, Bytes::from_static(b"done"))]);
    assert_eq!(events.last(), Some(&ClientEvent::ConnectionLost(LostReason::LocalClose)));
    assert_eq!(events.len(), 2);
}

#[test]
fn immediate_close_fails_in_flight_calls_now() {
    let mut p = Pair::default_pair();
    p.app = App::Manual;
    let a = p.client.call(p.now, spec(b"a")).unwrap();
    let mut ow = spec(b"o");
    ow.oneway = true;
    let o = p.client.call(p.now, ow).unwrap();
    p.client.close(p.now, CloseMode::Immediate);
    let mut out = Vec::new();
    assert_eq!(p.client.poll_transmit(&mut out), None, "nothing more is sent");
    assert_eq!(
        p.take_client_events_now(),
        vec![
            ClientEvent::Failed { seq: a, error: CallError::ConnectionLost(LostReason::LocalClose) },
            ClientEvent::Failed { seq: o, error: CallError::ConnectionLost(LostReason::LocalClose) },
            ClientEvent::ConnectionLost(LostReason::LocalClose),
        ]
    );
}

#[test]
fn peer_eof_mid_frame_fails_calls_with_unexpected_eof() {
    let mut p = Pair::default_pair();
    let a = p.client.call(p.now, spec(b"a")).unwrap();
    p.client.handle_input(p.now, &[0x08, 0x00]);
    p.client.handle_eof(p.now);
    let lost = LostReason::UnexpectedEof { buffered: 2 };
    assert_eq!(
        p.take_client_events_now(),
        vec![
            ClientEvent::Failed { seq: a, error: CallError::ConnectionLost(lost.clone()) },
            ClientEvent::ConnectionLost(lost)
        ]
    );
}

#[test]
fn cancel_fails_the_call_and_drops_the_late_reply() {
    let mut p = Pair::default_pair();
    let a = p.client.call(p.now, spec(b"a")).unwrap();
    assert!(p.client.cancel(p.now, a));
    assert!(!p.client.cancel(p.now, a));
    p.settle();
    assert_eq!(p.take_client_events(), vec![ClientEvent::Failed { seq: a, error: CallError::Cancelled }]);
    assert_eq!(p.client.stats().unknown_seq_dropped, 1);
}

#[test]
fn server_flush_close_sends_the_queued_error_then_closes() {
    let mut p = Pair::default_pair();
    p.app = App::Manual;
    let a = p.client.call(p.now, spec(b"a")).unwrap();
    p.settle();
    let r = p.requests.remove(0);
    p.server.respond(p.now, r.id, Response::error("auth failed")).unwrap();
    p.server.close(p.now, CloseMode::Flush);
    p.settle();
    assert!(p.server.is_closed());
    assert!(
        matches!(&p.client_events[..], [ClientEvent::Failed { seq, error: CallError::Remote(e) }] if *seq == a && e.text == "auth failed")
    );
}

/// Go echoes a heartbeat with every header bit, the compress flag included: a gzip
/// payload that inflates to nothing comes back flagged, as a gzip of nothing.
#[test]
fn heartbeat_echo_keeps_the_compress_flag() {
    use rpcx_core::compress::{Compressor, Gzip};
    use rpcx_core::conn::{ServerConfig, ServerConnection};
    use rpcx_core::wire::{FrameDecoder, Header, Message, MessageType};
    let now = std::time::Instant::now();
    let mut server = ServerConnection::new(ServerConfig::default(), now);
    let mut empty_gz = Vec::new();
    Gzip::default().compress(b"", &mut empty_gz).unwrap();
    let mut header = Header::request(SerializeType::MSGPACK, 77);
    header.set_heartbeat(true);
    header.set_oneway(true);
    header.set_compress_type(CompressType::GZIP);
    let hb = Message {
        header,
        service_path: Bytes::new(),
        service_method: Bytes::new(),
        metadata: Default::default(),
        payload: Bytes::from(empty_gz),
    };
    let mut frame = Vec::new();
    hb.encode_raw(1 << 20, &mut frame).unwrap();
    server.handle_input(now, &frame);
    let mut out = bytes::BytesMut::new();
    while server.poll_transmit(&mut out).is_some() {}
    let echo = FrameDecoder::new(Default::default()).decode_raw(&mut out).unwrap().expect("an echo");
    assert_eq!(echo.header.message_type(), MessageType::Response);
    assert!(echo.header.is_heartbeat() && echo.header.is_oneway());
    assert_eq!(echo.header.compress_type(), CompressType::GZIP);
    assert_eq!(echo.header.seq(), 77);
    assert!(!echo.payload.is_empty(), "a gzip of nothing, not an empty payload");
    assert!(Gzip::default().decompress(&echo.payload, 16).unwrap().is_empty());
}
