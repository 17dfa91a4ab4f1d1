//! HTTP on the rpcx port (the X-RPCX gateway and JSON-RPC 2.0), the same on every server
//! runtime: the client is a raw socket writing HTTP/1.1 by hand, so what is checked is
//! the bytes a curl or browser would see. The mapping is Go's (`server/gateway.go`,
//! `server/jsonrpc2.go`); where ours is deliberately stricter the scenario says so.

use crate::services::{TOKEN, router};
use crate::{ServeOpts, ServerRt};
use rpcx_core::service::ServerSettings;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A response as read off the socket.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names exactly as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// A keep-alive HTTP/1.1 connection to a server.
pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub fn open(addr: &str) -> Self {
        let stream = TcpStream::connect(addr.trim_start_matches("tcp@")).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        Self { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write the request");
    }

    /// Send a request with these headers and body (Content-Length added).
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        self.send(&request_bytes(method, path, headers, body));
        self.response().expect("a response")
    }

    /// The next response (`None`: the server closed the connection first). Interim
    /// (1xx) responses are skipped.
    pub fn response(&mut self) -> Option<HttpResponse> {
        loop {
            let r = self.next_response()?;
            if r.status >= 200 {
                return Some(r);
            }
        }
    }

    /// The next response, 1xx included.
    pub fn next_response(&mut self) -> Option<HttpResponse> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).expect("a valid HTTP response") {
                let status = r.code.expect("status");
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let chunked = headers
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
                if chunked {
                    // Go's server streams a large body it was not given the length of.
                    self.buf.drain(..n);
                    let body = self.chunked_body()?;
                    return Some(HttpResponse { status, headers, body });
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().expect("a Content-Length"));
                while self.buf.len() < n + len {
                    self.fill()?;
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Some(HttpResponse { status, headers, body });
            }
            self.fill()?;
        }
    }

    /// A chunked body at the front of the buffer (trailers skipped).
    fn chunked_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let (used, size) = loop {
                match httparse::parse_chunk_size(&self.buf).expect("a chunk size") {
                    httparse::Status::Complete(c) => break c,
                    httparse::Status::Partial => self.fill()?,
                }
            };
            let size = size as usize;
            if size == 0 {
                self.buf.drain(..used);
                // The trailer: lines until an empty one.
                loop {
                    while !self.buf.contains(&b'\n') {
                        self.fill()?;
                    }
                    let nl = self.buf.iter().position(|&b| b == b'\n').expect("a line");
                    let blank = nl == 0 || (nl == 1 && self.buf[0] == b'\r');
                    self.buf.drain(..=nl);
                    if blank {
                        return Some(body);
                    }
                }
            }
            while self.buf.len() < used + size + 2 {
                self.fill()?;
            }
            body.extend_from_slice(&self.buf[used..used + size]);
            self.buf.drain(..used + size + 2);
        }
    }

    fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 << 10];
        match self.stream.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    /// Whether the server closes the connection (EOF or reset) within `limit`, with
    /// nothing more sent.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).expect("read timeout");
        let mut b = [0u8; 1024];
        let end = Instant::now() + limit;
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
            if Instant::now() >= end {
                return false;
            }
        }
    }
}

pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: rpcx\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

const MUL: [(&str, &str); 3] =
    [("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")];

/// A gateway call in JSON and in MsgPack, with metadata both ways, an echoed message
/// id, the URL path as the service path, and keep-alive: every request on one
/// connection.
pub fn gateway_calls_like_go(s: &dyn ServerRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let mut c = HttpConn::open(&server.address());

    let r = c.request("POST", "/", &[&MUL[..], &[("X-RPCX-MessageID", "77")]].concat(), br#"{"A":6,"B":7}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_text(), r#"{"C":42}"#);
    // Go's canonical header names, and its echo.
    for (name, value) in [
        ("X-Rpcx-Messageid", "77"),
        ("X-Rpcx-Servicepath", "Arith"),
        ("X-Rpcx-Servicemethod", "Mul"),
        ("X-Rpcx-Serializetype", "1"),
        ("X-Rpcx-Version", ""),
        ("X-Rpcx-Meta", ""),
    ] {
        assert!(r.headers.iter().any(|(n, v)| n == name && v == value), "{name}: {value} in {:?}", r.headers);
    }
    assert_eq!(r.header("X-Rpcx-Messagestatustype"), None, "Go sends no status type on success");
    assert_eq!(r.header("Content-Type"), Some("application/json"));

    // The URL path names the service; metadata goes in as a query and comes back sorted.
    let r = c.request(
        "PUT",
        "/Echo",
        &[("X-RPCX-ServiceMethod", "Meta"), ("X-RPCX-SerializeType", "1"), ("X-RPCX-Meta", "z=last&a=x+y&a=second")],
        br#"{"A":1,"B":2}"#,
    );
    assert_eq!((r.status, r.body_text()), (200, r#"{"C":3}"#), "{r:?}");
    assert_eq!(r.header("X-Rpcx-Meta"), Some("a=x+y&z=last"));

    // MsgPack: {"A":3,"B":5} -> {"C":15}.
    let args = [0x82, 0xa1, b'A', 0x03, 0xa1, b'B', 0x05];
    let r = c.request("POST", "/Arith", &[("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "3")], &args);
    assert_eq!((r.status, &r.body[..]), (200, &[0x81, 0xa1, b'C', 0x0f][..]), "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/msgpack"));

    // Oneway: the call runs, the body is empty.
    let r = c.request("POST", "/", &[&MUL[..], &[("X-RPCX-Oneway", "true")]].concat(), br#"{"A":1,"B":1}"#);
    assert_eq!((r.status, r.body.len()), (200, 0), "{r:?}");

    // Two requests in one write are answered in order.
    let mut two = request_bytes("POST", "/", &MUL, br#"{"A":2,"B":2}"#);
    two.extend(request_bytes("POST", "/", &MUL, br#"{"A":3,"B":3}"#));
    c.send(&two);
    assert_eq!(c.response().expect("first").body_text(), r#"{"C":4}"#);
    assert_eq!(c.response().expect("second").body_text(), r#"{"C":9}"#);

    // A chunked body, and `Expect: 100-continue` (curl sends it for large bodies).
    c.send(b"POST / HTTP/1.1\r\nX-RPCX-ServicePath: Arith\r\nX-RPCX-ServiceMethod: Mul\r\nX-RPCX-SerializeType: 1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(c.next_response().expect("interim").status, 100);
    c.send(b"6\r\n{\"A\":4\r\n7\r\n,\"B\":5}\r\n0\r\n\r\n");
    assert_eq!(c.response().expect("chunked").body_text(), r#"{"C":20}"#);

    let st = server.stats().expect("stats");
    assert_eq!(st.connections_accepted, 1, "one keep-alive connection: {st:?}");
    server.close();
}

/// Go's error answers: missing headers and parse errors are 200 with the error
/// headers, a service error 500, an unknown method 500 with Go's text, other HTTP
/// methods 405, OPTIONS the allowed list; the connection stays usable throughout.
pub fn gateway_errors_like_go(s: &dyn ServerRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let mut c = HttpConn::open(&server.address());
    fn error(r: &HttpResponse) -> (u16, Option<&str>, Option<String>) {
        (r.status, r.header("X-Rpcx-Messagestatustype"), r.header("X-Rpcx-Errormessage").map(str::to_owned))
    }

    let r = c.request("POST", "/", &[("X-RPCX-ServicePath", "Arith"), ("X-RPCX-SerializeType", "1")], b"{}");
    assert_eq!(error(&r), (200, Some("Error"), Some("empty servicemethod".into())), "{r:?}");
    assert_eq!(r.body.len(), 0);
    let r = c.request("POST", "/", &[("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")], b"{}");
    assert_eq!(error(&r), (200, Some("Error"), Some("empty servicepath".into())), "{r:?}");
    let r = c.request("POST", "/Arith", &[("X-RPCX-ServiceMethod", "Mul")], b"{}");
    assert_eq!(error(&r), (200, Some("Error"), Some("empty serialized type".into())), "{r:?}");
    let r = c.request("POST", "/", &[&MUL[..], &[("X-RPCX-MessageID", "x1")]].concat(), b"{}");
    assert_eq!(error(&r), (200, Some("Error"), Some(r#"strconv.ParseUint: parsing "x1": invalid syntax"#.into())));
    let r = c.request("POST", "/", &[&MUL[..], &[("X-RPCX-Meta", "a=%zz")]].concat(), b"{}");
    assert_eq!(error(&r), (200, Some("Error"), Some(r#"invalid URL escape "%zz""#.into())));

    let r = c.request(
        "POST",
        "/",
        &[("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Error"), ("X-RPCX-SerializeType", "1")],
        br#"{"A":5,"B":0}"#,
    );
    assert_eq!(error(&r), (500, Some("Error"), Some("intentional error A=5".into())), "{r:?}");
    let r = c.request("POST", "/Nope", &[("X-RPCX-ServiceMethod", "M"), ("X-RPCX-SerializeType", "1")], b"{}");
    assert_eq!(error(&r), (500, Some("Error"), Some("rpcx: can't find service Nope".into())));
    // A handler that panics is a 500 too; the connection lives on.
    let r = c.request(
        "POST",
        "/Arith",
        &[("X-RPCX-ServiceMethod", "Div"), ("X-RPCX-SerializeType", "1")],
        br#"{"A":1,"B":0}"#,
    );
    assert_eq!(r.status, 500, "{r:?}");

    let r = c.request("DELETE", "/Arith", &MUL, b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, OPTIONS, POST, PUT")));
    let r = c.request("OPTIONS", "/Arith", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (200, Some("GET, OPTIONS, POST, PUT")));

    let r = c.request("GET", "/", &MUL, br#"{"A":2,"B":21}"#);
    assert_eq!((r.status, r.body_text()), (200, r#"{"C":42}"#), "still serving");
    server.close();
}

/// An auth failure is 401 with the error headers (and, stricter than Go, the
/// connection closes after it, as an rpcx connection does); `Authorization` is the
/// token.
pub fn gateway_auth_is_401(s: &dyn ServerRt) {
    let server = s.serve(router(true), ServeOpts::default());
    let mut c = HttpConn::open(&server.address());
    let r = c.request("POST", "/", &[&MUL[..], &[("Authorization", TOKEN)]].concat(), br#"{"A":2,"B":3}"#);
    assert_eq!((r.status, r.body_text()), (200, r#"{"C":6}"#), "{r:?}");
    let r = c.request("POST", "/", &[&MUL[..], &[("Authorization", "wrong")]].concat(), br#"{"A":2,"B":3}"#);
    assert_eq!((r.status, r.header("X-Rpcx-Errormessage")), (401, Some("auth failed")), "{r:?}");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)), "closed after the auth failure");
    server.close();
}

/// JSON-RPC 2.0: a call, a notification (empty 200 at once), a batch, and the error
/// codes; `X-RPCX-Meta` reaches the handler. Better than Go: missing params is an
/// error object, batches work, the content type is spelled right.
pub fn jsonrpc_like_go(s: &dyn ServerRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let mut c = HttpConn::open(&server.address());
    let h = [("X-JSONRPC-2.0", "true"), ("X-RPCX-Meta", "k=v")];
    let r = c.request("POST", "/", &h, br#"{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":6,"B":7},"id":1}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), r#"{"jsonrpc":"2.0","result":{"C":42},"id":1}"#);
    assert_eq!(r.header("Content-Type"), Some("application/json"));

    // The connection is JSON-RPC from its first request on, as in Go.
    let r =
        c.request("POST", "/any", &[], br#"{"jsonrpc":"2.0","method":"Echo.Meta","params":{"A":1,"B":1},"id":"s"}"#);
    assert_eq!(r.body_text(), r#"{"jsonrpc":"2.0","result":{"C":2},"id":"s"}"#);

    let r = c.request("POST", "/", &[], br#"{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":1,"B":1}}"#);
    assert_eq!((r.status, r.body.len()), (200, 0), "a notification: {r:?}");

    let r = c.request("POST", "/", &[], br#"{"jsonrpc":"2.0","method":"Arith.Error","params":{"A":9,"B":1},"id":2}"#);
    assert_eq!(
        r.body_text(),
        r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"intentional error A=9","data":null},"id":2}"#
    );
    let r = c.request("POST", "/", &[], br#"{"jsonrpc":"2.0","method":"Mul","params":{},"id":3}"#);
    assert!(r.body_text().contains(r#""code":-32601,"message":"must contains servicepath and method""#), "{r:?}");
    let r = c.request("POST", "/", &[], br#"{"jsonrpc":"2.0","method":"Arith.Mul","id":4}"#);
    assert!(r.body_text().contains(r#""code":-32602"#) && r.body_text().ends_with(r#","id":4}"#), "{r:?}");
    let r = c.request("POST", "/", &[], b"{not json");
    assert!(r.body_text().starts_with(r#"{"jsonrpc":"2.0","error":{"code":-32700,"#), "{r:?}");

    let batch = br#"[{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":2,"B":2},"id":1},
        {"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":1,"B":1}},
        {"jsonrpc":"2.0","method":"Arith.Slow","params":{"A":30,"B":0},"id":2},
        {"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":3,"B":3},"id":3}]"#;
    let r = c.request("POST", "/", &[], batch);
    assert_eq!(
        r.body_text(),
        r#"[{"jsonrpc":"2.0","result":{"C":4},"id":1},{"jsonrpc":"2.0","result":{"C":30},"id":2},{"jsonrpc":"2.0","result":{"C":9},"id":3}]"#
    );
    server.close();
}

/// Hostile HTTP: an oversized head (431) or body (413) and garbage (400) are answered
/// and closed; a head trickled past the frame timeout is closed; none of it stops a
/// well-behaved client on another connection.
pub fn hostile_http_is_bounded(s: &dyn ServerRt) {
    let mut settings = ServerSettings::default();
    settings.connection.frame_timeout = Some(Duration::from_millis(300));
    settings.connection.decoder.max_message_len = 64 << 10;
    settings.connection.http.max_head_bytes = 4096;
    let server = s.serve(router(false), ServeOpts { settings: Some(settings), ..Default::default() });
    let addr = server.address();
    let mut good = HttpConn::open(&addr);

    let mut c = HttpConn::open(&addr);
    let huge = "a".repeat(8192);
    c.send(format!("GET / HTTP/1.1\r\nX-Big: {huge}\r\n\r\n").as_bytes());
    let r = c.response().expect("431");
    assert_eq!((r.status, r.header("Connection")), (431, Some("close")));
    assert!(c.closed_within(Duration::from_secs(5)));

    let mut c = HttpConn::open(&addr);
    c.send(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    assert_eq!(c.response().expect("413").status, 413);
    assert!(c.closed_within(Duration::from_secs(5)));

    let mut c = HttpConn::open(&addr);
    let mut bytes = request_bytes("POST", "/", &MUL, br#"{"A":1,"B":2}"#);
    bytes.extend_from_slice(b"GET /\x01\x02 garbage\r\n\r\n");
    c.send(&bytes);
    assert_eq!(c.response().expect("the valid one").body_text(), r#"{"C":2}"#);
    assert_eq!(c.response().expect("400").status, 400);
    assert!(c.closed_within(Duration::from_secs(5)));

    // Slowloris: a head that never ends.
    let mut c = HttpConn::open(&addr);
    c.send(b"POST / HTTP/1.1\r\nX-Slow: ");
    let started = Instant::now();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        let _ = c.stream.write_all(b"a");
    }
    assert!(c.closed_within(Duration::from_secs(5)), "a trickled head is closed");
    assert!(started.elapsed() < Duration::from_secs(3), "within about the frame timeout");

    let r = good.request("POST", "/", &MUL, br#"{"A":4,"B":4}"#);
    assert_eq!(r.body_text(), r#"{"C":16}"#, "a well-behaved client was served throughout");
    server.close();
}

/// With the gateway and JSON-RPC turned off the port is rpcx only: an HTTP request is
/// closed like any other non-rpcx bytes (as Go closes what cmux does not match). With
/// only the gateway off, a JSON-RPC request still works and a gateway one gets 404.
pub fn http_can_be_turned_off(s: &dyn ServerRt) {
    let mut settings = ServerSettings::default();
    settings.connection.http = rpcx_core::http::HttpConfig::disabled();
    let server = s.serve(router(false), ServeOpts { settings: Some(settings), ..Default::default() });
    let mut c = HttpConn::open(&server.address());
    c.send(&request_bytes("POST", "/", &MUL, b"{}"));
    assert!(c.response().is_none(), "no HTTP answer");
    server.close();

    let mut settings = ServerSettings::default();
    settings.connection.http.gateway = false;
    let server = s.serve(router(false), ServeOpts { settings: Some(settings), ..Default::default() });
    let mut c = HttpConn::open(&server.address());
    let r = c.request(
        "POST",
        "/",
        &[("X-JSONRPC-2.0", "true")],
        br#"{"method":"Arith.Mul","params":{"A":2,"B":2},"id":1}"#,
    );
    assert_eq!(r.body_text(), r#"{"jsonrpc":"2.0","result":{"C":4},"id":1}"#);
    let mut c = HttpConn::open(&server.address());
    assert_eq!(c.request("POST", "/", &MUL, b"{}").status, 404);
    server.close();
}

/// A CONNECT tunnel keeps the bytes a client writes right after its request (Go's
/// server loses them): the answer is Go's exact `HTTP/1.0 200 Connected to rpcx\n\n`,
/// then the response to the frame sent with the CONNECT. A CONNECT to another path is
/// a 404.
pub fn connect_keeps_pipelined_bytes(s: &dyn ServerRt) {
    use rpcx_core::wire::{Message, SerializeType, StreamDecoder};
    let server = s.serve(router(false), ServeOpts::default());
    let mut c = HttpConn::open(&server.address());
    let mut bytes = b"CONNECT /_rpcx_ HTTP/1.0\n\n".to_vec();
    let mut m = Message::request(SerializeType::NONE, 5, "Echo", "Raw");
    m.payload = bytes::Bytes::from_static(b"right after");
    m.encode(&Default::default(), &mut bytes).expect("encode");
    c.send(&bytes);
    let want = rpcx_core::http::connect::CONNECTED;
    while c.buf.len() < want.len() {
        c.fill().expect("the CONNECT answer");
    }
    assert_eq!(&c.buf[..want.len()], want);
    let mut dec = StreamDecoder::default();
    dec.feed(&c.buf[want.len()..]);
    let reply = loop {
        if let Some(m) = dec.next_message().expect("rpcx frames") {
            break m;
        }
        let mut chunk = [0u8; 4096];
        let n = c.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before the response");
        dec.feed(&chunk[..n]);
    };
    assert_eq!((reply.header.seq(), &reply.payload[..]), (5, &b"right after"[..]));

    let mut c = HttpConn::open(&server.address());
    c.send(b"CONNECT /elsewhere HTTP/1.1\r\n\r\n");
    assert_eq!(c.response().expect("404").status, 404);
    server.close();
}

/// CORS, when turned on (`http_cors(true)`, Go's `SetCORS(AllowAllCORSOptions())`): a
/// preflight is answered 204 with the method and headers asked for, a request with an
/// `Origin` gets `Access-Control-Allow-Origin: *`. Off (the default), neither.
pub fn cors_when_turned_on(s: &dyn ServerRt) {
    let mut settings = ServerSettings::default();
    settings.connection.http.cors = true;
    let server = s.serve(router(false), ServeOpts { settings: Some(settings), ..Default::default() });
    let mut c = HttpConn::open(&server.address());
    let r = c.request(
        "OPTIONS",
        "/",
        &[
            ("Origin", "http://example.com"),
            ("Access-Control-Request-Method", "post"),
            ("Access-Control-Request-Headers", "x-rpcx-servicepath, x-rpcx-servicemethod"),
        ],
        b"",
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(r.header("Access-Control-Allow-Methods"), Some("POST"));
    assert_eq!(r.header("Access-Control-Allow-Headers"), Some("x-rpcx-servicepath, x-rpcx-servicemethod"));
    let r = c.request("POST", "/", &[&MUL[..], &[("Origin", "http://example.com")]].concat(), br#"{"A":2,"B":5}"#);
    assert_eq!((r.status, r.body_text()), (200, r#"{"C":10}"#));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    server.close();

    let server = s.serve(router(false), ServeOpts::default());
    let mut c = HttpConn::open(&server.address());
    let r = c.request("POST", "/", &[&MUL[..], &[("Origin", "http://example.com")]].concat(), br#"{"A":2,"B":5}"#);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None, "CORS is off by default");
    server.close();
}

/// A thousand idle keep-alive HTTP connections (each after one answered request) are
/// all held, the server still answers a new client at once, and closing them brings the
/// open count back to zero.
pub fn a_thousand_idle_keep_alive_connections(s: &dyn ServerRt) {
    crate::faults::raise_fd_limit();
    let server = s.serve(router(false), ServeOpts::default());
    let addr = server.address();
    let mut conns = Vec::new();
    for i in 0..1000 {
        let mut c = HttpConn::open(&addr);
        if i % 100 == 0 {
            assert_eq!(c.request("POST", "/", &MUL, br#"{"A":1,"B":1}"#).body_text(), r#"{"C":1}"#);
        } else {
            c.send(&request_bytes("POST", "/", &MUL, br#"{"A":1,"B":1}"#));
        }
        conns.push(c);
    }
    // The others' answers, read now (every hundredth was read as it was sent).
    for (i, c) in conns.iter_mut().enumerate().filter(|(i, _)| i % 100 != 0) {
        assert_eq!(c.response().unwrap_or_else(|| panic!("connection {i} closed")).status, 200, "connection {i}");
    }
    crate::faults::eventually(&*server, Duration::from_secs(20), "1000 open", |t| t.connections_open >= 1000);
    let started = Instant::now();
    let mut fresh = HttpConn::open(&addr);
    assert_eq!(fresh.request("POST", "/", &MUL, br#"{"A":6,"B":7}"#).body_text(), r#"{"C":42}"#);
    assert!(started.elapsed() < Duration::from_secs(2), "a new client waited {:?}", started.elapsed());
    drop(conns);
    drop(fresh);
    crate::faults::eventually(&*server, Duration::from_secs(20), "all closed", |t| t.connections_open == 0);
    server.close();
}
