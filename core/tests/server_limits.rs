//! The server machine's defences against hostile peers, deterministically: the frame
//! timeout, bounded work per call (large decompressions in steps), and the server-wide
//! memory budget (frame reservations, decompression slots, peers that do not read).

use bytes::Bytes;
use rpcx_core::conn::{
    CloseMode, LostReason, MemoryBudget, Response, ServerConfig, ServerConnection, ServerEvent, WORK_PER_TURN,
};
use rpcx_core::wire::{CompressType, DecoderConfig, EncoderConfig, Message, SerializeType};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn frame(seq: u64, payload: Vec<u8>, gzip: bool) -> Vec<u8> {
    let mut m = Message::request(SerializeType::JSON, seq, "Arith", "Mul");
    m.payload = Bytes::from(payload);
    // The encoder compresses a payload whose header asks for gzip.
    if gzip {
        m.header.set_compress_type(CompressType::GZIP);
    }
    let mut out = Vec::new();
    m.encode(&EncoderConfig::default(), &mut out).unwrap();
    out
}

fn requests(conn: &mut ServerConnection) -> Vec<rpcx_core::conn::Request> {
    std::iter::from_fn(|| conn.poll_event())
        .filter_map(|e| match e {
            ServerEvent::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn lost(conn: &mut ServerConnection) -> Option<LostReason> {
    std::iter::from_fn(|| conn.poll_event()).find_map(|e| match e {
        ServerEvent::ConnectionLost(r) => Some(r),
        _ => None,
    })
}

#[test]
fn a_trickled_frame_is_closed_by_the_frame_timeout() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    let f = frame(1, b"{}".to_vec(), false);
    // One byte per second: the frame clock started with the first byte.
    for (i, b) in f[..10].iter().enumerate() {
        c.handle_input(t0 + Duration::from_secs(i as u64), &[*b]);
    }
    let deadline = c.poll_timeout().expect("a frame timer");
    assert_eq!(deadline, t0 + Duration::from_secs(30));
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!c.is_closed());
    c.handle_timeout(deadline);
    assert_eq!(lost(&mut c), Some(LostReason::FrameTimeout(Duration::from_secs(30))));
}

#[test]
fn whole_frames_and_idle_connections_keep_no_frame_timer() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    assert_eq!(c.poll_timeout(), None);
    let mut two = frame(1, b"{}".to_vec(), false);
    let next = frame(2, b"{}".to_vec(), false);
    two.extend_from_slice(&next[..5]);
    c.handle_input(t0, &two);
    assert_eq!(requests(&mut c).len(), 1);
    // The second frame began at t0 + 20 s: its clock starts then, not at t0.
    c.handle_input(t0 + Duration::from_secs(20), &next[5..8]);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    c.handle_input(t0 + Duration::from_secs(25), &next[8..]);
    assert_eq!(requests(&mut c).len(), 1);
    assert_eq!(c.poll_timeout(), None, "no partial frame, no timer");
}

#[test]
fn the_frame_clock_stops_while_the_application_holds_reading() {
    let t0 = Instant::now();
    let cfg = ServerConfig { max_in_flight: 1, ..Default::default() };
    let mut c = ServerConnection::new(cfg, t0);
    let mut bytes = frame(1, b"{}".to_vec(), false);
    bytes.extend_from_slice(&frame(2, b"{}".to_vec(), false)[..7]);
    c.handle_input(t0, &bytes);
    let r = requests(&mut c);
    assert_eq!(r.len(), 1);
    assert!(!c.wants_read());
    // A minute later the application answers; the partial frame gets a fresh 30 s.
    c.handle_timeout(t0 + Duration::from_secs(60));
    assert!(!c.is_closed());
    c.respond(t0 + Duration::from_secs(60), r[0].id, Response::ok("1")).unwrap();
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(90)));
}

#[test]
fn a_large_decompression_runs_in_bounded_steps() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    let data = vec![7u8; 8 << 20];
    c.handle_input(t0, &frame(1, data.clone(), true));
    let mut turns = 1;
    let mut got = requests(&mut c);
    while got.is_empty() {
        assert!(c.has_work(), "work pending until the request is out");
        assert!(!c.wants_read(), "no reading while work is pending");
        assert_eq!(c.poll_timeout(), Some(t0), "a timer-only driver continues at once");
        c.work(t0);
        turns += 1;
        got = requests(&mut c);
    }
    assert!(turns >= (8 << 20) / WORK_PER_TURN, "{turns} turns");
    assert_eq!(got[0].message.payload.len(), 8 << 20);
    assert!(got[0].message.payload.iter().all(|&b| b == 7));
    assert!(!c.has_work());
    assert!(c.wants_read());
}

#[test]
fn a_gzip_bomb_is_refused_without_inflating_past_the_limit() {
    let t0 = Instant::now();
    let cfg = ServerConfig {
        decoder: DecoderConfig { max_decompressed_len: 4 << 20, ..Default::default() },
        ..Default::default()
    };
    let budget = cfg.budget.clone();
    let mut c = ServerConnection::new(cfg, t0);
    c.handle_input(t0, &frame(1, vec![0u8; 16 << 20], true));
    while c.has_work() {
        c.work(t0);
    }
    assert!(matches!(lost(&mut c), Some(LostReason::Protocol(_))));
    assert!(budget.peak() < 12 << 20, "peak {}", budget.peak());
    assert_eq!(budget.used(), 0);
    assert_eq!(budget.inflations(), 0);
}

fn small_budget(limit: usize, inflations: usize) -> ServerConfig {
    ServerConfig {
        decoder: DecoderConfig { max_message_len: 1 << 20, max_decompressed_len: 4 << 20, ..Default::default() },
        budget: Arc::new(MemoryBudget::new(limit, inflations, Duration::from_secs(10))),
        ..Default::default()
    }
}

#[test]
fn large_frames_wait_for_the_budget_and_started_ones_finish() {
    let t0 = Instant::now();
    // Limit 2 MiB (the floor: two maximum frames); three peers send 900 KiB frames.
    let cfg = Arc::new(small_budget(0, 4));
    let budget = cfg.budget.clone();
    let mut conns: Vec<ServerConnection> =
        (0..3).map(|_| ServerConnection::with_shared_config(cfg.clone(), t0)).collect();
    let f = frame(1, vec![1u8; 900 << 10], false);
    for c in &mut conns {
        c.handle_input(t0, &f[..100]);
    }
    assert!(conns[0].wants_read() && conns[1].wants_read());
    assert!(!conns[2].wants_read(), "the third frame does not fit");
    assert!(budget.used() <= 2 << 20);
    assert_eq!(conns[2].poll_timeout(), Some(t0 + Duration::from_millis(5)), "it looks again soon");
    // The first finishes and answers; the third gets its reservation.
    conns[0].handle_input(t0, &f[100..]);
    let r = requests(&mut conns[0]);
    assert_eq!(r.len(), 1);
    drop(r);
    conns[2].handle_timeout(t0 + Duration::from_millis(5));
    assert!(conns[2].wants_read());
    conns[2].handle_input(t0, &f[100..]);
    assert_eq!(requests(&mut conns[2]).len(), 1);
    drop(conns);
    assert_eq!(budget.used(), 0, "every byte given back");
}

#[test]
fn decompressions_beyond_the_slots_wait() {
    let t0 = Instant::now();
    let cfg = Arc::new(small_budget(64 << 20, 1));
    let budget = cfg.budget.clone();
    let mut a = ServerConnection::with_shared_config(cfg.clone(), t0);
    let mut b = ServerConnection::with_shared_config(cfg, t0);
    let z = frame(1, vec![3u8; 3 << 20], true);
    a.handle_input(t0, &z);
    assert!(a.has_work());
    assert_eq!(budget.inflations(), 1);
    b.handle_input(t0, &z);
    assert!(!b.has_work() && !b.wants_read(), "no slot: b waits");
    b.handle_timeout(t0 + Duration::from_millis(5));
    assert!(requests(&mut b).is_empty());
    while a.has_work() {
        a.work(t0);
    }
    assert_eq!(requests(&mut a).len(), 1);
    assert_eq!(budget.inflations(), 0);
    b.handle_timeout(t0 + Duration::from_millis(10));
    while b.has_work() {
        b.work(t0);
    }
    assert_eq!(requests(&mut b)[0].message.payload.len(), 3 << 20);
}

#[test]
fn a_peer_that_never_reads_is_closed_after_the_grace_while_the_server_is_over_budget() {
    let t0 = Instant::now();
    let cfg = Arc::new(small_budget(0, 4));
    let budget = cfg.budget.clone();
    let mut hog = ServerConnection::with_shared_config(cfg.clone(), t0);
    let mut polite = ServerConnection::with_shared_config(cfg, t0);
    // The hog sends requests and never reads: 3 MiB of responses queue up.
    let mut ids = Vec::new();
    for seq in 0..12 {
        hog.handle_input(t0, &frame(seq, b"{}".to_vec(), false));
        ids.extend(requests(&mut hog).into_iter().map(|r| r.id));
    }
    for id in ids {
        let _ = hog.respond(t0, id, Response::ok(vec![0u8; 256 << 10]));
    }
    hog.handle_timeout(t0);
    assert!(budget.used() > 2 << 20);
    assert!(!hog.wants_read(), "over budget with output queued: no more requests");
    // The polite peer, with nothing queued, is still served.
    polite.handle_input(t0, &frame(1, b"{}".to_vec(), false));
    assert!(polite.wants_read());
    assert_eq!(requests(&mut polite).len(), 1);
    // After the grace period the hog is closed and its memory returned.
    hog.handle_timeout(t0 + Duration::from_secs(9));
    assert!(!hog.is_closed());
    hog.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(lost(&mut hog), Some(LostReason::MemoryBudget));
    assert!(budget.used() < 1 << 20, "used {}", budget.used());
}

#[test]
fn a_peer_that_reads_slowly_is_not_closed() {
    let t0 = Instant::now();
    let cfg = Arc::new(small_budget(0, 4));
    let mut c = ServerConnection::with_shared_config(cfg, t0);
    let mut ids = Vec::new();
    for seq in 0..12 {
        c.handle_input(t0, &frame(seq, b"{}".to_vec(), false));
        ids.extend(requests(&mut c).into_iter().map(|r| r.id));
    }
    for id in ids {
        let _ = c.respond(t0, id, Response::ok(vec![0u8; 256 << 10]));
    }
    for s in 1..=12 {
        let now = t0 + Duration::from_secs(5 * s);
        c.handle_timeout(now);
        let mut out = Vec::new();
        let _ = c.poll_transmit(&mut out);
    }
    assert!(!c.is_closed(), "{:?}", c.lost_reason());
    c.close(t0 + Duration::from_secs(61), CloseMode::Immediate);
    assert_eq!(c.charged_bytes(), 0);
}

#[test]
fn queued_responses_count_as_real_memory() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig { max_unsent_bytes: 1 << 20, ..Default::default() }, t0);
    let mut n = 0;
    while c.wants_read() {
        c.handle_input(t0, &frame(n, b"{}".to_vec(), false));
        for r in requests(&mut c) {
            c.respond(t0, r.id, Response::ok("1")).unwrap();
        }
        n += 1;
    }
    // A tiny response is about 40 bytes on the wire but several hundred in memory: the
    // 1 MiB limit is reached after a few thousand, not 25 000.
    assert!(n < 5000, "{n} responses queued");
    assert!(c.charged_bytes() >= 1 << 20);
}

#[test]
fn large_frames_arrive_intact_whatever_the_read_sizes() {
    use rpcx_core::wire::StreamDecoder;
    let frames: Vec<Vec<u8>> =
        (0..5u8).map(|i| frame(i as u64, vec![i; (70 << 10) + i as usize * 9000], false)).collect();
    let stream: Vec<u8> = frames.concat();
    for chunk in [1000, 7 << 10, 64 << 10, 200 << 10] {
        let mut d = StreamDecoder::default();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            d.feed(piece);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(d.buffered(), 0);
        assert_eq!(got.len(), 5, "chunk {chunk}");
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.header.seq(), i as u64);
            assert_eq!(m.payload.len(), (70 << 10) + i * 9000);
            assert!(m.payload.iter().all(|&b| b == i as u8));
        }
    }
}

/// A server does not learn names (`DecoderConfig::learn_names` is off in
/// `ServerConfig`'s default): a made-up service name is a slice of each connection's
/// own input, not one static copy shared by both, so a peer cannot fill the
/// process-wide table of learned names through a server.
#[test]
fn a_server_does_not_learn_a_peers_names() {
    let t0 = Instant::now();
    let path = |name: &str| {
        let mut c = ServerConnection::new(ServerConfig::default(), t0);
        let mut m = Message::request(SerializeType::JSON, 1, name.to_owned(), "Mul");
        m.payload = Bytes::from_static(b"{}");
        let mut wire = Vec::new();
        m.encode(&EncoderConfig::default(), &mut wire).unwrap();
        c.handle_input(t0, &wire);
        let r = requests(&mut c).pop().expect("a request");
        assert_eq!(&r.message.service_path[..], name.as_bytes());
        r.message.service_path
    };
    let (a, b) = (path("MadeUpByAPeer"), path("MadeUpByAPeer"));
    assert_ne!(a.as_ptr(), b.as_ptr(), "one shared copy: the server learned the name");
    // A client-side decoder with the defaults learns it: one copy for both.
    let learned = |name: &str| {
        let mut wire = bytes::BytesMut::new();
        Message::request(SerializeType::JSON, 1, name.to_owned(), "Mul")
            .encode(&EncoderConfig::default(), &mut wire)
            .unwrap();
        rpcx_core::wire::FrameDecoder::default().decode(&mut wire).unwrap().unwrap().service_path
    };
    assert_eq!(learned("LearnedByAClient").as_ptr(), learned("LearnedByAClient").as_ptr());
}
