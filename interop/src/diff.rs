//! The differential test: seeded random request streams sent byte for byte (same
//! chunking) to the real Go server (`interop/go`) and to a Rust server of each runtime;
//! the answers are compared by seq.
//!
//! [`generate`] makes the streams: every serialize type, payload variants around each
//! Go decoding rule (missing fields, key case, null/nil, duplicates, trailing bytes,
//! MsgPack integer widths and wrap-around, arrays, integer keys, protobuf wire types),
//! metadata, gzip, oneway, heartbeats (also a gzip of nothing), odd service and method
//! names (not UTF-8), auth failures; [`run_stream`] sends one over loopback in random
//! chunks and collects what comes back; [`compare`] holds both sides' answers against
//! each other. Every accepted difference is one of [`DOCUMENTED`]; anything else is
//! reported as undocumented.

use crate::services::MAX_PUSHES;
use bytes::{Bytes, BytesMut};
use rpcx_core::compress::{Compressor, Gzip};
use rpcx_core::wire::{
    AUTH_KEY, CompressType, DecoderConfig, FrameDecoder, Header, Message, MessageStatus, MessageType, Metadata,
    SERVICE_ERROR_KEY, SerializeType,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The auth token of the auth-requiring servers.
pub const TOKEN: &str = "diff-token";

/// The differences from Go that the comparison accepts (README "Where we differ").
pub const DOCUMENTED: &[(&str, &str)] = &[
    (
        "codec-error-text",
        "a payload that does not decode is an error on both sides; the text is serde's/prost's, not Go's",
    ),
    ("error-reply-payload", "a method that returns an error sends no reply payload (Go sends the zero reply)"),
    ("msgpack-int-width", "MsgPack replies use the shortest integer encoding (Go writes int64 as d3 + 8 bytes)"),
    ("push-seq", "server pushes count seqs per connection (Go per server); pushes are compared without seq"),
];

/// xorshift64*: small, seeded, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `p` percent.
    pub fn pct(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    /// An integer of a random magnitude (small, byte-sized, large, extreme).
    fn int(&mut self) -> i64 {
        match self.below(6) {
            0 => 0,
            1 => self.below(20) as i64 - 10,
            2 => self.below(300) as i64 - 150,
            3 => (self.next_u64() as i64) >> 33,
            4 => self.next_u64() as i64,
            _ => *self.pick(&[i64::MAX, i64::MIN, 127, 128, -32, -33, 255, 256, 65535, 65536]),
        }
    }
}

/// One step of a stream.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send this frame (its bytes join the pending chunked write).
    Send(Message),
    /// Flush what is pending and wait until every answer so far has arrived.
    Barrier,
}

/// A generated connection: its steps, chunking seed and which servers it goes to.
#[derive(Debug, Clone)]
pub struct Stream {
    /// What to send.
    pub steps: Vec<Step>,
    /// Seed of the chunk sizes (the same for every server).
    pub chunk_seed: u64,
    /// Whether it goes to the servers that require [`TOKEN`].
    pub auth: bool,
    /// Whether its last request fails auth (the server then closes the connection).
    pub ends_in_auth_failure: bool,
}

impl Stream {
    /// Requests (heartbeats included) in the stream.
    pub fn requests(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Send(_))).count()
    }
}

/// `n` requests in streams of 1 to 40, from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<Stream> {
    let mut rng = Rng::new(seed);
    let mut streams = Vec::new();
    let mut left = n;
    while left > 0 {
        let len = (1 + rng.below(40)).min(left);
        left -= len;
        let auth = rng.pct(25);
        let fail = auth && rng.pct(40);
        let mut steps = Vec::with_capacity(len + 1);
        for i in 0..len {
            let seq = i as u64 + 1;
            let last = i + 1 == len;
            if last && fail {
                steps.push(Step::Barrier);
                let mut m = request(&mut rng, seq);
                m.header.set_heartbeat(false);
                if rng.pct(50) {
                    m.metadata.insert(AUTH_KEY, "wrong");
                } else {
                    m.metadata.remove(AUTH_KEY);
                }
                steps.push(Step::Send(m));
            } else {
                let mut m = request(&mut rng, seq);
                if auth && !m.header.is_heartbeat() {
                    m.metadata.insert(AUTH_KEY, TOKEN);
                }
                steps.push(Step::Send(m));
            }
        }
        streams.push(Stream { steps, chunk_seed: rng.next_u64(), auth, ends_in_auth_failure: fail });
    }
    streams
}

fn request(rng: &mut Rng, seq: u64) -> Message {
    let (path, method, st, payload): (Vec<u8>, Vec<u8>, SerializeType, Vec<u8>) = match rng.below(20) {
        0..=8 => {
            let method = *rng.pick(&["Add", "Mul", "Error"]);
            let (st, p) = args_payload(rng);
            (b"Arith".to_vec(), method.into(), st, p)
        }
        9 | 10 => {
            let (st, p) = args_payload(rng);
            (b"Echo".to_vec(), b"Meta".to_vec(), st, p)
        }
        11 | 12 => {
            let (st, p) = if rng.pct(70) { (SerializeType::PROTOBUF, proto_payload(rng)) } else { args_payload(rng) };
            (b"ProtoArith".to_vec(), b"Mul".to_vec(), st, p)
        }
        13 => {
            let n = *rng.pick(&[0usize, 1, 100, 1024, 1025, 3000]);
            let p = if rng.pct(50) { crate::pattern(n) } else { crate::noise(n) };
            (b"Echo".to_vec(), b"Raw".to_vec(), SerializeType::NONE, p)
        }
        14 => {
            let a = rng.below(4) as i64;
            let st = *rng.pick(&[SerializeType::JSON, SerializeType::MSGPACK]);
            let p = if st == SerializeType::JSON {
                format!(r#"{{"A":{a}}}"#).into_bytes()
            } else {
                vec![0x81, 0xa1, b'A', a as u8]
            };
            (b"Push".to_vec(), b"Me".to_vec(), st, p)
        }
        15 | 16 => {
            // Odd names: unknown, empty, not UTF-8; valid service with an odd method.
            let names: &[&[u8]] = &[b"", b"Nope", b"\xc3(yz", b"\xff\xfe", b"Arith\x00", "Ärith".as_bytes(), b"arith"];
            let (path, method) = if rng.pct(50) {
                (rng.pick(names).to_vec(), b"Add".to_vec())
            } else {
                (b"Arith".to_vec(), rng.pick(names).to_vec())
            };
            let (st, p) = args_payload(rng);
            (path, method, st, p)
        }
        17 => {
            // Serialize types with no serde codec here: None, Thrift, undefined numbers.
            let st = SerializeType::from_bits(*rng.pick(&[0u8, 2, 4, 5, 9, 15])).unwrap_or(SerializeType::NONE);
            (b"Arith".to_vec(), b"Add".to_vec(), st, args_payload(rng).1)
        }
        _ => {
            // A heartbeat, payload of any kind.
            let st = *rng.pick(&[SerializeType::NONE, SerializeType::JSON, SerializeType::MSGPACK]);
            let p = if rng.pct(50) { Vec::new() } else { crate::pattern(rng.below(2000)) };
            let mut m = frame(seq, st, b"", b"", p);
            m.header.set_heartbeat(true);
            m.header.set_oneway(rng.pct(30));
            if rng.pct(40) {
                m.header.set_compress_type(CompressType::GZIP);
            }
            return m;
        }
    };
    let mut m = frame(seq, st, &path, &method, payload);
    // Not for Push.Me: the pushes of a oneway call have no reply to wait for, so when
    // the stream stops reading would decide how many are seen.
    m.header.set_oneway(rng.pct(10) && &*path != b"Push");
    if rng.pct(20) {
        m.header.set_compress_type(CompressType::GZIP);
    }
    for _ in 0..rng.below(4) {
        let k = *rng.pick(&["k", "trace-id", "Ünïcode", "empty", "x"]);
        let values: [&[u8]; 5] = [b"v", b"", "välue".as_bytes(), b"\xff\x00", b"1"];
        let v = *rng.pick(&values);
        m.metadata.insert(k, Bytes::copy_from_slice(v));
    }
    if rng.pct(10) {
        m.metadata.insert("__ServerTimeout", *rng.pick(&["5000", "100000", "junk"]));
    }
    m
}

fn frame(seq: u64, st: SerializeType, path: &[u8], method: &[u8], payload: Vec<u8>) -> Message {
    Message {
        header: Header::request(st, seq),
        service_path: Bytes::copy_from_slice(path),
        service_method: Bytes::copy_from_slice(method),
        metadata: Metadata::new(),
        payload: Bytes::from(payload),
    }
}

/// An `Args` payload in JSON or MsgPack, around each Go decoding rule.
fn args_payload(rng: &mut Rng) -> (SerializeType, Vec<u8>) {
    if rng.pct(50) { (SerializeType::JSON, json_args(rng)) } else { (SerializeType::MSGPACK, msgpack_args(rng)) }
}

fn json_args(rng: &mut Rng) -> Vec<u8> {
    let (a, b) = (rng.int(), rng.int());
    let s = match rng.below(22) {
        0..=3 => format!(r#"{{"A":{a},"B":{b}}}"#),
        4 => format!(r#"{{"A":{a}}}"#),
        5 => format!(r#"{{"B":{b}}}"#),
        6 => "{}".to_owned(),
        7 => format!(r#"{{"a":{a},"b":{b}}}"#),
        8 => format!(r#"{{"A":{a},"b":{b},"a":{b}}}"#),
        9 => format!(r#"{{"A":null,"B":{b}}}"#),
        10 => "null".to_owned(),
        11 => format!(r#"{{"A":{a},"B":{b},"A":{b}}}"#),
        12 => format!(r#"{{"A":{a},"B":{b}}} trailing {{ junk"#),
        13 => format!("[{a},{b}]"),
        14 => format!(r#"{{"A":"{a}","B":{b}}}"#),
        15 => format!(r#"{{"A":{a}.5}}"#),
        16 => r#"{"A":9223372036854775808}"#.to_owned(),
        17 => String::new(),
        18 => format!(r#" {{ "Z" : [1, {{"q": null}}], "A" : {a} }}"#),
        19 => format!(r#"{{"A":{a},"B":"#),
        20 => "not json".to_owned(),
        _ => format!(r#"{{"A":{a},"B":{b},"C":true}}"#),
    };
    s.into_bytes()
}

/// A MsgPack integer in a random (valid) width.
fn mp_int(rng: &mut Rng, out: &mut Vec<u8>, v: i64) {
    let wide = rng.pct(30);
    if wide {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    } else if (0..128).contains(&v) {
        out.push(v as u8);
    } else if (-32..0).contains(&v) {
        out.push(v as i8 as u8);
    } else if v >= 0 && v <= i64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v >= 0 {
        out.push(0xcf);
        out.extend_from_slice(&(v as u64).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A MsgPack key: fixstr, str8 or bin8.
fn mp_key(rng: &mut Rng, out: &mut Vec<u8>, k: &[u8]) {
    match rng.below(4) {
        0 => out.extend_from_slice(&[0xd9, k.len() as u8]),
        1 => out.extend_from_slice(&[0xc4, k.len() as u8]),
        _ => out.push(0xa0 | k.len() as u8),
    }
    out.extend_from_slice(k);
}

fn msgpack_args(rng: &mut Rng) -> Vec<u8> {
    let (a, b) = (rng.int(), rng.int());
    let mut out = Vec::new();
    match rng.below(16) {
        0..=3 => {
            out.push(0x82);
            mp_key(rng, &mut out, b"A");
            mp_int(rng, &mut out, a);
            mp_key(rng, &mut out, b"B");
            mp_int(rng, &mut out, b);
        }
        4 => {
            out.push(0x81);
            let key: &[u8] = if rng.pct(50) { b"A" } else { b"B" };
            mp_key(rng, &mut out, key);
            mp_int(rng, &mut out, a);
        }
        5 => out.push(0x80),
        6 => out.push(0xc0),
        7 => out.push(0x90),
        8 => {
            out.push(0x83);
            mp_key(rng, &mut out, b"A");
            mp_int(rng, &mut out, a);
            mp_key(rng, &mut out, b"B");
            mp_int(rng, &mut out, b);
            mp_key(rng, &mut out, b"A");
            mp_int(rng, &mut out, b);
        }
        9 => {
            // uint64 above i64::MAX.
            out.extend_from_slice(&[0x82, 0xa1, b'A', 0xcf]);
            out.extend_from_slice(&(u64::MAX - rng.below(1000) as u64).to_be_bytes());
            out.extend_from_slice(&[0xa1, b'B', 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        }
        10 => {
            // Integer keys (rejected by Go).
            out.extend_from_slice(&[0x82, 0x00]);
            mp_int(rng, &mut out, a);
            out.push(0x01);
            mp_int(rng, &mut out, b);
        }
        11 => {
            // An array: as long as the field list (positional in Go) or not.
            let n = rng.below(4);
            out.push(0x90 | n as u8);
            for _ in 0..n {
                mp_int(rng, &mut out, a);
            }
        }
        12 => {
            out.extend_from_slice(&[0x82, 0xa1, b'A', 0xc0, 0xa1, b'a']);
            mp_int(rng, &mut out, b);
        }
        13 => {
            out.extend_from_slice(&[0x81, 0xa1, b'A']);
            mp_int(rng, &mut out, a);
            out.extend_from_slice(&[0xc1, 0xff, 0x00]);
        }
        14 => out.extend_from_slice(&[0x81, 0xa1, b'A', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
        _ => {
            if rng.pct(50) {
                out.extend_from_slice(&[0x82, 0xa1, b'A']);
            }
        }
    }
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A `ProtoArgs` payload: normal, zero, wrong wire types, packed, unknown fields, broken.
fn proto_payload(rng: &mut Rng) -> Vec<u8> {
    let (a, b) = (rng.int() as u64, rng.int() as u64);
    let mut out = Vec::new();
    match rng.below(9) {
        0..=2 => {
            out.push(0x08);
            varint(&mut out, a);
            out.push(0x10);
            varint(&mut out, b);
        }
        3 => {}
        4 => {
            // Field 1 packed (length-delimited), field 2 as fixed64.
            let mut inner = Vec::new();
            varint(&mut inner, a);
            out.push(0x0a);
            varint(&mut out, inner.len() as u64);
            out.extend_from_slice(&inner);
            out.push(0x11);
            out.extend_from_slice(&b.to_le_bytes());
        }
        5 => {
            out.push(0x10);
            varint(&mut out, b);
            out.push(0x0d);
            out.extend_from_slice(&(a as u32).to_le_bytes());
            out.push(0x08);
            varint(&mut out, a);
        }
        6 => {
            // Unknown fields of every wire type.
            out.extend_from_slice(&[0x18, 0x05, 0x22, 0x02, b'h', b'i', 0x29]);
            out.extend_from_slice(&7u64.to_le_bytes());
            out.push(0x08);
            varint(&mut out, a);
        }
        7 => out.extend_from_slice(&[0x08, 0xff]),
        _ => out.extend_from_slice(&[0x0a, 0x09, 0x01]),
    }
    out
}

/// One frame as received, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The header's bytes with seq zeroed (message type, heartbeat, oneway, compress
    /// type, status, serialize type, version).
    pub flags: [u8; 4],
    /// Service path.
    pub path: Bytes,
    /// Method.
    pub method: Bytes,
    /// Metadata, sorted.
    pub metadata: BTreeMap<Bytes, Bytes>,
    /// The payload, decompressed.
    pub payload: Bytes,
    /// The seq.
    pub seq: u64,
}

impl Answer {
    fn from_message(m: &Message) -> Result<Self, String> {
        let mut payload = m.payload.clone();
        if m.header.compress_type() == CompressType::GZIP {
            payload = Gzip::default().decompress(&m.payload, 64 << 20).map_err(|e| format!("gunzip: {e}"))?.into();
        }
        let b = m.header.to_bytes();
        Ok(Self {
            flags: [b[0], b[1], b[2], b[3]],
            path: m.service_path.clone(),
            method: m.service_method.clone(),
            metadata: m.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            payload,
            seq: m.header.seq(),
        })
    }

    fn header(&self) -> Header {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.flags);
        Header::from_bytes(&b)
    }

    fn error(&self) -> Option<&Bytes> {
        self.metadata.get(SERVICE_ERROR_KEY.as_bytes())
    }
}

/// What one server answered on one stream.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Responses by seq.
    pub answers: BTreeMap<u64, Answer>,
    /// Pushes (server requests), seq cleared, sorted.
    pub pushes: Vec<Answer>,
    /// Whether the server closed the connection.
    pub closed: bool,
    /// Anything that went wrong on our side (bad frame, timeout).
    pub problem: Option<String>,
}

/// How long a stream may wait for its answers.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Send `stream` to `addr` (`HOST:PORT`) in random chunks and collect the answers.
pub fn run_stream(addr: &str, stream: &Stream) -> Outcome {
    let mut out = Outcome::default();
    let mut sock = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            out.problem = Some(format!("connect {addr}: {e}"));
            return out;
        }
    };
    let _ = sock.set_nodelay(true);
    let reader = sock.try_clone().expect("clone a TcpStream");
    let (tx, rx) = mpsc::channel::<Result<Message, String>>();
    let reading = std::thread::spawn(move || read_frames(reader, tx));
    let mut chunks = Rng::new(stream.chunk_seed);
    let mut pending = Vec::new();
    let mut expected = 0usize;
    let deadline = Instant::now() + STREAM_TIMEOUT;
    let mut eof = false;
    let collect_until = |want: usize, out: &mut Outcome, eof: &mut bool, wait: bool| {
        while !*eof && (out.answers.len() < want || wait) {
            let left = deadline.saturating_duration_since(Instant::now());
            let left = if wait && out.answers.len() >= want { left.min(Duration::from_millis(500)) } else { left };
            match rx.recv_timeout(left) {
                Ok(Ok(m)) => {
                    let a = match Answer::from_message(&m) {
                        Ok(a) => a,
                        Err(e) => {
                            out.problem = Some(e);
                            continue;
                        }
                    };
                    if m.header.message_type() == MessageType::Request {
                        let mut a = a;
                        a.seq = 0;
                        out.pushes.push(a);
                    } else if out.answers.insert(a.seq, a).is_some() {
                        out.problem = Some(format!("seq {} answered twice", m.header.seq()));
                    }
                }
                Ok(Err(e)) => {
                    out.problem = Some(e);
                    *eof = true;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => *eof = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !(wait && out.answers.len() >= want) {
                        out.problem = Some(format!("timed out with {} of {want} answers", out.answers.len()));
                    }
                    return;
                }
            }
        }
    };
    let mut write_pending = |pending: &mut Vec<u8>, sock: &mut TcpStream| -> std::io::Result<()> {
        let mut at = 0;
        while at < pending.len() {
            let n = match chunks.below(5) {
                0 => 1,
                1 => 1 + chunks.below(16),
                2 => 1 + chunks.below(512),
                3 => 1 + chunks.below(4096),
                _ => pending.len(),
            }
            .min(pending.len() - at);
            sock.write_all(&pending[at..at + n])?;
            at += n;
        }
        pending.clear();
        Ok(())
    };
    for step in &stream.steps {
        match step {
            Step::Send(m) => {
                m.encode(&Default::default(), &mut pending).expect("encode a generated frame");
                if !m.header.is_oneway() || m.header.is_heartbeat() {
                    expected += 1;
                }
            }
            Step::Barrier => {
                if write_pending(&mut pending, &mut sock).is_err() {
                    break;
                }
                collect_until(expected, &mut out, &mut eof, false);
            }
        }
    }
    let _ = write_pending(&mut pending, &mut sock);
    // After an auth failure, wait for the server's close too.
    collect_until(expected, &mut out, &mut eof, stream.ends_in_auth_failure);
    out.closed = eof;
    let _ = sock.shutdown(Shutdown::Both);
    let _ = reading.join();
    out.pushes.sort_by(|a, b| {
        (&a.path, &a.method, &a.metadata, &a.payload).cmp(&(&b.path, &b.method, &b.metadata, &b.payload))
    });
    out
}

fn read_frames(mut sock: TcpStream, tx: mpsc::Sender<Result<Message, String>>) {
    let dec = FrameDecoder::new(DecoderConfig::default());
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        loop {
            match dec.decode_raw(&mut buf) {
                Ok(Some(m)) => {
                    if tx.send(Ok(m)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(format!("bad frame from the server: {e}")));
                    return;
                }
            }
        }
        match sock.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Tallies of one comparison run.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests sent to the Rust servers (each also sent to the Go server).
    pub requests: usize,
    /// Answers (responses, heartbeat echoes) compared.
    pub answers_compared: usize,
    /// Pushes compared.
    pub pushes_compared: usize,
    /// Answers identical without any allowance.
    pub identical: usize,
    /// How often each documented difference was needed.
    pub documented: BTreeMap<&'static str, usize>,
    /// Everything else: undocumented differences (must be empty).
    pub undocumented: Vec<String>,
}

impl Report {
    /// Add another report's numbers.
    pub fn merge(&mut self, o: Report) {
        self.requests += o.requests;
        self.answers_compared += o.answers_compared;
        self.pushes_compared += o.pushes_compared;
        self.identical += o.identical;
        for (k, v) in o.documented {
            *self.documented.entry(k).or_default() += v;
        }
        self.undocumented.extend(o.undocumented);
    }
}

/// Error texts the Rust codecs produce (serde_json, rmp-serde, prost, and the typed
/// handlers' refusals of a serialize type they have no codec for).
const RUST_CODEC_TEXTS: &[&str] = &[
    "json: ",
    "msgpack decode: ",
    "protobuf decode: ",
    "serialize type None carries raw bytes",
    "serialize type Protobuf needs a prost::Message",
    "unsupported serialize type Thrift",
];

/// Error texts of the services and the framework, which must match byte for byte.
const CONTRACT_TEXTS: &[&str] =
    &["rpcx: ", "intentional error", "push: ", "auth failed", "slow: ", "can not find codec"];

fn is_codec_text(go: &[u8], rust: &[u8]) -> bool {
    RUST_CODEC_TEXTS.iter().any(|p| rust.starts_with(p.as_bytes()))
        && !CONTRACT_TEXTS.iter().any(|p| go.starts_with(p.as_bytes()))
}

/// Whether two MsgPack payloads hold the same values (integer widths aside).
fn same_msgpack_values(a: &[u8], b: &[u8]) -> bool {
    type V = BTreeMap<String, i64>;
    match (rmp_decode::<V>(a), rmp_decode::<V>(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn rmp_decode<T: serde::de::DeserializeOwned>(p: &[u8]) -> Option<T> {
    rpcx_core::codec::from_payload_strict(SerializeType::MSGPACK, p).ok()
}

/// Compare one stream's outcomes: Go's (the reference) and a Rust server's.
pub fn compare(label: &str, stream: &Stream, go: &Outcome, rust: &Outcome) -> Report {
    let mut r = Report { requests: stream.requests(), ..Report::default() };
    let mut diff = |what: String| r.undocumented.push(format!("{label}: {what}"));
    if let Some(p) = &go.problem {
        diff(format!("go side: {p}"));
    }
    if let Some(p) = &rust.problem {
        diff(format!("rust side: {p}"));
    }
    if go.closed != rust.closed {
        diff(format!("connection closed: go {} rust {}", go.closed, rust.closed));
    }
    let seqs: std::collections::BTreeSet<u64> = go.answers.keys().chain(rust.answers.keys()).copied().collect();
    let request = |seq: u64| {
        stream.steps.iter().find_map(|s| match s {
            Step::Send(m) if m.header.seq() == seq => Some(m),
            _ => None,
        })
    };
    for seq in seqs {
        let what = request(seq).map_or_else(String::new, |m| {
            format!(
                "{}.{} {:?} {}",
                m.service_path.escape_ascii(),
                m.service_method.escape_ascii(),
                m.header.serialize_type(),
                m.payload.escape_ascii()
            )
        });
        let (g, s) = match (go.answers.get(&seq), rust.answers.get(&seq)) {
            (Some(g), Some(s)) => (g, s),
            (g, s) => {
                diff(format!("seq {seq} [{what}]: answered by go {} rust {}", g.is_some(), s.is_some()));
                continue;
            }
        };
        r.answers_compared += 1;
        if g == s {
            r.identical += 1;
            continue;
        }
        let (mut g, mut s) = (g.clone(), s.clone());
        let mut used = Vec::new();
        let both_errors = g.header().status() == MessageStatus::ERROR && s.header().status() == MessageStatus::ERROR;
        if both_errors && let (Some(ge), Some(se)) = (g.error().cloned(), s.error().cloned()) {
            if ge != se && is_codec_text(&ge, &se) {
                for a in [&mut g, &mut s] {
                    a.metadata.insert(Bytes::from_static(SERVICE_ERROR_KEY.as_bytes()), Bytes::from_static(b"<codec>"));
                }
                used.push("codec-error-text");
            }
            if s.payload.is_empty() && !g.payload.is_empty() {
                g.payload = Bytes::new();
                used.push("error-reply-payload");
            }
        }
        if g.payload != s.payload
            && g.header().serialize_type() == SerializeType::MSGPACK
            && same_msgpack_values(&g.payload, &s.payload)
        {
            s.payload = g.payload.clone();
            used.push("msgpack-int-width");
        }
        if g == s {
            for u in used {
                *r.documented.entry(u).or_default() += 1;
            }
        } else {
            diff(format!("seq {seq} [{what}]:\n    go   {}\n    rust {}", show(&g), show(&s)));
        }
    }
    if go.pushes.len() + rust.pushes.len() > 0 {
        r.pushes_compared += go.pushes.len();
        *r.documented.entry("push-seq").or_default() += go.pushes.len().min(rust.pushes.len());
        if go.pushes != rust.pushes {
            diff(format!("pushes differ: go {} rust {}", go.pushes.len(), rust.pushes.len()));
        }
    }
    r
}

fn show(a: &Answer) -> String {
    let md: Vec<String> =
        a.metadata.iter().map(|(k, v)| format!("{}={}", k.escape_ascii(), v.escape_ascii())).collect();
    format!(
        "flags {:02x?} {}.{} md {{{}}} payload {}",
        a.flags,
        a.path.escape_ascii(),
        a.method.escape_ascii(),
        md.join(", "),
        a.payload.escape_ascii()
    )
}

/// Most pushes a generated `Push.Me` asks for (far below the contract's bound).
pub const GENERATED_MAX_PUSHES: i64 = 3;
const _: () = assert!(GENERATED_MAX_PUSHES <= MAX_PUSHES);

/// Run `requests` generated requests from `seed` against the Go server and a Rust
/// server of every runtime (each with and without auth) and compare every answer.
pub fn differential(seed: u64, requests: usize) -> Report {
    use crate::{GoServer, Runtime, RustServer};
    let streams = generate(seed, requests);
    let go = [GoServer::tcp(None), GoServer::tcp(Some(TOKEN))];
    let mut report = Report::default();
    for rt in [Runtime::Tokio, Runtime::Smol, Runtime::Std] {
        let rust = [RustServer::tcp_on(rt, None), RustServer::tcp_on(rt, Some(TOKEN))];
        for (i, stream) in streams.iter().enumerate() {
            let k = usize::from(stream.auth);
            let g = run_stream(go[k].addr(), stream);
            let s = run_stream(rust[k].addr(), stream);
            report.merge(compare(&format!("seed {seed} stream {i} {rt:?}"), stream, &g, &s));
        }
    }
    report
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} requests sent to Rust servers (each also to Go), {} answers and {} pushes compared: {} identical",
            self.requests, self.answers_compared, self.pushes_compared, self.identical
        )?;
        for (name, why) in DOCUMENTED {
            writeln!(f, "  documented {name}: {} ({why})", self.documented.get(name).copied().unwrap_or(0))?;
        }
        writeln!(f, "  undocumented differences: {}", self.undocumented.len())?;
        for d in self.undocumented.iter().take(40) {
            writeln!(f, "    {d}")?;
        }
        Ok(())
    }
}
