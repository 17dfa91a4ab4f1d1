//! The runtime-agnostic service layer: typed handlers, Go's error texts, panics, auth,
//! hooks. Handlers here complete without waiting, so a no-op waker drives them.

use bytes::Bytes;
use rpcx_core::codec;
use rpcx_core::service::{Context, ContextParts, Dispatched, Peer, RateLimiter, Router, Service};
use rpcx_core::wire::{Metadata, SerializeType};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context as Cx, Poll, Waker};
use std::time::Instant;

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Cx::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Args {
    A: i64,
    B: i64,
}

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Reply {
    C: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoArgs {
    #[prost(int64, tag = "1")]
    a: i64,
    #[prost(int64, tag = "2")]
    b: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoReply {
    #[prost(int64, tag = "1")]
    c: i64,
}

fn router() -> Router {
    Router::new()
        .service(
            Service::new("Arith")
                .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) })
                .method("Error", |_c: Context, a: Args| async move {
                    Err::<Reply, _>(format!("intentional error A={}", a.A).into())
                })
                .method("Panic", |_c: Context, _a: Args| async move {
                    if true {
                        panic!("boom");
                    }
                    Ok::<Reply, rpcx_core::service::ServiceError>(Reply { C: 0 })
                })
                // Panics while making its future (before `async`), as a closure that
                // divides by a field would.
                .method("PanicEarly", |_c: Context, a: Args| {
                    if a.B == 0 {
                        panic!("early");
                    }
                    async move { Ok(Reply { C: a.A / a.B }) }
                }),
        )
        .service(Service::new("Echo").raw_method("Raw", |_c: Context, p: Bytes| async move { Ok(p) }).method(
            "Meta",
            |c: Context, a: Args| async move {
                for (k, v) in c.metadata().iter() {
                    c.set_response_metadata(k.clone(), v.clone());
                }
                Ok(Reply { C: a.A + a.B })
            },
        ))
        .service(
            Service::new("ProtoArith")
                .proto_method("Mul", |_c: Context, a: ProtoArgs| async move { Ok(ProtoReply { c: a.a * a.b }) }),
        )
}

fn ctx(path: &str, method: &str, st: SerializeType, metadata: Metadata) -> Context {
    Context::new(ContextParts {
        service_path: Bytes::copy_from_slice(path.as_bytes()),
        service_method: Bytes::copy_from_slice(method.as_bytes()),
        serialize_type: st,
        oneway: false,
        metadata,
        deadline: None,
        received_at: Instant::now(),
        peer: Arc::new(Peer::named("test")),
        pusher: Default::default(),
    })
}

/// An error text that is UTF-8.
fn text(e: &[u8]) -> &str {
    std::str::from_utf8(e).expect("UTF-8 error text")
}

fn ctx_bytes(path: &[u8], method: &[u8]) -> Context {
    Context::new(ContextParts {
        service_path: Bytes::copy_from_slice(path),
        service_method: Bytes::copy_from_slice(method),
        serialize_type: SerializeType::JSON,
        oneway: false,
        metadata: Metadata::new(),
        deadline: None,
        received_at: Instant::now(),
        peer: Arc::new(Peer::named("test")),
        pusher: Default::default(),
    })
}

fn run(r: &Router, path: &str, method: &str, st: SerializeType, payload: impl Into<Bytes>) -> Dispatched {
    block_on(r.dispatch(ctx(path, method, st, Metadata::new()), payload.into()))
}

#[test]
fn typed_method_in_msgpack_and_json() {
    let r = router();
    for st in [SerializeType::MSGPACK, SerializeType::JSON] {
        let d = run(&r, "Arith", "Mul", st, codec::to_payload(st, &Args { A: 10, B: 20 }).unwrap());
        assert_eq!(d.response.error, None);
        assert_eq!(codec::from_payload::<Reply>(st, &d.response.payload).unwrap(), Reply { C: 200 });
    }
    // The exact Go bytes for MsgPack.
    let d = run(&r, "Arith", "Mul", SerializeType::MSGPACK, &[0x82, 0xa1, 0x41, 0x0a, 0xa1, 0x42, 0x14][..]);
    assert_eq!(d.response.payload.as_ref(), [0x81, 0xa1, 0x43, 0xcc, 0xc8]);
}

#[test]
fn protobuf_and_raw_methods() {
    let r = router();
    let d = run(&r, "ProtoArith", "Mul", SerializeType::PROTOBUF, codec::to_proto(&ProtoArgs { a: 6, b: 7 }));
    assert_eq!(codec::from_proto::<ProtoReply>(&d.response.payload).unwrap(), ProtoReply { c: 42 });
    let d = run(&r, "Echo", "Raw", SerializeType::NONE, &b"\x00\xffraw"[..]);
    assert_eq!(d.response.payload.as_ref(), b"\x00\xffraw");
}

#[test]
fn unknown_service_and_method_use_go_texts() {
    let r = router();
    assert_eq!(
        run(&r, "Nope", "Mul", SerializeType::MSGPACK, "").response.error.as_deref().map(text),
        Some("rpcx: can't find service Nope")
    );
    assert_eq!(
        run(&r, "Arith", "Nope", SerializeType::MSGPACK, "").response.error.as_deref().map(text),
        Some("rpcx: can't find method Nope")
    );
}

#[test]
fn not_found_texts_echo_name_bytes_exactly() {
    let r = router();
    let d = block_on(r.dispatch(ctx_bytes(b"\xc3(yz", b"Mul"), Bytes::from_static(b"{}")));
    assert_eq!(d.response.error.as_deref(), Some(&b"rpcx: can't find service \xc3(yz"[..]));
    let d = block_on(r.dispatch(ctx_bytes(b"Arith", b"M\xffl"), Bytes::from_static(b"{}")));
    assert_eq!(d.response.error.as_deref(), Some(&b"rpcx: can't find method M\xffl"[..]));
    // A name that decodes lossily to a registered one does not match it.
    let r =
        Router::new().service(Service::new("\u{fffd}").raw_method("Raw", |_c: Context, p: Bytes| async move { Ok(p) }));
    let d = block_on(r.dispatch(ctx_bytes(b"\xff", b"Raw"), Bytes::new()));
    assert_eq!(d.response.error.as_deref(), Some(&b"rpcx: can't find service \xff"[..]));
}

#[test]
fn typed_methods_decode_as_go_unless_strict() {
    let go = router();
    for (st, body) in
        [(SerializeType::JSON, &br#"{"a":6}trailing"#[..]), (SerializeType::MSGPACK, &[0x81, 0xa1, b'A', 0x06][..])]
    {
        let d = run(&go, "Echo", "Meta", st, Bytes::copy_from_slice(body));
        assert_eq!(d.response.error, None);
        assert_eq!(codec::from_payload::<Reply>(st, &d.response.payload).unwrap(), Reply { C: 6 });
    }
    let strict = Router::new().service(
        Service::new("Arith")
            .strict_decoding()
            .method("Add", |_c: Context, a: Args| async move { Ok(Reply { C: a.A + a.B }) }),
    );
    let d = run(&strict, "Arith", "Add", SerializeType::JSON, r#"{"A":6}"#);
    assert!(text(d.response.error.as_deref().unwrap()).contains("missing field `B`"), "{:?}", d.response.error);
    let d = run(&strict, "Arith", "Add", SerializeType::JSON, r#"{"A":6,"B":1}"#);
    assert_eq!(d.response.error, None);
    // Protobuf methods: a wrong wire type is an unknown field (Go mode) or an error (strict).
    let d = run(&go, "ProtoArith", "Mul", SerializeType::PROTOBUF, &[0x0a, 0x01, 0x05, 0x10, 0x03][..]);
    assert_eq!((d.response.error, codec::from_proto::<ProtoReply>(&d.response.payload).unwrap().c), (None, 0));
    let strict = Router::new().service(
        Service::new("P")
            .strict_decoding()
            .proto_method("Mul", |_c: Context, a: ProtoArgs| async move { Ok(ProtoReply { c: a.a * a.b }) }),
    );
    assert!(run(&strict, "P", "Mul", SerializeType::PROTOBUF, &[0x0a, 0x01, 0x05][..]).response.error.is_some());
}

#[test]
fn handler_error_becomes_error_response() {
    let d = run(&router(), "Arith", "Error", SerializeType::JSON, r#"{"A":7,"B":0}"#);
    assert_eq!(d.response.error.as_deref().map(text), Some("intentional error A=7"));
    assert!(!d.close);
}

#[test]
fn handlers_return_service_errors_that_infer_and_convert() {
    use rpcx_core::service::ServiceError;
    // No turbofish: the builder fixes the error type. `?` converts any error, `.into()`
    // any text; the text is what the caller gets.
    let r = Router::new().service(
        Service::new("S")
            .method("Parse", |_c: Context, a: Args| async move {
                let n: i64 = format!("{}x", a.A).parse()?;
                Ok(Reply { C: n })
            })
            .method("Text", |_c: Context, a: Args| async move {
                if a.A < 0 {
                    return Err("negative".into());
                }
                Ok(Reply { C: a.A })
            }),
    );
    let d = run(&r, "S", "Parse", SerializeType::JSON, r#"{"A":7,"B":0}"#);
    assert_eq!(d.response.error.as_deref().map(text), Some("invalid digit found in string"));
    let d = run(&r, "S", "Text", SerializeType::JSON, r#"{"A":-1,"B":0}"#);
    assert_eq!(d.response.error.as_deref().map(text), Some("negative"));
    let e: ServiceError = std::io::Error::other("disk").into();
    assert_eq!((e.message(), format!("{e:?}")), ("disk", r#"ServiceError("disk")"#.to_owned()));
    assert_eq!(ServiceError::new("x").into_message(), "x");
}

#[test]
fn undecodable_payload_names_the_codec_problem() {
    let d = run(&router(), "Arith", "Mul", SerializeType::JSON, "not json");
    assert!(d.response.error.as_deref().map(text).unwrap().starts_with("json: "), "{:?}", d.response.error);
    let d = run(&router(), "Arith", "Mul", SerializeType::THRIFT, "");
    assert_eq!(d.response.error.as_deref().map(text), Some("unsupported serialize type Thrift"));
}

#[test]
fn panicking_handler_yields_an_error_response() {
    let d = run(&router(), "Arith", "Panic", SerializeType::JSON, r#"{"A":1,"B":2}"#);
    assert_eq!(d.response.error.as_deref().map(text), Some("[service internal error]: boom, method: Panic"));
    // The router still works afterwards.
    assert_eq!(
        run(&router(), "Arith", "Mul", SerializeType::JSON, r#"{"A":2,"B":3}"#).response.payload.as_ref(),
        br#"{"C":6}"#
    );
}

#[test]
fn a_handler_that_panics_before_its_future_exists_yields_an_error_response() {
    let d = run(&router(), "Arith", "PanicEarly", SerializeType::JSON, r#"{"A":1,"B":0}"#);
    assert_eq!(d.response.error.as_deref().map(text), Some("[service internal error]: early, method: PanicEarly"));
    let d = run(&router(), "Arith", "PanicEarly", SerializeType::JSON, r#"{"A":6,"B":3}"#);
    assert_eq!(d.response.payload.as_ref(), br#"{"C":2}"#);
}

#[test]
fn response_metadata_set_by_the_handler() {
    let mut md = Metadata::new();
    md.insert("k1", "v1");
    let d = block_on(
        router().dispatch(ctx("Echo", "Meta", SerializeType::JSON, md), Bytes::from_static(br#"{"A":1,"B":2}"#)),
    );
    assert_eq!(d.response.metadata.get_str("k1").unwrap(), Some("v1"));
}

#[test]
fn auth_failure_answers_and_closes() {
    let r = router()
        .auth(|_ctx, token| async move { if token == "secret" { Ok(()) } else { Err("auth failed".to_owned()) } });
    let mut good = Metadata::new();
    good.insert("__AUTH", "secret");
    let ok =
        block_on(r.dispatch(ctx("Arith", "Mul", SerializeType::JSON, good), Bytes::from_static(br#"{"A":1,"B":2}"#)));
    assert_eq!((ok.response.error, ok.close), (None, false));
    let bad = run(&r, "Arith", "Mul", SerializeType::JSON, r#"{"A":1,"B":2}"#);
    assert_eq!((bad.response.error.as_deref().map(text), bad.close), (Some("auth failed"), true));
}

#[test]
fn rate_limiter_hook_rejects_without_closing() {
    let r = router().hook(Arc::new(RateLimiter::new(0.0001, 2)));
    let body = r#"{"A":1,"B":2}"#;
    assert_eq!(run(&r, "Arith", "Mul", SerializeType::JSON, body).response.error, None);
    assert_eq!(run(&r, "Arith", "Mul", SerializeType::JSON, body).response.error, None);
    let third = run(&r, "Arith", "Mul", SerializeType::JSON, body);
    assert_eq!((third.response.error.as_deref().map(text), third.close), (Some("request reached rate limit"), false));
}

#[allow(non_snake_case)]
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct BothArgs {
    #[prost(int64, tag = "1")]
    #[serde(rename = "A")]
    a: i64,
    #[prost(int64, tag = "2")]
    #[serde(rename = "B")]
    b: i64,
}

#[allow(non_snake_case)]
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
struct BothReply {
    #[prost(int64, tag = "1")]
    #[serde(rename = "C")]
    c: i64,
}

#[test]
fn method_with_proto_answers_every_struct_codec() {
    let r = Router::new().service(
        Service::new("Arith")
            .method_with_proto("Mul", |_c: Context, a: BothArgs| async move { Ok(BothReply { c: a.a * a.b }) }),
    );
    let d = run(&r, "Arith", "Mul", SerializeType::PROTOBUF, codec::to_proto(&BothArgs { a: 3, b: 4 }));
    assert_eq!(codec::from_proto::<BothReply>(&d.response.payload).unwrap().c, 12);
    let d = run(&r, "Arith", "Mul", SerializeType::MSGPACK, &[0x82, 0xa1, 0x41, 0x0a, 0xa1, 0x42, 0x14][..]);
    assert_eq!(d.response.payload.as_ref(), [0x81, 0xa1, 0x43, 0xcc, 0xc8]);
    let d = run(&r, "Arith", "Mul", SerializeType::JSON, r#"{"A":5,"B":6}"#);
    assert_eq!(d.response.payload.as_ref(), br#"{"C":30}"#);
}

/// A hook that panics in the chosen callback.
struct PanickingHook(&'static str);

impl rpcx_core::service::ServerHooks for PanickingHook {
    fn post_read_request(&self, _ctx: &Context) -> Result<(), rpcx_core::service::Rejection> {
        assert_ne!(self.0, "post_read", "hook boom");
        Ok(())
    }
    fn pre_call(&self, _ctx: &Context) -> Result<(), String> {
        assert_ne!(self.0, "pre_call", "hook boom");
        Ok(())
    }
    fn post_call(&self, _ctx: &Context, _result: &mut Result<Bytes, String>) {
        assert_ne!(self.0, "post_call", "hook boom");
    }
}

#[test]
fn panicking_server_hooks_become_error_responses_or_are_ignored() {
    let body = r#"{"A":6,"B":7}"#;
    for stage in ["post_read", "pre_call"] {
        let r = router().hook(Arc::new(PanickingHook(stage)));
        let d = run(&r, "Arith", "Mul", SerializeType::JSON, body);
        assert_eq!(d.response.error.as_deref().map(text), Some(rpcx_core::service::HOOK_PANICKED), "{stage}");
        assert!(!d.close, "{stage}: the connection stays");
    }
    // A panic after the call leaves the handler's answer in place.
    let r = router().hook(Arc::new(PanickingHook("post_call")));
    let d = run(&r, "Arith", "Mul", SerializeType::JSON, body);
    assert_eq!(d.response.error, None);
    assert_eq!(&d.response.payload[..], br#"{"C":42}"#);
}

/// A request builder of the shape every runtime's is (`call_options_setters!` over an
/// `opts` field).
struct Builder {
    opts: rpcx_core::conn::CallOptions,
}

impl Builder {
    rpcx_core::call_options_setters!();
}

#[test]
fn context_passes_the_handlers_deadline_on_and_the_earlier_deadline_wins() {
    use rpcx_core::service::ContextParts;
    let now = std::time::Instant::now();
    let ctx_with = |deadline| {
        Context::new(ContextParts {
            service_path: "Front".into(),
            service_method: "Relay".into(),
            serialize_type: SerializeType::MSGPACK,
            oneway: false,
            metadata: Default::default(),
            deadline,
            received_at: now,
            peer: std::sync::Arc::new(rpcx_core::service::Peer::named("test")),
            pusher: Default::default(),
        })
    };
    let opts = || rpcx_core::conn::CallOptions::new("Back", "Slow", SerializeType::MSGPACK, Default::default(), None);
    let d = now + std::time::Duration::from_millis(300);
    let b = Builder { opts: opts() }.context(&ctx_with(Some(d)));
    assert_eq!(b.opts.deadline, Some(d));
    // A later deadline of its own does not extend the caller's; an earlier one stays.
    let b = Builder { opts: opts() }.deadline(d + std::time::Duration::from_secs(1)).context(&ctx_with(Some(d)));
    assert_eq!(b.opts.deadline, Some(d));
    let early = now + std::time::Duration::from_millis(5);
    let b = Builder { opts: opts() }.deadline(early).context(&ctx_with(Some(d)));
    assert_eq!(b.opts.deadline, Some(early));
    // A request without a deadline changes nothing.
    let b = Builder { opts: opts() }.context(&ctx_with(None));
    assert_eq!(b.opts.deadline, None);
}

/// A fallback serves what no registered method matches (unknown service or method), with
/// the request's names at hand; registered methods still win, and the auth check still
/// runs first.
#[test]
fn a_fallback_serves_unknown_services_and_methods() {
    let r = router().fallback(|ctx: Context, payload: Bytes| async move {
        let mut out = format!(
            "{}.{}:",
            String::from_utf8_lossy(ctx.service_path_bytes()),
            String::from_utf8_lossy(ctx.service_method_bytes())
        )
        .into_bytes();
        out.extend_from_slice(&payload);
        Ok(Bytes::from(out))
    });
    let d = run(&r, "Nope", "Any", SerializeType::NONE, &b"x"[..]);
    assert_eq!((d.response.error, &d.response.payload[..]), (None, &b"Nope.Any:x"[..]));
    let d = run(&r, "Arith", "Nope", SerializeType::NONE, &b"y"[..]);
    assert_eq!(&d.response.payload[..], b"Arith.Nope:y");
    let d = run(
        &r,
        "Arith",
        "Mul",
        SerializeType::JSON,
        codec::to_payload(SerializeType::JSON, &Args { A: 2, B: 3 }).unwrap(),
    );
    assert_eq!(codec::from_payload::<Reply>(SerializeType::JSON, &d.response.payload).unwrap(), Reply { C: 6 });
    let guarded = r.auth(|_c, token| async move { if token == "ok" { Ok(()) } else { Err("no".to_owned()) } });
    let d = run(&guarded, "Nope", "Any", SerializeType::NONE, &b"z"[..]);
    assert_eq!((d.response.error.as_deref(), d.unauthorized), (Some(&b"no"[..]), true));
}
