//! The `tracing` spans and events of a call, on every server and client runtime: a
//! `rpcx.call` span on the client and a `rpcx.request` span (inside the connection's
//! `rpcx.conn`) on the server, with the RPC attributes and the outcome; an event for
//! every attempt after the first (failover). All under the target `rpcx`, quiet unless
//! a subscriber enables it (`RUST_LOG=rpcx=debug` with an env filter).
//!
//! One process-wide subscriber records everything; the tests of this file share it and
//! tell their spans apart by the server address.

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::services::{Args, router};
use rpcx_conformance::xclient::{XClientRt, XOpts, XReq};
use rpcx_conformance::{ClientRt, ConnOpts, Fail, ServeOpts, ServerRt};
use rpcx_core::codec;
use rpcx_core::conn::CallSpec;
use rpcx_core::govern::FailMode;
use rpcx_core::wire::SerializeType;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// A span as recorded: its name, its fields (as text), its parent's name.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: BTreeMap<String, String>,
    parent: Option<String>,
}

#[derive(Default)]
struct Recorded {
    spans: Vec<Seen>,
    ids: BTreeMap<u64, usize>,
    events: Vec<BTreeMap<String, String>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Capture(Arc<Mutex<Recorded>>);

impl<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = Seen { name: attrs.metadata().name().to_owned(), ..Default::default() };
        attrs.record(&mut Fields(&mut seen.fields));
        seen.parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.name().to_owned());
        let mut r = self.0.lock().unwrap();
        let i = r.spans.len();
        r.spans.push(seen);
        r.ids.insert(id.into_u64(), i);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut r = self.0.lock().unwrap();
        if let Some(&i) = r.ids.get(&id.into_u64()) {
            values.record(&mut Fields(&mut r.spans[i].fields));
        }
    }
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().events.push(fields);
    }
    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        // Ids are reused after a span closes: forget this one.
        self.0.lock().unwrap().ids.remove(&id.into_u64());
    }
}

fn recorded() -> &'static Arc<Mutex<Recorded>> {
    static R: OnceLock<Arc<Mutex<Recorded>>> = OnceLock::new();
    R.get_or_init(|| {
        let r = Arc::new(Mutex::new(Recorded::default()));
        // Exactly what a user would write: only the `rpcx` target, at debug.
        let subscriber = Registry::default().with(Capture(r.clone()).with_filter(EnvFilter::new("rpcx=debug")));
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");
        r
    })
}

fn spans_named(name: &str, peer_contains: &str) -> Vec<Seen> {
    let r = recorded().lock().unwrap();
    r.spans
        .iter()
        .filter(|s| s.name == name && s.fields.get("peer").is_some_and(|p| p.contains(peer_contains)))
        .cloned()
        .collect()
}

fn mul(a: i64, b: i64) -> CallSpec {
    let st = SerializeType::MSGPACK;
    CallSpec::new("Arith", "Mul", st, codec::to_payload(st, &Args { a, b }).unwrap())
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spans_of_a_call(s: &dyn ServerRt, c: &dyn ClientRt) {
    recorded();
    let server = s.serve(router(false), ServeOpts::default());
    let addr = server.address();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let client = c.connect(&addr, ConnOpts::default());
    // The call's span is made where the call is made: the caller's span is its parent.
    tracing::debug_span!(target: "rpcx", "caller").in_scope(|| client.call(mul(6, 7)).expect("Mul"));
    let st = SerializeType::MSGPACK;
    let err = client.call(CallSpec::new("Arith", "Error", st, codec::to_payload(st, &Args { a: 1, b: 1 }).unwrap()));
    assert_eq!(err.unwrap_err(), Fail::Remote("intentional error A=1".into()));
    client.close();

    let calls = spans_named("rpcx.call", &format!(":{port}"));
    assert_eq!(calls.len(), 2, "{calls:?}");
    let f = &calls[0].fields;
    assert_eq!(f["rpc.system"], "rpcx");
    assert_eq!((f["rpc.service"].as_str(), f["rpc.method"].as_str()), ("Arith", "Mul"));
    assert_eq!((f["seq"].as_str(), f["outcome"].as_str()), ("0", "ok"));
    assert_eq!(calls[0].parent.as_deref(), Some("caller"), "a call's span is a child of the caller's");
    assert_eq!(calls[1].fields["outcome"], "intentional error A=1");

    // The server's spans name the client's address (another port): find the requests
    // of this server's connection by its methods and seqs instead.
    eventually("the server's request spans closed", || {
        let r = recorded().lock().unwrap();
        r.spans.iter().filter(|s| s.name == "rpcx.request" && s.fields.contains_key("outcome")).count() >= 2
    });
    let r = recorded().lock().unwrap();
    let conn_peers: Vec<_> =
        r.spans.iter().filter(|s| s.name == "rpcx.conn").map(|s| s.fields["peer"].clone()).collect();
    let requests: Vec<_> = r
        .spans
        .iter()
        .filter(|s| {
            s.name == "rpcx.request" && conn_peers.contains(&s.fields["peer"]) && s.fields.contains_key("outcome")
        })
        .collect();
    let mine: Vec<_> = requests
        .iter()
        .filter(|s| s.fields["rpc.method"] == "Error" && s.fields["outcome"] == "intentional error A=1")
        .collect();
    assert!(!mine.is_empty(), "{requests:?}");
    let req = mine[0];
    assert_eq!(req.fields["rpc.system"], "rpcx");
    assert_eq!(req.fields["rpc.service"], "Arith");
    assert_eq!(req.fields["seq"], "1");
    assert_eq!(req.parent.as_deref(), Some("rpcx.conn"), "a request span is its connection's child");
    drop(r);
    server.close();
}

#[test]
fn spans_of_a_call_std_server_std_client() {
    spans_of_a_call(&Std, &Std);
}

#[test]
fn spans_of_a_call_tokio_server_smol_client() {
    spans_of_a_call(&Tokio, &Smol);
}

#[test]
fn spans_of_a_call_smol_server_tokio_client() {
    spans_of_a_call(&Smol, &Tokio);
}

/// A failover to the second server is an event.
#[test]
fn failover_is_an_event() {
    recorded();
    let server = Std.serve(rpcx_conformance::xclient::router(1, Default::default()), ServeOpts::default());
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp@{}", l.local_addr().unwrap())
    };
    let opts = XOpts { fail_mode: FailMode::Failover, ..Default::default() };
    let xc = Std.xclient(&[dead.clone(), server.address()], opts);
    for _ in 0..4 {
        xc.call(XReq::args("Who", &Args { a: 2, b: 3 })).expect("failed over");
    }
    let r = recorded().lock().unwrap();
    let dead_port = dead.rsplit(':').next().unwrap().to_owned();
    let retried = r.events.iter().any(|e| {
        e.get("message").is_some_and(|m| m.contains("attempt after the first"))
            && e.get("server").is_some_and(|s| !s.contains(&dead_port))
    });
    assert!(retried, "no failover event: {:?}", r.events);
    drop(r);
    xc.close();
    server.close();
}
