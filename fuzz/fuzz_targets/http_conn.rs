//! Fuzz a `ServerConnection` on a port that also speaks HTTP: the classification of the
//! first bytes, the HTTP/1 reader (heads, Content-Length and chunked bodies, pipelining,
//! `Expect: 100-continue`), the gateway and JSON-RPC mappings, answers to any id, time
//! jumps, closes and EOF.
//!
//! Checked: no panic; what the server transmits is a run of whole HTTP/1 responses, each
//! with a status the server may send and a `Content-Length` its body matches (or whole
//! rpcx frames, when the first bytes made the connection rpcx or a CONNECT tunnelled); nothing follows
//! `ConnectionLost`; requests in flight stay within `max_in_flight`; the memory the
//! connection charges stays within its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcx_core::conn::{CloseMode, RequestId, Response, ServerConfig, ServerConnection, ServerEvent};
use rpcx_core::http::HttpConfig;
use rpcx_core::wire::{DecoderConfig, StreamDecoder};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const MAX_IN_FLIGHT: usize = 4;
const MAX_BODY: usize = 2048;
const MAX_HEAD: usize = 1024;

/// First bytes: a WebSocket upgrade, none (the operations decide), HTTP methods (whole
/// and cut), the rpcx magic, garbage.
const STARTS: [&[u8]; 10] = [
    b"GET /_rpcx_ HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
   b"", b"POST / HTTP/1.1\r\n", b"GET /Arith HTTP/1.0\r\n", b"PUT", b"OPTIONS * HTTP/1.1\r\n", b"DELETE /x HTTP/1.1\r\n", b"CONNECT /_rpcx_ HTTP/1.0\n\n", b"\x08\x01", b"HEAD"];

/// The server's output, checked as it arrives.
enum Sent {
    Unknown(Vec<u8>),
    Http(Vec<u8>),
    Rpcx(StreamDecoder),
    /// WebSocket frames (after a 101) carrying rpcx frames.
    Ws(Vec<u8>, StreamDecoder),
}

/// Take whole server frames off `buf` (unmasked, as a server sends them), feeding
/// binary payloads to `dec`.
fn check_ws(buf: &mut Vec<u8>, dec: &mut StreamDecoder) {
    loop {
        if buf.len() < 2 {
            return;
        }
        assert_eq!(buf[0] & 0x70, 0, "reserved bits");
        assert_eq!(buf[1] & 0x80, 0, "a server does not mask");
        let (len, at) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return,
            n => (usize::from(n), 2),
        };
        if buf.len() < at + len {
            return;
        }
        match buf[0] & 0x0f {
            2 => {
                dec.feed(&buf[at..at + len]);
                while dec.next_message().expect("the server sent an invalid rpcx frame").is_some() {}
            }
            8 | 10 => {}
            op => panic!("the server sent opcode {op}"),
        }
        buf.drain(..at + len);
    }
}

impl Sent {
    fn feed(&mut self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        if let Sent::Unknown(_) = self {
            *self = if out[0] == b'H' { Sent::Http(Vec::new()) } else { Sent::Rpcx(StreamDecoder::default()) };
        }
        match self {
            Sent::Http(buf) => {
                buf.extend_from_slice(out);
                match check_responses(buf) {
                    Some(Switch::Tunnel(rest)) => {
                        // A CONNECT tunnel: rpcx from here on.
                        let mut dec = StreamDecoder::default();
                        dec.feed(&rest);
                        while dec.next_message().expect("the server sent an invalid rpcx frame").is_some() {}
                        *self = Sent::Rpcx(dec);
                    }
                    Some(Switch::WebSocket(mut rest)) => {
                        let mut dec = StreamDecoder::default();
                        check_ws(&mut rest, &mut dec);
                        *self = Sent::Ws(rest, dec);
                    }
                    None => {}
                }
            }
            Sent::Ws(buf, dec) => {
                buf.extend_from_slice(out);
                check_ws(buf, dec);
            }
            Sent::Rpcx(dec) => {
                dec.feed(out);
                while dec.next_message().expect("the server sent an invalid rpcx frame").is_some() {}
            }
            Sent::Unknown(_) => unreachable!(),
        }
    }
}

/// Where HTTP ended.
enum Switch {
    Tunnel(Vec<u8>),
    WebSocket(Vec<u8>),
}

/// Take the whole responses off `buf`, checking each. A CONNECT answer or a 101 ends
/// HTTP: the bytes after it are returned.
fn check_responses(buf: &mut Vec<u8>) -> Option<Switch> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let n = match r.parse(buf).expect("the server sent an invalid HTTP response") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return None,
        };
        let status = r.code.expect("status");
        if status == 200 && r.reason == Some("Connected to rpcx") {
            assert_eq!(&buf[..n], rpcx_core::http::connect::CONNECTED);
            return Some(Switch::Tunnel(buf.split_off(n)));
        }
        if status == 101 {
            return Some(Switch::WebSocket(buf.split_off(n)));
        }
        assert!(
            [100, 101, 200, 204, 400, 401, 404, 405, 413, 431, 500, 501, 505].contains(&status),
            "unexpected status {status}"
        );
        let len = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).expect("ASCII").parse::<usize>().expect("a number"));
        let len = match status {
            100 | 101 | 204 => {
                assert!(len.is_none(), "no body on {status}");
                0
            }
            _ => len.expect("every response says its length"),
        };
        if buf.len() < n + len {
            return None;
        }
        buf.drain(..n + len);
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, start, rest @ ..] = data else { return };
    let mut now = Instant::now();
    let cfg = ServerConfig {
        decoder: DecoderConfig { max_message_len: MAX_BODY, ..Default::default() },
        max_in_flight: MAX_IN_FLIGHT,
        max_unsent_bytes: 16 << 10,
        read_timeout: Some(Duration::from_secs(5)),
        frame_timeout: Some(Duration::from_secs(1)),
        http: HttpConfig {
            gateway: flags & 1 == 0,
            jsonrpc: flags & 2 == 0,
            connect: flags & 8 == 0,
            max_head_bytes: MAX_HEAD,
            cors: flags & 4 == 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut conn = ServerConnection::new(cfg, now);
    conn.handle_input(now, STARTS[usize::from(*start) % STARTS.len()]);
    let mut sent = Sent::Unknown(Vec::new());
    let mut open: BTreeSet<RequestId> = BTreeSet::new();
    let mut lost = false;
    let mut i = 0;
    let next = |i: &mut usize| -> u8 {
        let b = rest.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    while i < rest.len() {
        let op = next(&mut i) % 8;
        // Input only while the machine wants it (the drive contract; a driver reads
        // nothing else).
        if matches!(op, 0..=3) && !conn.wants_read() {
            i += 1;
            continue;
        }
        match op {
            0 | 1 => {
                let n = usize::from(next(&mut i) % 128);
                let s = i.min(rest.len());
                let e = (s + n).min(rest.len());
                conn.handle_input(now, &rest[s..e]);
                i = e;
            }
            2 => {
                // A well-formed gateway request.
                let arg = next(&mut i);
                let method = ["POST", "GET", "PUT", "PATCH"][usize::from(arg & 3)];
                let mut req = format!("{method} /Arith HTTP/1.{}\r\nX-RPCX-ServiceMethod: Mul\r\n", (arg >> 2) & 1);
                if arg & 8 == 8 {
                    req.push_str("X-RPCX-SerializeType: 1\r\n");
                }
                if arg & 16 == 16 {
                    req.push_str("X-RPCX-Meta: a=1&b=%zz\r\nX-RPCX-MessageID: 9\r\n");
                }
                if arg & 32 == 32 {
                    req.push_str("X-RPCX-Oneway: 1\r\nOrigin: x\r\n");
                }
                if arg & 64 == 64 {
                    req.push_str("Connection: close\r\n");
                }
                let body = r#"{"A":2,"B":3}"#;
                if arg & 128 == 128 {
                    req.push_str(&format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len()));
                } else {
                    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
                }
                conn.handle_input(now, req.as_bytes());
            }
            3 => {
                // A well-formed JSON-RPC request: a call, a notification or a batch.
                let arg = next(&mut i);
                let call =
                    |id: u8| format!(r#"{{"jsonrpc":"2.0","method":"Arith.Mul","params":{{"A":{id}}},"id":{id}}}"#);
                let body = match arg % 4 {
                    0 => call(arg),
                    1 => r#"{"jsonrpc":"2.0","method":"Arith.Mul","params":1}"#.to_owned(),
                    2 => format!("[{},{},{}]", call(1), r#"{"method":"S.M","params":[]}"#, call(2)),
                    _ => r#"{"jsonrpc":"2.0","method":"NoDot","id":"x"}"#.to_owned(),
                };
                let req =
                    format!("POST / HTTP/1.1\r\nX-JSONRPC-2.0: true\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                conn.handle_input(now, req.as_bytes());
            }
            7 if next(&mut i) % 2 == 0 => {
                // A WebSocket frame: a request frame, a ping or a close, masked or not,
                // text or binary.
                let arg = next(&mut i);
                let mut payload = Vec::new();
                match arg % 4 {
                    0 | 1 => {
                        let mut m = rpcx_core::wire::Message::request(
                            rpcx_core::wire::SerializeType::JSON,
                            u64::from(arg),
                            "Arith",
                            "Mul",
                        );
                        m.payload = bytes::Bytes::from_static(br#"{"A":1}"#);
                        m.encode(&Default::default(), &mut payload).expect("encode");
                    }
                    2 => payload.extend_from_slice(b"ping"),
                    _ => payload.extend_from_slice(&[0x03, 0xe8]),
                }
                let opcode = [1u8, 2, 9, 8][usize::from(arg % 4)];
                let mut frame = vec![0x80 | opcode];
                let masked = arg & 4 == 4;
                frame.push(if masked { 0x80 } else { 0 } | payload.len() as u8);
                if masked {
                    frame.extend_from_slice(&[1, 2, 3, 4]);
                    for (k, b) in payload.iter_mut().enumerate() {
                        *b ^= [1, 2, 3, 4][k & 3];
                    }
                }
                frame.extend_from_slice(&payload);
                if conn.wants_read() {
                    conn.handle_input(now, &frame);
                }
            }
            4 => {
                let arg = next(&mut i);
                let id = RequestId(u64::from(arg % 16));
                let resp = match arg >> 6 {
                    0 => Response::ok(&br#"{"C":6}"#[..]),
                    1 => Response::error("boom"),
                    2 => Response::ok(vec![0x93u8; usize::from(arg)]),
                    _ => Response::default(),
                };
                let was_open = open.remove(&id);
                let res = conn.respond(now, id, resp);
                if !was_open {
                    assert!(res.is_err(), "responding to {id:?} that is not open must fail");
                }
            }
            5 => {
                now += Duration::from_millis(u64::from(next(&mut i)) * 20);
                conn.handle_timeout(now);
            }
            6 => {
                let mode = [CloseMode::Graceful, CloseMode::Flush, CloseMode::Immediate][usize::from(next(&mut i) % 3)];
                conn.close(now, mode);
                if mode != CloseMode::Graceful {
                    open.clear();
                }
            }
            _ => {
                if next(&mut i) % 4 == 0 {
                    conn.handle_eof(now);
                    open.clear();
                }
            }
        }
        let mut out = Vec::new();
        while conn.poll_transmit(&mut out).is_some() {}
        sent.feed(&out);
        while let Some(ev) = conn.poll_event() {
            assert!(!lost, "event after ConnectionLost: {ev:?}");
            match ev {
                ServerEvent::Request(r) => assert!(open.insert(r.id), "request id reused"),
                ServerEvent::ConnectionLost(_) => {
                    lost = true;
                    open.clear();
                }
                _ => {}
            }
        }
        if !conn.is_closing() {
            // A batch may put a few more in flight than the limit (it is bounded by it).
            assert!(conn.in_flight() <= 2 * MAX_IN_FLIGHT, "{} in flight", conn.in_flight());
        }
        // Input held: a head, a body and a chunked body so far, beside queued output.
        assert!(conn.charged_bytes() <= 64 << 10, "{} bytes charged", conn.charged_bytes());
    }
});
