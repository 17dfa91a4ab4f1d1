//! The X-RPCX HTTP gateway's mapping, as Go's `server/gateway.go` and
//! `server/converter.go` do it: HTTP request headers to an rpcx request, an rpcx
//! outcome to the HTTP response.

use super::h1::{Head, Response};
use crate::query;
use crate::wire::{AUTH_KEY, Message, Metadata, SerializeType};
use bytes::Bytes;

// Header names as Go's `net/http` writes them (canonicalised: `X-Rpcx-Messageid`).
pub(crate) const VERSION: &str = "X-Rpcx-Version";
pub(crate) const MESSAGE_ID: &str = "X-Rpcx-Messageid";
pub(crate) const SERVICE_PATH: &str = "X-Rpcx-Servicepath";
pub(crate) const SERVICE_METHOD: &str = "X-Rpcx-Servicemethod";
pub(crate) const SERIALIZE_TYPE: &str = "X-Rpcx-Serializetype";
pub(crate) const META: &str = "X-Rpcx-Meta";
pub(crate) const STATUS_TYPE: &str = "X-Rpcx-Messagestatustype";
pub(crate) const ERROR_MESSAGE: &str = "X-Rpcx-Errormessage";

/// The response headers known before the call: what Go echoes on every outcome.
#[derive(Debug, Clone, Default)]
pub(crate) struct Echo {
    headers: Vec<(&'static str, Bytes)>,
    pub(crate) serialize: Option<SerializeType>,
}

impl Echo {
    /// The response for this echo, with `status`.
    fn response(&self, status: u16) -> Response {
        let mut r = Response::new(status);
        r.headers.extend(self.headers.iter().cloned());
        r
    }

    /// The error response Go writes: the echo, `X-Rpcx-Messagestatustype: Error` and
    /// the text.
    pub(crate) fn error(&self, status: u16, text: &[u8]) -> Response {
        self.response(status).header(STATUS_TYPE, "Error").header(ERROR_MESSAGE, Bytes::copy_from_slice(text))
    }

    /// A successful call: 200, the response metadata as `X-Rpcx-Meta` (sorted URL
    /// query), the reply as the body (none for oneway).
    pub(crate) fn success(&self, metadata: &Metadata, payload: Bytes, oneway: bool) -> Response {
        let meta = query::encode_sorted(metadata.iter().map(|(k, v)| (&k[..], &v[..])));
        let mut r = self.response(200).header(META, meta);
        if !oneway && !payload.is_empty() {
            r = r.header("Content-Type", content_type(self.serialize));
            r.body = payload;
        }
        r
    }
}

/// The Content-Type of a reply. (Go leaves it to content sniffing, which calls JSON
/// `text/plain`; naming the serialization is what HTTP clients can use.)
fn content_type(st: Option<SerializeType>) -> &'static str {
    match st {
        Some(SerializeType::JSON) => "application/json",
        Some(SerializeType::PROTOBUF) => "application/x-protobuf",
        Some(SerializeType::MSGPACK) => "application/msgpack",
        Some(SerializeType::THRIFT) => "application/vnd.apache.thrift.binary",
        _ => "application/octet-stream",
    }
}

/// Go's `strconv.Atoi` error texts.
fn atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {s:?}: invalid syntax"));
    }
    s.parse().map_err(|_| format!("strconv.Atoi: parsing {s:?}: value out of range"))
}

/// Go's `strconv.ParseUint(s, 10, 64)` error texts.
fn parse_uint(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    s.parse().map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

fn header_text(head: &Head, name: &str) -> String {
    head.get(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

/// Map a gateway request to an rpcx request, or to the error response Go gives
/// (status 200, the error in `X-Rpcx-Errormessage`). `Ok` carries the echo for the
/// response. At most `max_pairs` metadata pairs are taken (the decoder's limit).
pub(crate) fn to_message(head: &Head, body: Bytes, max_pairs: usize) -> Result<(Message, Echo), Response> {
    // The service path: the header, else the URL path without its leading `/`.
    let path: Bytes = match head.get("X-RPCX-ServicePath").filter(|v| !v.is_empty()) {
        Some(v) => v.clone(),
        None => {
            let p = head.path();
            Bytes::from(p.strip_prefix(b"/").map(<[u8]>::to_vec).unwrap_or(p))
        }
    };
    let method = head.get("X-RPCX-ServiceMethod").cloned().unwrap_or_default();
    let serialize_text = header_text(head, "X-RPCX-SerializeType");
    let converted = convert(head, &serialize_text, body, max_pairs);

    let mut echo = Echo::default();
    echo.headers.push((VERSION, head.get("X-RPCX-Version").cloned().unwrap_or_default()));
    echo.headers.push((MESSAGE_ID, head.get("X-RPCX-MessageID").cloned().unwrap_or_default()));
    // Go's order of checks, and its quirk: once an error is known, the later headers
    // are still echoed (possibly empty).
    let mut err = converted.as_ref().err().cloned();
    if err.is_none() && path.is_empty() {
        err = Some("empty servicepath".into());
    } else {
        echo.headers.push((SERVICE_PATH, path.clone()));
    }
    if err.is_none() && method.is_empty() {
        err = Some("empty servicemethod".into());
    } else {
        echo.headers.push((SERVICE_METHOD, method.clone()));
    }
    if err.is_none() && serialize_text.is_empty() {
        err = Some("empty serialized type".into());
    } else {
        echo.headers.push((SERIALIZE_TYPE, Bytes::from(serialize_text)));
    }
    if let Some(text) = err {
        return Err(echo.error(200, text.as_bytes()));
    }
    let mut msg = converted.expect("checked above");
    msg.service_path = path;
    msg.service_method = method;
    echo.serialize = Some(msg.header.serialize_type());
    Ok((msg, echo))
}

/// Go's `HTTPRequest2RpcxRequest`: the headers into a request message.
fn convert(head: &Head, serialize: &str, body: Bytes, max_pairs: usize) -> Result<Message, String> {
    let mut msg = Message::request(SerializeType::NONE, 0, Bytes::new(), Bytes::new());
    let seq = header_text(head, "X-RPCX-MessageID");
    if !seq.is_empty() {
        msg.header.set_seq(parse_uint(&seq)?);
    }
    if head.get("X-RPCX-Heartbeat").is_some_and(|v| !v.is_empty()) {
        msg.header.set_heartbeat(true);
    }
    if head.get("X-RPCX-Oneway").is_some_and(|v| !v.is_empty()) {
        msg.header.set_oneway(true);
    }
    if !serialize.is_empty() {
        // Go keeps the low four bits of whatever number was given.
        let bits = (atoi(serialize)? as u8) & 0x0f;
        msg.header.set_serialize_type(SerializeType::from_bits(bits).expect("four bits"));
    }
    let compress = header_text(head, "X-RPCX-CompressType");
    if !compress.is_empty() {
        // Parsed and checked as Go does, but without effect: the body is taken as it
        // is and the reply is never compressed.
        atoi(&compress)?;
    }
    let meta = header_text(head, "X-RPCX-Meta");
    if !meta.is_empty() {
        let (pairs, err) = query::parse(&meta);
        if let Some(e) = err {
            return Err(e);
        }
        for (k, v) in pairs {
            // The first value of each key, as Go's `url.Values.Get`.
            if !msg.metadata.contains_key(&k) {
                if msg.metadata.len() >= max_pairs {
                    return Err(format!("more than {max_pairs} metadata pairs"));
                }
                msg.metadata.insert(k, v);
            }
        }
    }
    if let Some(auth) = head.get("Authorization").filter(|v| !v.is_empty()) {
        msg.metadata.insert(AUTH_KEY, auth.clone());
    }
    msg.payload = body;
    Ok(msg)
}
