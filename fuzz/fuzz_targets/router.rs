//! Fuzz the service router through a whole server session: arbitrary bytes and
//! well-formed request frames (any service, method, serialize type, metadata, oneway,
//! heartbeat, gzip) go into a `ServerConnection` and through `Session::dispatch`, to
//! handlers that answer, fail, panic before their future exists, panic while polled,
//! wait (finished later, in any order), and push.
//!
//! Checked: no panic escapes (every handler panic is an error reply); every response
//! echoes a requested seq and every request that is not oneway is answered exactly
//! once (or the connection is lost); every byte sent is a valid frame stream.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rpcx_core::compress::Gzip;
use rpcx_core::conn::{PushError, ServerConnection};
use rpcx_core::service::{
    Context, Dispatch, Dispatcher, Peer, Push, PushQueue, PushSink, Pusher, Router, ServerSettings, Service,
    ServiceError, Session, Waiting,
};
use rpcx_core::wire::{CompressType, Message, MessageType, Metadata, SerializeType, StreamDecoder};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

/// Pushes from handlers, queued until the session takes them.
#[derive(Default)]
struct Sink(Mutex<VecDeque<Push>>);

impl PushSink for Sink {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError> {
        let mut q = self.0.lock().unwrap();
        if q.len() >= 16 {
            return Err(PushError::Blocked);
        }
        q.push_back(Push { service_path, service_method, metadata, payload });
        Ok(())
    }
}

struct Queue(Arc<Sink>);

impl PushQueue for Queue {
    fn pusher(&mut self) -> Pusher {
        Pusher::new(self.0.clone())
    }
    fn next_push(&mut self) -> Option<Push> {
        self.0.0.lock().unwrap().pop_front()
    }
}

/// Ready after `n` polls.
struct After(u8);

impl Future for After {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn router() -> Router {
    let echo = Service::new("Echo")
        .raw_method("Raw", |_c: Context, b: Bytes| async move { Ok(b) })
        .raw_method("Fail", |_c: Context, b: Bytes| async move { Err(format!("failed on {} bytes", b.len()).into()) })
        .raw_method("PanicNow", |_c: Context, b: Bytes| -> std::future::Ready<Result<Bytes, ServiceError>> {
            panic!("handler panic: before the future exists ({} bytes)", b.len())
        })
        .raw_method("PanicLater", |_c: Context, b: Bytes| async move {
            After(1).await;
            if !b.is_empty() {
                panic!("handler panic: while polled");
            }
            Ok(b)
        })
        .raw_method("Wait", |_c: Context, b: Bytes| async move {
            After(b.first().copied().unwrap_or(0) % 4).await;
            Ok(b)
        })
        .raw_method("Push", |c: Context, b: Bytes| async move {
            let _ = c.pusher().push("Echo", "Pushed", Metadata::new(), b.clone());
            Ok(b)
        });
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Args {
        #[serde(rename = "A")]
        a: i64,
        #[serde(rename = "B")]
        b: i64,
    }
    let arith = Service::new("Arith")
        .method("Mul", |_c: Context, a: Args| async move { Ok(Args { a: a.a.wrapping_mul(a.b), b: 0 }) });
    Router::new().service(echo).service(arith)
}

/// Operations per execution: enough for deep sequences (eight requests in flight, more
/// queued behind them), few enough that an execution stays cheap.
const MAX_OPS: usize = 48;

const PATHS: [&str; 3] = ["Echo", "Arith", "Nope"];
const METHODS: [&str; 8] = ["Raw", "Fail", "PanicNow", "PanicLater", "Wait", "Push", "Mul", ""];
const TYPES: [SerializeType; 4] =
    [SerializeType::NONE, SerializeType::JSON, SerializeType::PROTOBUF, SerializeType::MSGPACK];

fn dispatcher() -> Arc<Dispatcher> {
    static D: OnceLock<Arc<Dispatcher>> = OnceLock::new();
    D.get_or_init(|| {
        // The handlers' own panics are expected (and caught by the router): keep them
        // from the fuzzer's hook, which aborts on any panic; any other panic still goes
        // to it.
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m.starts_with("handler panic:")) {
                fuzzer_hook(info);
            }
        }));
        let mut settings = ServerSettings::default();
        settings.connection.max_in_flight = 8;
        // rpcx only: the http_conn target covers HTTP connections.
        settings.connection.http = rpcx_core::http::HttpConfig::disabled();
        // gzip at the fastest level, as in server_conn: deflating at the default level
        // costs more than the rest of an execution.
        settings.connection.encoder.compressors.register(CompressType::GZIP, Arc::new(Gzip::with_level(1)));
        Arc::new(Dispatcher::new(router(), settings))
    })
    .clone()
}

fn noop_poll(w: &mut Waiting) -> Poll<rpcx_core::service::Served> {
    let waker = std::task::Waker::noop();
    Pin::new(w).poll(&mut TaskContext::from_waker(waker))
}

/// Drive the session until it is idle: bounded work, output (checked: every response
/// answers a request asked once, unless arbitrary bytes made that unknowable), dispatch.
#[allow(clippy::too_many_arguments)]
fn settle(
    conn: &mut ServerConnection,
    session: &mut Session,
    pushes: &mut Queue,
    waiting: &mut Vec<Waiting>,
    sent: &mut StreamDecoder,
    asked: &mut BTreeMap<u64, bool>,
    lost: bool,
    now: Instant,
) {
    loop {
        while conn.has_work() {
            conn.work(now);
        }
        let mut out = Vec::new();
        while conn.poll_transmit(&mut out).is_some() {}
        sent.feed(&out);
        while let Some(m) = sent.next_message().expect("the server sent an invalid frame") {
            if m.header.message_type() == MessageType::Response && !lost {
                let owed = asked.remove(&m.header.seq());
                assert!(
                    owed.is_some() || m.header.is_heartbeat(),
                    "response to seq {} never asked (or twice)",
                    m.header.seq()
                );
            }
        }
        let mut spawn = |w| waiting.push(w);
        if session.dispatch(conn, now, pushes, &mut spawn) == Dispatch::Idle {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let d = dispatcher();
    let mut now = Instant::now();
    let Some(mut session) = d.session(Arc::new(Peer::named("fuzz")), now) else { return };
    let mut conn = session.connection(now);
    let mut pushes = Queue(Arc::new(Sink::default()));
    let mut waiting: Vec<Waiting> = Vec::new();
    // seq -> whether a response is owed.
    let mut asked: BTreeMap<u64, bool> = BTreeMap::new();
    let mut sent = StreamDecoder::default();
    let mut lost = false;
    let mut i = 0;
    let next = |i: &mut usize| -> u8 {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    let mut seq = 0u64;
    let mut gzipped = 0;
    let mut ops = 0;
    while i < data.len() && ops < MAX_OPS {
        ops += 1;
        match next(&mut i) % 6 {
            0 => {
                let n = usize::from(next(&mut i) % 64);
                let start = i.min(data.len());
                let end = (start + n).min(data.len());
                conn.handle_input(now, &data[start..end]);
                // Arbitrary bytes may contain requests of any seq: answers to them are
                // not checked against `asked`.
                lost = true;
                i = end;
            }
            1 | 2 => {
                let a = next(&mut i);
                let b = next(&mut i);
                seq += 1;
                let path = PATHS[usize::from(a % 3)];
                let method = METHODS[usize::from(a / 3 % 8)];
                let mut m = Message::request(TYPES[usize::from(b % 4)], seq, path, method);
                m.header.set_oneway(b & 4 != 0);
                m.header.set_heartbeat(b & 8 == 8 && a & 1 == 1);
                // One gzip frame per execution: it costs an inflate and a deflate,
                // more than the rest of an execution.
                if b & 16 != 0 && gzipped < 1 {
                    gzipped += 1;
                    m.header.set_compress_type(CompressType::GZIP);
                }
                if b & 32 != 0 {
                    m.metadata.insert("k", "v");
                }
                let n = usize::from(next(&mut i) % 32);
                let start = i.min(data.len());
                let end = (start + n).min(data.len());
                m.payload = Bytes::copy_from_slice(&data[start..end]);
                i = end;
                let mut buf = Vec::new();
                m.encode(&d.settings().connection.encoder, &mut buf).expect("encode");
                asked.insert(seq, !m.header.is_oneway());
                conn.handle_input(now, &buf);
            }
            3 => {
                // Finish a waiting handler (any of them, in any order).
                if !waiting.is_empty() {
                    let k = usize::from(next(&mut i)) % waiting.len();
                    if let Poll::Ready(served) = noop_poll(&mut waiting[k]) {
                        drop(waiting.swap_remove(k));
                        session.finish(&mut conn, now, served, &mut pushes);
                    }
                }
            }
            4 => {
                now += Duration::from_millis(u64::from(next(&mut i)) * 100);
                conn.handle_timeout(now);
            }
            _ => {
                if next(&mut i) % 16 == 0 {
                    conn.handle_eof(now);
                }
            }
        }
        settle(&mut conn, &mut session, &mut pushes, &mut waiting, &mut sent, &mut asked, lost, now);
        if conn.is_closed() {
            lost = true;
        }
    }
    // Everything still waiting finishes (each handler within four polls; requests past
    // max_in_flight are dispatched as others finish); then every request owed is
    // answered.
    for _ in 0..1000 {
        if waiting.is_empty() && !conn.has_work() {
            break;
        }
        for mut w in std::mem::take(&mut waiting) {
            match noop_poll(&mut w) {
                Poll::Ready(served) => session.finish(&mut conn, now, served, &mut pushes),
                Poll::Pending => waiting.push(w),
            }
        }
        settle(&mut conn, &mut session, &mut pushes, &mut waiting, &mut sent, &mut asked, lost, now);
    }
    if !lost && !conn.is_closed() {
        let owed: Vec<u64> = asked.iter().filter(|(_, owed)| **owed).map(|(s, _)| *s).collect();
        assert!(owed.is_empty(), "requests never answered: {owed:?}");
    }
    session.end(&conn);
});
