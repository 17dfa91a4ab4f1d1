//! The fault suite: attacks on a server, the same for every server runtime
//! (`tests/faults.rs` runs each on tokio, smol and std). The attackers are raw sockets on
//! loopback, so nothing of a client runtime is in the way; every scenario is bounded in
//! time and checks outcomes, never speed (the latency figures under attack are in the
//! `isolation` example).

use crate::services::{Args, router};
use crate::{ServeOpts, ServerCtl, ServerRt};
use bytes::Bytes;
use rpcx_core::codec;
use rpcx_core::conn::MemoryBudget;
use rpcx_core::service::{ServerSettings, ServerTotals};
use rpcx_core::wire::{CompressType, Message, MessageStatus, Metadata, SerializeType, StreamDecoder};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request frame: `path.method`, msgpack `Args`-shaped or raw payload, metadata, gzip.
pub fn request(seq: u64, path: &str, method: &str, payload: Bytes, metadata: Metadata, gzip: bool) -> Vec<u8> {
    let st = if path == "Echo" && method == "Raw" { SerializeType::NONE } else { SerializeType::MSGPACK };
    let mut m = Message::request(st, seq, path.to_owned(), method.to_owned());
    m.payload = payload;
    m.metadata = metadata;
    if gzip {
        m.header.set_compress_type(CompressType::GZIP);
    }
    let mut out = Vec::new();
    m.encode(&Default::default(), &mut out).expect("encode");
    out
}

/// `Arith.Mul` of `a * b` as a frame.
pub fn mul(seq: u64, a: i64, b: i64) -> Vec<u8> {
    let payload = codec::to_payload(SerializeType::MSGPACK, &Args { a, b }).expect("encode").into();
    request(seq, "Arith", "Mul", payload, Metadata::new(), false)
}

/// A raw connection with a read timeout.
pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr.trim_start_matches("tcp@")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// The next frame on `s`, `None` if the server closed the connection.
pub fn next(s: &mut TcpStream, dec: &mut StreamDecoder) -> Option<Message> {
    let mut buf = [0u8; 64 << 10];
    loop {
        if let Some(m) = dec.next_message().expect("a valid frame") {
            return Some(m);
        }
        match s.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => dec.feed(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// One `Arith.Mul` on a fresh connection: the answer `C`.
pub fn call_mul(addr: &str, a: i64, b: i64) -> i64 {
    let mut s = connect(addr);
    s.write_all(&mul(1, a, b)).expect("write");
    let reply = next(&mut s, &mut StreamDecoder::default()).expect("a response");
    reply_c(&reply)
}

fn reply_c(m: &Message) -> i64 {
    assert_ne!(m.header.status(), MessageStatus::ERROR, "error response: {:?}", m.metadata);
    let r: crate::services::Reply = codec::from_payload(m.header.serialize_type(), &m.payload).expect("a Reply");
    r.c
}

/// Whether the server closed `s` within `limit` (reading and discarding what comes).
pub fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 64 << 10];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Poll the server's counters until `ok` holds (at most `limit`).
pub fn eventually(
    server: &dyn ServerCtl,
    limit: Duration,
    what: &str,
    ok: impl Fn(&ServerTotals) -> bool,
) -> ServerTotals {
    let end = Instant::now() + limit;
    loop {
        let st = server.stats().expect("server counters");
        if std::env::var("FAULT_DEBUG").is_ok() {
            eprintln!("{what}: {st:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
        if ok(&st) {
            return st;
        }
        assert!(Instant::now() < end, "{what}: counters are {st:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn serve(s: &dyn ServerRt, settings: ServerSettings) -> Box<dyn ServerCtl> {
    s.serve(router(false), ServeOpts { settings: Some(settings), ..Default::default() })
}

/// Raise this process's open-file limit to its hard limit (a server and its clients
/// share it here: a thousand connections need two thousand descriptors).
pub fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
    }
}

/// Open files of this process (the servers under test run in it).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// A peer that trickles a frame (one byte every 50 ms) is closed by the frame timeout;
/// a healthy idle connection is not, and other clients are served meanwhile.
pub fn trickled_frames_are_closed_by_the_frame_timeout(s: &dyn ServerRt) {
    let mut settings = ServerSettings::default();
    settings.connection.frame_timeout = Some(Duration::from_millis(400));
    let server = serve(s, settings);
    let addr = server.address();
    let mut idle = connect(&addr);
    let mut slow = connect(&addr);
    let frame = mul(1, 6, 7);
    let started = Instant::now();
    let mut closed = false;
    for b in frame.iter().take(frame.len() - 1) {
        if slow.write_all(&[*b]).is_err() || closed_within(&mut slow, Duration::from_millis(50)) {
            closed = true;
            break;
        }
    }
    if !closed {
        closed = closed_within(&mut slow, Duration::from_secs(3));
    }
    let took = started.elapsed();
    assert!(closed, "a trickling peer must be closed");
    assert!(took >= Duration::from_millis(400), "closed before the frame timeout: {took:?}");
    assert_eq!(call_mul(&addr, 6, 7), 42, "others are served");
    // The idle connection (no partial frame) outlived the slow one and still works.
    idle.write_all(&mul(9, 3, 3)).expect("write");
    assert_eq!(reply_c(&next(&mut idle, &mut StreamDecoder::default()).expect("reply")), 9);
    server.close();
}

/// A thousand idle connections are all held, the server still answers a new client,
/// and closing them brings the open count back to zero.
pub fn a_thousand_idle_connections(s: &dyn ServerRt) {
    raise_fd_limit();
    let server = serve(s, ServerSettings::default());
    let addr = server.address();
    let conns: Vec<TcpStream> = (0..1000).map(|_| connect(&addr)).collect();
    eventually(&*server, Duration::from_secs(20), "1000 open", |t| t.connections_open >= 1000);
    assert_eq!(call_mul(&addr, 2, 21), 42);
    drop(conns);
    eventually(&*server, Duration::from_secs(20), "all closed", |t| t.connections_open == 0);
    server.close();
}

/// Garbage, truncation, gzip bombs and metadata abuse on some connections while another
/// keeps calling: every attack ends in a clean close (counted as a protocol error) or a
/// correct answer, and every one of the victim's calls is answered correctly.
pub fn garbage_truncation_and_bombs_while_another_calls(s: &dyn ServerRt) {
    let server = serve(s, ServerSettings::default());
    let addr = server.address();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let victim = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = connect(&addr);
            let mut dec = StreamDecoder::default();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || n < 20 {
                let a = n as i64 % 1000;
                c.write_all(&mul(n, a, 3)).expect("victim write");
                let r = next(&mut c, &mut dec).expect("victim reply");
                assert_eq!((r.header.seq(), reply_c(&r)), (n, a * 3));
                n += 1;
            }
            n
        })
    };
    let before = server.stats().expect("counters").protocol_errors;
    // Not rpcx at all (nor HTTP, which the port also speaks).
    let mut g = connect(&addr);
    g.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").expect("write");
    assert!(closed_within(&mut g, Duration::from_secs(5)), "garbage closes");
    // A truncated frame, then the peer goes away.
    let mut t = connect(&addr);
    let f = mul(1, 1, 1);
    t.write_all(&f[..f.len() - 3]).expect("write");
    drop(t);
    // A gzip bomb: 64 MiB of zeros, past the 32 MiB decompression limit.
    let mut b = connect(&addr);
    b.write_all(&request(1, "Echo", "Raw", Bytes::from(vec![0u8; 64 << 20]), Metadata::new(), true)).expect("write");
    assert!(closed_within(&mut b, Duration::from_secs(20)), "a bomb closes");
    // A large gzip payload under the limit is answered in full.
    let mut z = connect(&addr);
    z.write_all(&request(1, "Echo", "Raw", Bytes::from(vec![5u8; 8 << 20]), Metadata::new(), true)).expect("write");
    let r = next(&mut z, &mut StreamDecoder::default()).expect("an echo");
    assert_eq!(r.payload.len(), 8 << 20);
    assert!(r.payload.iter().all(|&x| x == 5));
    // 4096 metadata pairs are served (and echoed back); 4097 close the connection.
    let many: Metadata = (0..4096).map(|i| (format!("key-{i}"), format!("v{i}"))).collect();
    let payload = codec::to_payload(SerializeType::MSGPACK, &Args { a: 1, b: 2 }).expect("encode");
    let mut m = connect(&addr);
    m.write_all(&request(1, "Echo", "Meta", payload.clone().into(), many.clone(), false)).expect("write");
    let r = next(&mut m, &mut StreamDecoder::default()).expect("a reply");
    assert_eq!(r.metadata.len(), 4096);
    assert_eq!(r.metadata.get("key-4095").map(|v| &v[..]), Some(&b"v4095"[..]));
    let mut too_many = many;
    too_many.insert("one-more", "x");
    let mut m2 = connect(&addr);
    m2.write_all(&request(1, "Echo", "Meta", payload.into(), too_many, false)).expect("write");
    assert!(closed_within(&mut m2, Duration::from_secs(5)), "too many pairs close");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let calls = victim.join().expect("the victim's calls all succeeded");
    assert!(calls >= 20);
    eventually(&*server, Duration::from_secs(5), "protocol errors counted", |t| t.protocol_errors >= before + 3);
    server.close();
}

/// A peer that pipelines requests for large responses and never reads is stopped and
/// then closed once the server is over its memory budget for the grace period; another
/// client is served throughout, and the budget's peak stays near its limit.
pub fn a_peer_that_never_reads_is_closed_under_memory_pressure(s: &dyn ServerRt) {
    let mut settings = ServerSettings::default();
    settings.connection.decoder.max_message_len = 1 << 20;
    settings.connection.encoder.max_message_len = 1 << 20;
    // Limit 0 is raised to its floor, two frames: 2 MiB.
    settings.connection.budget = Arc::new(MemoryBudget::new(0, 4, Duration::from_millis(300)));
    let server = serve(s, settings);
    let addr = server.address();
    let hog = connect(&addr);
    hog.set_write_timeout(Some(Duration::from_millis(200))).expect("write timeout");
    let writer = {
        let mut hog = hog.try_clone().expect("clone");
        std::thread::spawn(move || {
            // Each asks for a 256 KiB echo: 64 MiB of responses if all were answered.
            let f = request(0, "Echo", "Raw", Bytes::from(vec![1u8; 256 << 10]), Metadata::new(), false);
            let end = Instant::now() + Duration::from_secs(15);
            for _ in 0..256 {
                if Instant::now() > end {
                    break;
                }
                match hog.write_all(&f) {
                    Ok(()) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => return, // the server closed it
                }
            }
        })
    };
    eventually(&*server, Duration::from_secs(15), "the hog is closed", |t| {
        t.connections_accepted >= 1 && t.connections_open == 0
    });
    assert_eq!(call_mul(&addr, 7, 6), 42, "others are served");
    let st = server.stats().expect("counters");
    assert!(st.memory_peak < 16 << 20, "peak {} bytes", st.memory_peak);
    eventually(&*server, Duration::from_secs(5), "memory returned", |t| t.memory_used == 0);
    drop(hog);
    writer.join().expect("writer");
    server.close();
}

/// Connect/close churn (some peers leave mid-frame, some before reading their answer)
/// leaks no file descriptor.
pub fn connect_close_churn_leaks_nothing(s: &dyn ServerRt) {
    raise_fd_limit();
    let server = serve(s, ServerSettings::default());
    let addr = server.address();
    assert_eq!(call_mul(&addr, 1, 1), 1);
    eventually(&*server, Duration::from_secs(5), "idle", |t| t.connections_open == 0);
    let before = open_fds();
    let f = mul(1, 2, 3);
    for i in 0..300 {
        let mut c = connect(&addr);
        match i % 3 {
            0 => {}
            1 => c.write_all(&f[..f.len() / 2]).expect("write"),
            _ => c.write_all(&f).expect("write"),
        }
    }
    eventually(&*server, Duration::from_secs(20), "all closed", |t| t.connections_open == 0);
    // The server's side of each socket is closed once its connection is gone.
    let end = Instant::now() + Duration::from_secs(10);
    while open_fds() > before + 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(open_fds() <= before + 2, "fds before {before}, after {}", open_fds());
    server.close();
}

/// At the connection cap a new connection is closed at once (and counted); once a slot
/// is free, new clients are served again.
pub fn the_connection_cap_closes_new_connections_at_once(s: &dyn ServerRt) {
    let server = serve(s, ServerSettings { max_connections: 4, ..Default::default() });
    let addr = server.address();
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..4 {
        let mut c = connect(&addr);
        c.write_all(&mul(i, 2, 2)).expect("write");
        assert_eq!(reply_c(&next(&mut c, &mut StreamDecoder::default()).expect("reply")), 4);
        held.push(c);
    }
    let mut extra = connect(&addr);
    let _ = extra.write_all(&mul(1, 2, 2));
    assert!(closed_within(&mut extra, Duration::from_secs(5)), "over the cap: closed promptly");
    eventually(&*server, Duration::from_secs(5), "counted", |t| t.connections_over_cap >= 1);
    drop(held.pop());
    eventually(&*server, Duration::from_secs(5), "a slot frees", |t| t.connections_open == 3);
    assert_eq!(call_mul(&addr, 5, 5), 25);
    server.close();
}

/// 100 panicking handlers on one connection, in every handler mode: panics before the
/// future exists (inline), after waiting (a spawned task), and on std's worker pool
/// alone; each is an error reply, and the connection then serves normal calls.
pub fn panicking_handlers_in_every_mode(s: &dyn ServerRt) {
    for worker_pool_only in [false, true] {
        let server = s.serve(router(false), ServeOpts { worker_pool_only, ..Default::default() });
        let mut c = connect(&server.address());
        let mut dec = StreamDecoder::default();
        let payload =
            |a, b| -> Bytes { codec::to_payload(SerializeType::MSGPACK, &Args { a, b }).expect("encode").into() };
        let mut batch = Vec::new();
        for i in 0..100u64 {
            let method = if i % 2 == 0 { "Div" } else { "PanicLater" };
            batch.extend(request(i, "Arith", method, payload(i as i64, 0), Metadata::new(), false));
        }
        c.write_all(&batch).expect("write");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let r = next(&mut c, &mut dec).expect("a reply to every panicking call");
            assert_eq!(r.header.status(), MessageStatus::ERROR);
            let text = r.metadata.get_str(rpcx_core::wire::SERVICE_ERROR_KEY).expect("utf-8").expect("error text");
            assert!(text.starts_with("[service internal error]: "), "{text}");
            assert!(seen.insert(r.header.seq()));
        }
        c.write_all(&mul(1000, 6, 7)).expect("write");
        let r = next(&mut c, &mut dec).expect("the connection survived");
        assert_eq!((r.header.seq(), reply_c(&r)), (1000, 42));
        c.write_all(&request(1001, "Arith", "PanicLater", payload(42, 6), Metadata::new(), false)).expect("write");
        let r = next(&mut c, &mut dec).expect("reply");
        assert_eq!(reply_c(&r), 7);
        server.close();
    }
}
