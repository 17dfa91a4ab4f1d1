//! Describing frames: the text and JSON-lines forms `decode`, `dump` and `call -v`
//! print, and a stream reader that reports where in the input each frame starts.

use rpcx_tokio::core::wire::{DecodeError, DecoderConfig, MessageType, StreamDecoder};
use rpcx_tokio::{CompressType, Message, SerializeType};
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

pub(crate) fn serialize_name(st: SerializeType) -> String {
    match st.bits() {
        0 => "none".into(),
        1 => "json".into(),
        2 => "protobuf".into(),
        3 => "msgpack".into(),
        4 => "thrift".into(),
        n => format!("serialize({n})"),
    }
}

pub(crate) fn compress_name(ct: CompressType) -> String {
    match ct.bits() {
        0 => "none".into(),
        1 => "gzip".into(),
        n => format!("compress({n})"),
    }
}

/// A payload as a JSON value: JSON parsed, MsgPack converted, text as a string, other
/// bytes as hex. Returns the value and how it was read.
pub(crate) fn payload_value(st: SerializeType, payload: &[u8]) -> (Value, &'static str) {
    if payload.is_empty() {
        return (Value::String(String::new()), "empty");
    }
    if st == SerializeType::JSON {
        if let Ok(v) = serde_json::from_slice::<Value>(payload) {
            return (v, "json");
        }
    } else if st == SerializeType::MSGPACK {
        if let Ok(v) = rmp_serde::from_slice::<Value>(payload) {
            return (v, "msgpack");
        }
    }
    match std::str::from_utf8(payload) {
        Ok(s) if st != SerializeType::PROTOBUF && !s.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            (Value::String(s.to_owned()), "text")
        }
        _ => (Value::String(hex::encode(payload)), "hex"),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Most characters of a payload a text line shows.
const TEXT_PAYLOAD_CHARS: usize = 256;

/// One decoded frame, ready to print.
#[derive(Debug)]
pub(crate) struct FrameView {
    /// Byte offset of the frame in its stream.
    pub(crate) offset: u64,
    /// Whole frame length on the wire.
    pub(crate) len: usize,
    /// The message, payload decompressed when that worked.
    pub(crate) msg: Message,
    /// Payload length on the wire (compressed).
    pub(crate) wire_payload_len: usize,
    /// Why the payload could not be decompressed, if it could not.
    pub(crate) payload_error: Option<String>,
    /// A protobuf schema to read protobuf payloads with.
    pub(crate) schema: Option<prost_reflect::DescriptorPool>,
}

impl FrameView {
    /// The payload as JSON: through the schema's rpc `path.method` (its input for a
    /// request, its output for a response) for protobuf, else [`payload_value`].
    fn payload(&self) -> (Value, &'static str) {
        let h = &self.msg.header;
        if let (Some(pool), true) = (&self.schema, h.serialize_type() == SerializeType::PROTOBUF) {
            let (path, method) = (lossy(&self.msg.service_path), lossy(&self.msg.service_method));
            let rpc = pool
                .services()
                .filter(|s| s.full_name() == path || s.name() == path)
                .find_map(|s| s.methods().find(|m| m.name() == method));
            if let Some(m) = rpc {
                let desc = if h.message_type() == MessageType::Response { m.output() } else { m.input() };
                if let Ok(v) = crate::proto::to_json(&desc, &self.msg.payload) {
                    return (v, "protobuf");
                }
            }
        }
        payload_value(h.serialize_type(), &self.msg.payload)
    }

    pub(crate) fn to_json(&self, extra: &[(&str, Value)]) -> Value {
        let h = &self.msg.header;
        let mut o = Map::new();
        for (k, v) in extra {
            o.insert((*k).to_owned(), v.clone());
        }
        o.insert("offset".into(), json!(self.offset));
        o.insert("len".into(), json!(self.len));
        let ty = if h.message_type() == MessageType::Response { "response" } else { "request" };
        o.insert("type".into(), json!(ty));
        o.insert("version".into(), json!(h.version()));
        o.insert("heartbeat".into(), json!(h.is_heartbeat()));
        o.insert("oneway".into(), json!(h.is_oneway()));
        o.insert("compress".into(), json!(compress_name(h.compress_type())));
        o.insert(
            "status".into(),
            json!(if h.status().bits() == 0 {
                "normal".to_owned()
            } else if h.status().bits() == 1 {
                "error".to_owned()
            } else {
                format!("status({})", h.status().bits())
            }),
        );
        o.insert("serialize".into(), json!(serialize_name(h.serialize_type())));
        o.insert("seq".into(), json!(h.seq()));
        o.insert("path".into(), json!(lossy(&self.msg.service_path)));
        o.insert("method".into(), json!(lossy(&self.msg.service_method)));
        let md: Map<String, Value> =
            self.msg.metadata.iter().map(|(k, v)| (lossy(k), Value::String(lossy(v)))).collect();
        o.insert("metadata".into(), Value::Object(md));
        o.insert("payload_len".into(), json!(self.msg.payload.len()));
        o.insert("wire_payload_len".into(), json!(self.wire_payload_len));
        match &self.payload_error {
            Some(e) => {
                o.insert("payload_error".into(), json!(e));
                o.insert("payload".into(), json!(hex::encode(&self.msg.payload)));
                o.insert("payload_encoding".into(), json!("hex"));
            }
            None => {
                let (v, how) = self.payload();
                o.insert("payload".into(), v);
                o.insert("payload_encoding".into(), json!(how));
            }
        }
        Value::Object(o)
    }

    pub(crate) fn to_text(&self, label: &str) -> String {
        let h = &self.msg.header;
        let mut s = String::new();
        let ty = if h.message_type() == MessageType::Response { "response" } else { "request" };
        let _ = write!(s, "{label}@{} {ty} seq={} len={}", self.offset, h.seq(), self.len);
        let _ = write!(
            s,
            " serialize={} compress={}",
            serialize_name(h.serialize_type()),
            compress_name(h.compress_type())
        );
        match h.status().bits() {
            0 => {}
            1 => s.push_str(" status=error"),
            n => {
                let _ = write!(s, " status={n}");
            }
        }
        if h.is_oneway() {
            s.push_str(" oneway");
        }
        if h.is_heartbeat() {
            s.push_str(" heartbeat");
        }
        if h.version() != 0 {
            let _ = write!(s, " version={}", h.version());
        }
        let _ = write!(s, "\n  {}.{}", lossy(&self.msg.service_path), lossy(&self.msg.service_method));
        for (k, v) in self.msg.metadata.iter() {
            let _ = write!(s, "\n  meta {}={}", lossy(k), lossy(v));
        }
        let n = self.msg.payload.len();
        match &self.payload_error {
            Some(e) => {
                let _ = write!(s, "\n  payload {} bytes on the wire, not decompressed: {e}", self.wire_payload_len);
            }
            None => {
                let (v, how) = self.payload();
                let mut shown = match v {
                    Value::String(t) => t,
                    other => other.to_string(),
                };
                // Text lines stay readable; --json has the whole payload.
                if let Some((cut, _)) = shown.char_indices().nth(TEXT_PAYLOAD_CHARS) {
                    let more = shown.len() - cut;
                    shown.truncate(cut);
                    let _ = write!(shown, "... ({more} more bytes of text; --json shows all)");
                }
                let wire = if self.wire_payload_len != n {
                    format!(", {} on the wire", self.wire_payload_len)
                } else {
                    String::new()
                };
                let _ = write!(s, "\n  payload {n} bytes{wire} ({how}): {shown}");
            }
        }
        s
    }
}

/// Frames out of a byte stream fed in any chunking, each with its offset; the payload
/// inflated under the decoder's limits (a bad payload is reported on its frame, the
/// stream goes on).
pub(crate) struct FrameReader {
    decoder: StreamDecoder,
    fed: u64,
    schema: Option<prost_reflect::DescriptorPool>,
}

/// A stream that is not rpcx frames, and where.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub(crate) offset: u64,
    pub(crate) error: DecodeError,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed frame at byte offset {}: {}", self.offset, self.error)
    }
}

impl FrameReader {
    /// A reader; protobuf payloads are shown through `schema` when it has their rpc.
    pub(crate) fn new(schema: Option<prost_reflect::DescriptorPool>) -> Self {
        Self { decoder: StreamDecoder::new(DecoderConfig::default()), fed: 0, schema }
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.decoder.feed(bytes);
        self.fed += bytes.len() as u64;
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<FrameView>, Malformed> {
        let offset = self.fed - self.decoder.buffered() as u64;
        let before = self.decoder.buffered();
        let msg = match self.decoder.next_raw() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(error) => return Err(Malformed { offset, error }),
        };
        let len = before - self.decoder.buffered();
        let wire_payload_len = msg.payload.len();
        let mut view =
            FrameView { offset, len, msg, wire_payload_len, payload_error: None, schema: self.schema.clone() };
        let ct = view.msg.header.compress_type();
        if ct != CompressType::NONE {
            let cfg = self.decoder.config();
            let payload = std::mem::take(&mut view.msg.payload);
            match cfg.compressors.decompress(ct, payload.clone(), cfg.max_decompressed_len) {
                Ok(p) => view.msg.payload = p,
                Err(e) => {
                    view.msg.payload = payload;
                    view.payload_error = Some(e.to_string());
                }
            }
        }
        Ok(Some(view))
    }

    /// The input ended: an error if it stopped inside a frame.
    pub(crate) fn finish(&self) -> Result<(), Malformed> {
        let offset = self.fed - self.decoder.buffered() as u64;
        self.decoder.finish().map_err(|error| Malformed { offset, error })
    }
}
