//! HTTP on the rpcx port, differentially: the same requests to the real Go rpcx server
//! (whose port serves the gateway and JSON-RPC through cmux) and to the Rust server of
//! every runtime, on one keep-alive connection each, comparing what a client sees:
//! status, every `X-Rpcx-*` header (names as sent: Go canonicalises them) and the body.
//!
//! Deliberate differences, not compared: `Content-Type` (Go sniffs the body, we name
//! the serialization), `Date` (the core machine has no wall clock), and the 405
//! `Allow` list's order (Go's router builds it from a map). Error texts of JSON-RPC
//! parse errors come from different JSON parsers: only their code is compared.

use rpcx_conformance::http_scenarios::{HttpConn, HttpResponse};
use rpcx_interop::{GoServer, Runtime, RustServer};

/// A request: method, path, headers, body.
type Req = (&'static str, &'static str, Vec<(&'static str, &'static str)>, Vec<u8>);

fn mul() -> Vec<(&'static str, &'static str)> {
    vec![("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")]
}

fn with(
    mut h: Vec<(&'static str, &'static str)>,
    more: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    h.extend_from_slice(more);
    h
}

fn gateway_requests() -> Vec<Req> {
    let args = br#"{"A":6,"B":7}"#.to_vec();
    vec![
        ("POST", "/", with(mul(), &[("X-RPCX-MessageID", "7"), ("X-RPCX-Version", "1")]), args.clone()),
        ("POST", "/", vec![("X-RPCX-ServicePath", "Arith"), ("X-RPCX-SerializeType", "1")], args.clone()),
        ("POST", "/", vec![("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul")], args.clone()),
        ("POST", "/", vec![("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")], args.clone()),
        ("POST", "/", with(mul(), &[("X-RPCX-MessageID", "x")]), args.clone()),
        ("POST", "/", with(mul(), &[("X-RPCX-MessageID", "99999999999999999999")]), args.clone()),
        (
            "POST",
            "/",
            vec![("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "abc")],
            args.clone(),
        ),
        ("POST", "/", with(mul(), &[("X-RPCX-Meta", "a=%zz")]), args.clone()),
        ("POST", "/", with(mul(), &[("X-RPCX-CompressType", "x")]), args.clone()),
        ("POST", "/", with(mul(), &[("X-RPCX-CompressType", "1")]), args.clone()),
        (
            "POST",
            "/",
            vec![("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Error"), ("X-RPCX-SerializeType", "1")],
            br#"{"A":3}"#.to_vec(),
        ),
        ("POST", "/Nope", vec![("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")], args.clone()),
        ("POST", "/Arith", vec![("X-RPCX-ServiceMethod", "Nope"), ("X-RPCX-SerializeType", "1")], args.clone()),
        (
            "PUT",
            "/Echo",
            vec![
                ("X-RPCX-ServiceMethod", "Meta"),
                ("X-RPCX-SerializeType", "1"),
                ("X-RPCX-Meta", "zz=last&b=x+y&a=1&a=2"),
            ],
            args.clone(),
        ),
        ("GET", "/Arith", vec![("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")], args.clone()),
        ("POST", "/", with(mul(), &[("X-RPCX-Oneway", "1")]), args.clone()),
        ("POST", "/", with(mul(), &[("X-RPCX-Heartbeat", "1")]), args.clone()),
        (
            "POST",
            "/",
            vec![("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "3")],
            vec![0x82, 0xa1, b'A', 0x03, 0xa1, b'B', 0x05],
        ),
        (
            "POST",
            "/Echo",
            vec![("X-RPCX-ServiceMethod", "Raw"), ("X-RPCX-SerializeType", "0")],
            (0..100_000u32).map(|i| (i % 251) as u8).collect(),
        ),
        ("DELETE", "/Arith", mul(), Vec::new()),
    ]
}

/// What is compared of a gateway response.
fn seen(r: &HttpResponse, method: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut rpcx: Vec<(String, String)> =
        r.headers.iter().filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-rpcx-")).cloned().collect();
    rpcx.sort();
    let _ = method;
    (r.status, rpcx, r.body.clone())
}

fn run_all(addr: &str, reqs: &[Req]) -> Vec<HttpResponse> {
    let mut c = HttpConn::open(addr);
    reqs.iter()
        .map(|(m, p, h, b)| {
            eprintln!("{addr}: {m} {p} {h:?}");
            c.request(m, p, h, b)
        })
        .collect()
}

fn gateway_matches_go(rt: Runtime) {
    let go = GoServer::tcp(None);
    let rust = RustServer::tcp_on(rt, None);
    let reqs = gateway_requests();
    let want = run_all(go.addr(), &reqs);
    let got = run_all(rust.addr(), &reqs);
    for ((req, w), g) in reqs.iter().zip(&want).zip(&got) {
        assert_eq!(seen(g, req.0), seen(w, req.0), "{rt:?} differs from Go for {} {} {:?}", req.0, req.1, req.2);
    }
}

/// A JSON-RPC body as compared: parsed, and a parse error reduced to its code.
fn json_seen(r: &HttpResponse) -> (u16, Option<serde_json::Value>) {
    if r.body.is_empty() {
        return (r.status, None);
    }
    let mut v: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    if let Some(e) = v.get_mut("error") {
        if e["code"] == -32700 {
            e["message"] = serde_json::Value::Null;
        }
    }
    (r.status, Some(v))
}

fn jsonrpc_matches_go(rt: Runtime) {
    let go = GoServer::tcp(None);
    let rust = RustServer::tcp_on(rt, None);
    let h = vec![("X-JSONRPC-2.0", "true"), ("X-RPCX-Meta", "k=v&j=%41")];
    let reqs: Vec<Req> = vec![
        ("POST", "/", h.clone(), br#"{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":6,"B":7},"id":1}"#.to_vec()),
        (
            "POST",
            "/x",
            h.clone(),
            br#"{"jsonrpc":"2.0","method":"Arith.Add","params":{"A":1,"B":2},"id":"s"}"#.to_vec(),
        ),
        ("POST", "/", h.clone(), br#"{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":1,"B":1}}"#.to_vec()),
        ("POST", "/", h.clone(), br#"{"jsonrpc":"2.0","method":"Arith.Error","params":{"A":4},"id":2}"#.to_vec()),
        ("POST", "/", h.clone(), br#"{"jsonrpc":"2.0","method":"Mul","params":{},"id":3}"#.to_vec()),
        ("POST", "/", h.clone(), br#"{"jsonrpc":"2.0","method":".Mul","params":{},"id":4}"#.to_vec()),
        ("POST", "/", h.clone(), br#"{"jsonrpc":"2.0","method":"Nope.Mul","params":{},"id":5}"#.to_vec()),
        ("POST", "/", h.clone(), br#"{"jsonrpc":"2.0","method":"a.b.Mul","params":{},"id":6}"#.to_vec()),
        ("POST", "/", h.clone(), br#"{"jsonrpc":"1.0","method":"Arith.Mul","params":{},"id":7}"#.to_vec()),
        ("POST", "/", h.clone(), b"{oops".to_vec()),
    ];
    let want = run_all(go.addr(), &reqs);
    let got = run_all(rust.addr(), &reqs);
    for ((req, w), g) in reqs.iter().zip(&want).zip(&got) {
        let body = String::from_utf8_lossy(&req.3);
        assert_eq!(json_seen(g), json_seen(w), "{rt:?} differs from Go for {body}");
    }
}

mod tokio_server {
    use super::*;
    #[test]
    fn gateway() {
        gateway_matches_go(Runtime::Tokio);
    }
    #[test]
    fn jsonrpc() {
        jsonrpc_matches_go(Runtime::Tokio);
    }
}

mod smol_server {
    use super::*;
    #[test]
    fn gateway() {
        gateway_matches_go(Runtime::Smol);
    }
    #[test]
    fn jsonrpc() {
        jsonrpc_matches_go(Runtime::Smol);
    }
}

mod std_server {
    use super::*;
    #[test]
    fn gateway() {
        gateway_matches_go(Runtime::Std);
    }
    #[test]
    fn jsonrpc() {
        jsonrpc_matches_go(Runtime::Std);
    }
}
