//! Hooks and the built-in plugins, the same on every runtime pair: every server hook in
//! Go's order with its effect (accept, refuse with a text, rewrite), the taps, the
//! push hooks, the client hooks on a plain `Client`, Alias, the rate limiters, the
//! error-text functions and `on_shutdown`.

use crate::services::{Args, Reply, router};
use crate::{ClientRt, ConnOpts, Fail, ServeOpts, ServerRt};
use bytes::Bytes;
use rpcx_core::codec;
use rpcx_core::conn::{CallSpec, ClientHookSet, ClientHooks, ErrorTextFn, FinishedCall, OutgoingCall, Response};
use rpcx_core::service::{
    Admit, Alias, BlockingRateLimiter, ConnRateLimiter, ConnTap, Context, Peer, Push, RATE_LIMITED, Rejection,
    RequestHead, Router, ServerHooks, Service,
};
use rpcx_core::wire::{Header, Message, SerializeType};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn spec(path: &str, method: &str, args: &Args) -> CallSpec {
    let st = SerializeType::MSGPACK;
    CallSpec::new(path.to_owned(), method.to_owned(), st, codec::to_payload(st, args).expect("encode"))
}

fn reply(msg: &Message) -> Reply {
    codec::from_payload(msg.header.serialize_type(), &msg.payload).expect("decode reply")
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < end, "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The log of a hook, shared with the scenario.
#[derive(Default, Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(s.into());
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Logs every server hook, and refuses or rewrites: JSON requests before reading, by
/// method name `RefuseRewrite`, `RefusePostRead` (and closes), `RefuseAdmit`,
/// `RefusePreHandle`, `Arith.Mul` with metadata `refuse=pre_call`; `Renamed` is rewritten to `Arith.Mul` with a
/// metadata key added; `post_call` turns `Arith.Error`'s text around; pushes named
/// `Blocked` are refused.
#[derive(Default)]
struct Steps {
    log: Log,
    read: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
}

struct CountingTap(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl ConnTap for CountingTap {
    fn read(&mut self, bytes: &[u8]) {
        self.0.fetch_add(bytes.len(), Ordering::SeqCst);
    }
    fn written(&mut self, bytes: &[u8]) {
        self.1.fetch_add(bytes.len(), Ordering::SeqCst);
    }
}

fn method_of(ctx: &Context) -> String {
    ctx.service_method().into_owned()
}

impl ServerHooks for Steps {
    fn register(&self, service: &str, _metadata: &str) -> Result<(), String> {
        self.log.push(format!("register {service}"));
        Ok(())
    }
    fn conn_accepted(&self, _peer: &Peer, _now: Instant) -> Result<(), String> {
        self.log.push("conn_accepted");
        Ok(())
    }
    fn conn_closed(&self, _peer: &Peer) {
        self.log.push("conn_closed");
    }
    fn tap(&self, _peer: &Peer) -> Option<Box<dyn ConnTap>> {
        Some(Box::new(CountingTap(self.read.clone(), self.written.clone())))
    }
    fn pre_read_request(&self, _peer: &Peer, header: &Header) -> Result<(), Rejection> {
        self.log.push(format!("pre_read seq={}", header.seq()));
        // Only the header is known here: JSON requests are refused.
        if header.serialize_type() == SerializeType::JSON {
            return Err(Rejection::answer("refused before reading"));
        }
        Ok(())
    }
    fn rewrite_request(&self, req: &mut RequestHead<'_>) -> Result<(), Rejection> {
        let m = String::from_utf8_lossy(req.service_method).into_owned();
        self.log.push(format!("rewrite {m}"));
        match m.as_str() {
            "RefuseRewrite" => Err(Rejection::answer("refused by rewrite")),
            "Renamed" => {
                *req.service_path = Bytes::from_static(b"Arith");
                *req.service_method = Bytes::from_static(b"Mul");
                req.metadata.insert("rewritten", "yes");
                Ok(())
            }
            _ => Ok(()),
        }
    }
    fn post_read_request(&self, ctx: &Context) -> Result<(), Rejection> {
        self.log.push(format!("post_read {}", method_of(ctx)));
        if method_of(ctx) == "RefusePostRead" { Err(Rejection::close("refused after reading")) } else { Ok(()) }
    }
    fn admit(&self, ctx: &Context) -> Admit {
        self.log.push(format!("admit {}", method_of(ctx)));
        if method_of(ctx) == "RefuseAdmit" { Admit::Reject(Rejection::answer("not admitted")) } else { Admit::Now }
    }
    fn pre_handle(&self, ctx: &Context) -> Result<(), String> {
        self.log.push(format!("pre_handle {}", method_of(ctx)));
        if method_of(ctx) == "RefusePreHandle" { Err("refused before handling".into()) } else { Ok(()) }
    }
    fn pre_call(&self, ctx: &Context) -> Result<(), String> {
        self.log.push(format!("pre_call {}", method_of(ctx)));
        // After the lookup: a real method, refused when the client asks for it.
        if ctx.metadata().get_str("refuse").ok().flatten() == Some("pre_call") {
            Err("refused before the call".into())
        } else {
            Ok(())
        }
    }
    fn post_call(&self, ctx: &Context, result: &mut Result<Bytes, String>) {
        self.log.push(format!("post_call {}", method_of(ctx)));
        if let Err(text) = result {
            if text.starts_with("intentional error") {
                *text = format!("rewritten: {text}");
            }
        }
    }
    fn pre_write_response(&self, ctx: &Context, response: &mut Response) {
        self.log.push(format!("pre_write_response {}", method_of(ctx)));
        response.metadata.insert("hooked", "yes");
    }
    fn post_write_response(&self, ctx: &Context, response: &Response) {
        let err = response.error.as_ref().map_or("-".to_owned(), |e| String::from_utf8_lossy(e).into_owned());
        self.log.push(format!("post_write_response {} error={err}", method_of(ctx)));
    }
    fn pre_write_request(&self, _peer: &Peer, push: &mut Push) -> Result<(), String> {
        let m = String::from_utf8_lossy(&push.service_method).into_owned();
        self.log.push(format!("pre_write_request {m}"));
        if m == "Blocked" {
            return Err("push blocked by a hook".into());
        }
        push.metadata.insert("pushed-by", "hook");
        Ok(())
    }
    fn post_write_request(&self, _peer: &Peer, push: &Push) {
        self.log.push(format!("post_write_request {}", String::from_utf8_lossy(&push.service_method)));
    }
    fn heartbeat(&self, _peer: &Peer) {
        self.log.push("heartbeat");
    }
}

/// `Arith` plus `Push.Two`: pushes `Note` (allowed) and `Blocked` (refused by the
/// hook) and answers with the second push's error.
fn hooked_router(hooks: Arc<dyn ServerHooks>) -> Router {
    let push = Service::new("Push").raw_method("Two", |c: Context, _p: Bytes| async move {
        c.pusher().push("Push", "Note", Default::default(), "n").map_err(|e| e.to_string())?;
        let refused = c.pusher().push("Push", "Blocked", Default::default(), "b");
        Ok(Bytes::from(format!("{refused:?}")))
    });
    router(false).service(push).hook(hooks)
}

/// Every server hook runs once per request in Go's order, sees what it should, and
/// each refusal answers with its text (closing only when asked); the rewrite reaches
/// the handler while the response keeps the client's names; taps see the bytes both
/// ways; push hooks change or refuse a push; heartbeats and the connection's
/// end reach the hooks. `register` ran when the server started.
pub fn server_hooks_run_in_order_and_their_effects_hold(s: &dyn ServerRt, c: &dyn ClientRt) {
    let steps = Arc::new(Steps::default());
    let (log, read, written) = (steps.log.clone(), steps.read.clone(), steps.written.clone());
    let server = s.serve(hooked_router(steps), ServeOpts::default());
    let registered: Vec<_> = log.take().into_iter().filter(|l| l.starts_with("register")).collect();
    assert_eq!(registered, ["register Arith", "register Echo", "register Push"]);

    let client =
        c.connect(&server.address(), ConnOpts { heartbeat: Some(Duration::from_millis(30)), ..Default::default() });
    let m = client.call(spec("Arith", "Mul", &Args { a: 6, b: 7 })).expect("Mul").expect("a response");
    assert_eq!(reply(&m).c, 42);
    assert_eq!(m.metadata.get_str("hooked").unwrap(), Some("yes"), "pre_write_response added it");
    eventually("the request's last hook ran", || log.snapshot().iter().any(|l| l.starts_with("post_write_response")));
    let steps_of_mul: Vec<_> = log.take().into_iter().filter(|l| l != "heartbeat").collect();
    assert_eq!(
        steps_of_mul,
        [
            "conn_accepted",
            "pre_read seq=0",
            "rewrite Mul",
            "post_read Mul",
            "admit Mul",
            "pre_handle Mul",
            "pre_call Mul",
            "post_call Mul",
            "pre_write_response Mul",
            "post_write_response Mul error=-",
        ]
        .map(String::from)
    );

    // The rewrite: the handler serves Arith.Mul, the response names what was sent.
    let m = client.call(spec("Alias", "Renamed", &Args { a: 2, b: 21 })).expect("Renamed").expect("a response");
    assert_eq!(reply(&m).c, 42);
    assert_eq!((m.service_path_str().unwrap(), m.service_method_str().unwrap()), ("Alias", "Renamed"));

    // Each refusal, with its text; all but RefusePostRead keep the connection.
    for (method, text, hooks_after) in [
        ("RefusePreRead", "refused before reading", 0),
        ("RefuseRewrite", "refused by rewrite", 0),
        ("RefuseAdmit", "not admitted", 0),
        ("RefusePreHandle", "refused before handling", 2),
        ("RefusePreCall", "refused before the call", 2),
    ] {
        log.take();
        let mut sp = spec("Arith", method, &Args { a: 1, b: 1 });
        if method == "RefusePreRead" {
            sp.serialize_type = SerializeType::JSON;
        }
        if method == "RefusePreCall" {
            sp.service_method = Bytes::from_static(b"Mul");
            sp.metadata.insert("refuse", "pre_call");
        }
        let err = client.call(sp).unwrap_err();
        assert_eq!(err, Fail::Remote(text.into()), "{method}");
        eventually("the response hooks ran", || log.snapshot().iter().any(|l| l.starts_with("post_write_response")));
        let after: Vec<_> = log.take().into_iter().filter(|l| l.starts_with("post_call")).collect();
        assert_eq!(
            after.len(),
            usize::from(hooks_after > 0),
            "{method}: post_call runs once the request was looked up"
        );
    }
    // post_call rewrites an error; the rewritten text is what the client gets.
    let err = client.call(spec("Arith", "Error", &Args { a: 5, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Remote("rewritten: intentional error A=5".into()));

    // Push hooks: the allowed push arrives changed, the refused one is the handler's error.
    let mut sp = spec("Push", "Two", &Args { a: 0, b: 0 });
    sp.serialize_type = SerializeType::NONE;
    let m = client.call(sp).expect("Push.Two").expect("a response");
    assert!(String::from_utf8_lossy(&m.payload).contains("push blocked by a hook"), "{:?}", m.payload);
    let p = client.next_push(Duration::from_secs(5)).expect("the allowed push");
    assert_eq!(p.service_method_str().unwrap(), "Note");
    assert_eq!(p.metadata.get_str("pushed-by").unwrap(), Some("hook"));
    assert!(client.next_push(Duration::from_millis(100)).is_none(), "the refused push was not sent");
    let pushes: Vec<_> = log.take().into_iter().filter(|l| l.contains("write_request")).collect();
    // The handler pushes (pre hooks, in its call); the session then queues what it
    // accepted (post hook).
    assert_eq!(pushes, ["pre_write_request Note", "pre_write_request Blocked", "post_write_request Note"]);

    // Heartbeats reach the hook; the tap saw bytes both ways.
    eventually("a heartbeat reached the hook", || log.snapshot().iter().any(|l| l == "heartbeat"));
    assert!(read.load(Ordering::SeqCst) > 100 && written.load(Ordering::SeqCst) > 100, "the tap saw the traffic");

    // RefusePostRead answers, then closes the connection.
    let err = client.call(spec("Arith", "RefusePostRead", &Args { a: 1, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Remote("refused after reading".into()));
    eventually("the client saw its connection closed", || client.is_shutdown());
    eventually("conn_closed ran", || log.snapshot().iter().any(|l| l == "conn_closed"));
    server.close();
}

/// A request's hooks that panic answer that request with an error; the connection and
/// the server keep serving.
pub fn panicking_server_hooks_fail_only_their_request(s: &dyn ServerRt, c: &dyn ClientRt) {
    struct Boom;
    impl ServerHooks for Boom {
        fn rewrite_request(&self, req: &mut RequestHead<'_>) -> Result<(), Rejection> {
            assert!(&req.service_method[..] != b"Boom1", "rewrite boom");
            Ok(())
        }
        fn admit(&self, ctx: &Context) -> Admit {
            assert!(method_of(ctx) != "Boom2", "admit boom");
            Admit::Now
        }
        fn pre_write_response(&self, ctx: &Context, _r: &mut Response) {
            assert!(
                method_of(ctx) != "Mul" || ctx.metadata().get_str("boom").ok().flatten().is_none(),
                "pre_write boom"
            );
        }
        fn tap(&self, _peer: &Peer) -> Option<Box<dyn ConnTap>> {
            struct PanickingTap;
            impl ConnTap for PanickingTap {
                fn read(&mut self, _b: &[u8]) {
                    panic!("tap boom");
                }
            }
            Some(Box::new(PanickingTap))
        }
    }
    let server = s.serve(router(false).hook(Arc::new(Boom)), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    for m in ["Boom1", "Boom2"] {
        let err = client.call(spec("Arith", m, &Args { a: 1, b: 1 })).unwrap_err();
        assert_eq!(err, Fail::Remote(rpcx_core::service::HOOK_PANICKED.into()), "{m}");
    }
    let mut sp = spec("Arith", "Mul", &Args { a: 3, b: 3 });
    sp.metadata.insert("boom", "1");
    let m = client.call(sp).expect("a panicking pre_write_response leaves the response as it was").unwrap();
    assert_eq!(reply(&m).c, 9);
    assert_eq!(reply(&client.call(spec("Arith", "Mul", &Args { a: 4, b: 4 })).unwrap().unwrap()).c, 16);
    server.close();
}

/// A `register` hook's refusal fails the server's start with its text; `on_shutdown`
/// callbacks run once when the server shuts down; a `conn_accepted` refusal closes the
/// connection at once and is counted.
pub fn register_refusal_on_shutdown_and_refused_connections(s: &dyn ServerRt, c: &dyn ClientRt) {
    struct NoEcho;
    impl ServerHooks for NoEcho {
        fn register(&self, service: &str, _m: &str) -> Result<(), String> {
            if service == "Echo" { Err("Echo may not be served here".into()) } else { Ok(()) }
        }
    }
    let err = s.try_serve(router(false).hook(Arc::new(NoEcho)), ServeOpts::default()).err().expect("refused");
    assert!(err.contains("Echo may not be served here"), "{err}");

    struct NoConns;
    impl ServerHooks for NoConns {
        fn conn_accepted(&self, peer: &Peer, _now: Instant) -> Result<(), String> {
            Err(format!("{} refused", peer.addr))
        }
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let router = router(false).hook(Arc::new(NoConns)).on_shutdown(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let server = s.serve(router, ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let err = client.call(spec("Arith", "Mul", &Args { a: 1, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Lost, "the refused connection was closed");
    if let Some(st) = server.stats() {
        assert_eq!(st.connections_refused, 1);
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    server.shutdown(Duration::from_secs(1));
    assert_eq!(ran.load(Ordering::SeqCst), 1, "on_shutdown ran once");
}

/// The server's error-text function rewrites every error text (handler errors,
/// unknown methods); the client's rewrites what its caller sees.
pub fn error_text_functions_on_both_sides(s: &dyn ServerRt, c: &dyn ClientRt) {
    let router = router(false).error_text(|ctx, text| format!("[{}] {text}", ctx.service_method()));
    let server = s.serve(router, ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let err = client.call(spec("Arith", "Error", &Args { a: 2, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Remote("[Error] intentional error A=2".into()));
    let err = client.call(spec("Arith", "Nope", &Args { a: 2, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Remote("[Nope] rpcx: can't find method Nope".into()));

    let f = ErrorTextFn::new(|res: &Message, text: &str| format!("seq {}: {}", res.header.seq(), text.to_uppercase()));
    let upper = c.connect(&server.address(), ConnOpts { error_text: Some(f), ..Default::default() });
    let err = upper.call(spec("Arith", "Error", &Args { a: 3, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Remote("seq 0: [ERROR] INTENTIONAL ERROR A=3".into()));
    server.close();
}

/// Go's book example: `a.b.c.d.Times` served by `Arith.Mul`; the real name still
/// works and the response carries the alias.
pub fn alias_serves_a_method_under_another_name(s: &dyn ServerRt, c: &dyn ClientRt) {
    let alias = Alias::new().alias("a.b.c.d", "Times", "Arith", "Mul");
    let server = s.serve(router(false).hook(Arc::new(alias)), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let m = client.call(spec("a.b.c.d", "Times", &Args { a: 7, b: 8 })).expect("alias").unwrap();
    assert_eq!(reply(&m).c, 56);
    assert_eq!((m.service_path_str().unwrap(), m.service_method_str().unwrap()), ("a.b.c.d", "Times"));
    assert_eq!(reply(&client.call(spec("Arith", "Mul", &Args { a: 2, b: 8 })).unwrap().unwrap()).c, 16);
    let err = client.call(spec("a.b.c.d", "Plus", &Args { a: 2, b: 8 })).unwrap_err();
    assert_eq!(err, Fail::Remote("rpcx: can't find service a.b.c.d".into()));
    server.close();
}

/// The blocking limiter makes calls wait for their token (none is refused while its
/// deadline allows the wait); one whose deadline comes first is refused at once with
/// Go's text. The connection-rate limiter closes connections past its rate.
pub fn rate_limiters_wait_refuse_and_close(s: &dyn ServerRt, c: &dyn ClientRt) {
    // 20 tokens a second, burst 1: five calls at once take at least 4 x 50 ms.
    let server = s.serve(router(false).hook(Arc::new(BlockingRateLimiter::new(20.0, 1))), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let t0 = Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let mut sp = spec("Arith", "Mul", &Args { a: i, b: 2 });
            sp.deadline = Some(Instant::now() + Duration::from_secs(10));
            crate::start(&client, sp)
        })
        .collect();
    for (i, h) in calls.into_iter().enumerate() {
        let m = h.join().expect("thread").expect("waited, not refused").unwrap();
        assert_eq!(reply(&m).c, 2 * i as i64);
    }
    assert!(t0.elapsed() >= Duration::from_millis(190), "they waited for their tokens: {:?}", t0.elapsed());
    server.close();
    // One token a second: after the burst token, the next is a second away, so a call
    // due in 200 ms is refused at once (not left to time out).
    let server = s.serve(router(false).hook(Arc::new(BlockingRateLimiter::new(1.0, 1))), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    assert_eq!(reply(&client.call(spec("Arith", "Mul", &Args { a: 3, b: 3 })).unwrap().unwrap()).c, 9);
    let mut hurried = spec("Arith", "Mul", &Args { a: 1, b: 1 });
    hurried.deadline = Some(Instant::now() + Duration::from_millis(200));
    let t1 = Instant::now();
    let err = client.call(hurried).unwrap_err();
    assert_eq!(err, Fail::Remote(RATE_LIMITED.into()), "refused, not timed out");
    assert!(t1.elapsed() < Duration::from_millis(200), "refused before its deadline: {:?}", t1.elapsed());
    server.close();

    let server = s.serve(router(false).hook(Arc::new(ConnRateLimiter::new(0.01, 2))), ServeOpts::default());
    let ok: Vec<_> = (0..2).map(|_| c.connect(&server.address(), ConnOpts::default())).collect();
    for cl in &ok {
        assert_eq!(reply(&cl.call(spec("Arith", "Mul", &Args { a: 2, b: 2 })).unwrap().unwrap()).c, 4);
    }
    let third = c.connect(&server.address(), ConnOpts::default());
    assert_eq!(third.call(spec("Arith", "Mul", &Args { a: 2, b: 2 })).unwrap_err(), Fail::Lost);
    if let Some(st) = server.stats() {
        assert_eq!((st.connections_accepted, st.connections_refused), (2, 1));
    }
    server.close();
}

/// Client hooks on a plain client: `pre_call` adds metadata the server sees and keeps
/// state for `post_call`, which gets the outcome, the latency and the sizes;
/// `before_encode` sees the seq; `after_decode` sees the response; a refusal is the
/// call's error and sends nothing; the connection's opening and end are reported.
pub fn client_hooks_see_and_change_every_call(s: &dyn ServerRt, c: &dyn ClientRt) {
    #[derive(Default)]
    struct Calls {
        log: Log,
    }
    struct Started(&'static str);
    impl ClientHooks for Calls {
        fn conn_opened(&self, remote: &str) {
            self.log.push(format!("opened {}", remote.starts_with("tcp@127.0.0.1:")));
        }
        fn conn_closed(&self, _remote: &str) {
            self.log.push("closed");
        }
        fn pre_call(&self, call: &mut OutgoingCall<'_>) -> Result<(), String> {
            let m = String::from_utf8_lossy(call.service_method).into_owned();
            self.log.push(format!("pre_call {m}"));
            if m == "Forbidden" {
                return Err("forbidden by a client hook".into());
            }
            call.metadata.insert("trace", "abc");
            call.extensions.insert(Started("kept"));
            Ok(())
        }
        fn before_encode(&self, msg: &mut Message) -> Result<(), String> {
            self.log.push(format!("before_encode seq={}", msg.header.seq()));
            msg.metadata.insert("encoded", "1");
            Ok(())
        }
        fn after_decode(&self, msg: &mut Message) -> Result<(), String> {
            self.log.push(format!("after_decode seq={}", msg.header.seq()));
            Ok(())
        }
        fn post_call(&self, call: &mut FinishedCall<'_>) {
            let state = call.extensions.get::<Started>().map_or("none", |s| s.0);
            let outcome = match &call.result {
                Ok(Some(m)) => format!("ok {} bytes", m.payload.len()),
                Ok(None) => "sent".to_owned(),
                Err(e) => format!("err {e}"),
            };
            self.log.push(format!(
                "post_call {} {outcome} req={} state={state}",
                String::from_utf8_lossy(call.service_method),
                call.request_size
            ));
        }
    }
    let calls = Arc::new(Calls::default());
    let log = calls.log.clone();
    let server = s.serve(router(false), ServeOpts::default());
    let hooks = ClientHookSet::new(vec![calls]);
    let client = c.connect(&server.address(), ConnOpts { hooks, ..Default::default() });

    let mut sp = spec("Echo", "Meta", &Args { a: 1, b: 1 });
    sp.metadata.insert("mine", "1");
    let m = client.call(sp).expect("Echo.Meta").unwrap();
    assert_eq!(m.metadata.get_str("trace").unwrap(), Some("abc"), "the server saw pre_call's metadata");
    assert_eq!(m.metadata.get_str("encoded").unwrap(), Some("1"), "and before_encode's");
    assert_eq!(m.metadata.get_str("mine").unwrap(), Some("1"));
    let payload = codec::to_payload(SerializeType::MSGPACK, &Args { a: 1, b: 1 }).unwrap();
    let err = client.call(spec("Arith", "Forbidden", &Args { a: 1, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Other("forbidden by a client hook".into()));
    let err = client.call(spec("Arith", "Error", &Args { a: 1, b: 1 })).unwrap_err();
    assert_eq!(err, Fail::Remote("intentional error A=1".into()));
    let mut ow = spec("Arith", "Mul", &Args { a: 1, b: 1 });
    ow.oneway = true;
    assert_eq!(client.call(ow).expect("oneway"), None);
    client.close();
    eventually("conn_closed ran", || log.snapshot().iter().any(|l| l == "closed"));
    let n = payload.len();
    assert_eq!(
        log.take(),
        [
            "opened true".to_owned(),
            "pre_call Meta".to_owned(),
            "before_encode seq=0".to_owned(),
            "after_decode seq=0".to_owned(),
            format!("post_call Meta ok {} bytes req={n} state=kept", m.payload.len()),
            "pre_call Forbidden".to_owned(),
            "post_call Forbidden err forbidden by a client hook req=".to_owned() + &n.to_string() + " state=none",
            "pre_call Error".to_owned(),
            "before_encode seq=1".to_owned(),
            "after_decode seq=1".to_owned(),
            format!("post_call Error err intentional error A=1 req={n} state=kept"),
            "pre_call Mul".to_owned(),
            "before_encode seq=2".to_owned(),
            format!("post_call Mul sent req={n} state=kept"),
            "closed".to_owned(),
        ]
    );
    server.close();
}
