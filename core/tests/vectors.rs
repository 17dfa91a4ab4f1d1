//! Every byte-level vector produced by the real Go encoder (fixtures/vectors.txt):
//! our encoder must produce the same bytes, and our decoder must read them.

use bytes::{Bytes, BytesMut};
use rpcx_core::codec;
use rpcx_core::wire::{CompressType, EncoderConfig, FrameDecoder, Message, MessageStatus, MessageType, SerializeType};

fn vector(name: &str) -> Vec<u8> {
    let text = include_str!("fixtures/vectors.txt");
    let line =
        text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no vector {name}"));
    hex::decode(line.split_whitespace().nth(1).unwrap()).unwrap()
}

fn encode(m: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&EncoderConfig::default(), &mut out).unwrap();
    out
}

fn decode(bytes: &[u8]) -> Message {
    let mut buf = BytesMut::from(bytes);
    let m = FrameDecoder::default().decode(&mut buf).unwrap().expect("whole frame");
    assert!(buf.is_empty(), "decoder consumed exactly one frame");
    m
}

/// Decode, then encode what was decoded: the same bytes come back.
fn round_trips(name: &str) -> Message {
    let v = vector(name);
    let m = decode(&v);
    assert_eq!(hex::encode(encode(&m)), hex::encode(&v), "{name} re-encodes identically");
    m
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

#[test]
fn v1_go_test_message() {
    let mut m = Message::request(SerializeType::JSON, 1234567890, "Arith", "Add");
    m.metadata.insert("__ID", "6ba7b810-9dad-11d1-80b4-00c04fd430c9");
    m.payload = Bytes::from_static(b"{\n\t\t\"A\": 1,\n\t\t\"B\": 2,\n\t}\n\t");
    assert_eq!(hex::encode(encode(&m)), hex::encode(vector("V1")));
    assert_eq!(round_trips("V1"), m);
}

#[test]
fn v2_default_go_client_request() {
    let mut m = Message::request(SerializeType::MSGPACK, 0, "Arith", "Mul");
    m.payload = codec::to_payload(SerializeType::MSGPACK, &Args { A: 10, B: 20 }).unwrap().into();
    assert_eq!(hex::encode(encode(&m)), hex::encode(vector("V2")));
    let d = round_trips("V2");
    assert_eq!(codec::from_payload::<Args>(d.header.serialize_type(), &d.payload).unwrap(), Args { A: 10, B: 20 });
}

#[test]
fn v3_response_echoes_request_header() {
    let req = decode(&vector("V2"));
    let mut resp = req.clone();
    resp.header.set_message_type(MessageType::Response);
    resp.payload = codec::to_payload(SerializeType::MSGPACK, &Reply { C: 200 }).unwrap().into();
    assert_eq!(hex::encode(encode(&resp)), hex::encode(vector("V3")));
    let d = round_trips("V3");
    assert_eq!(d.header.message_type(), MessageType::Response);
    assert_eq!(codec::from_payload::<Reply>(SerializeType::MSGPACK, &d.payload).unwrap(), Reply { C: 200 });
}

#[test]
fn v4_error_response() {
    let req = round_trips("V4a");
    assert_eq!(req.payload.as_ref(), [0x80]);
    let mut resp = req.clone();
    resp.header.set_message_type(MessageType::Response);
    resp.header.set_status(MessageStatus::ERROR);
    resp.payload = Bytes::new();
    resp.metadata.insert("__rpcx_error__", "rpcx: can't find method Foo");
    assert_eq!(hex::encode(encode(&resp)), hex::encode(vector("V4b")));
    let d = round_trips("V4b");
    assert_eq!(d.header.status(), MessageStatus::ERROR);
    assert_eq!(d.error_text().as_deref(), Some("rpcx: can't find method Foo"));
}

#[test]
fn v5_heartbeat_and_reply() {
    let hb = round_trips("V5a");
    assert!(hb.header.is_heartbeat());
    assert!(hb.service_path.is_empty() && hb.service_method.is_empty());
    assert_eq!(hb.payload.len(), 9);
    let mut reply = hb.clone();
    reply.header.set_message_type(MessageType::Response);
    assert_eq!(hex::encode(encode(&reply)), hex::encode(vector("V5b")));
    round_trips("V5b");
}

#[test]
fn v6_oneway_with_auth() {
    let mut m = Message::request(SerializeType::JSON, 42, "Echo", "Say");
    m.header.set_oneway(true);
    m.metadata.insert("__AUTH", "bearer tGzv3JOkF0XG5Qx2TlKWIA");
    m.payload = Bytes::from_static(b"\"hi\"");
    assert_eq!(hex::encode(encode(&m)), hex::encode(vector("V6")));
    let d = round_trips("V6");
    assert!(d.header.is_oneway());
    assert_eq!(d.metadata.get_str("__AUTH").unwrap(), Some("bearer tGzv3JOkF0XG5Qx2TlKWIA"));
}

#[test]
fn v7_server_push() {
    let mut m = Message::request(SerializeType::NONE, 1, "notify", "push");
    m.header.set_oneway(true);
    m.payload = Bytes::from_static(b"hello");
    assert_eq!(hex::encode(encode(&m)), hex::encode(vector("V7")));
    assert!(round_trips("V7").header.is_server_push());
}

#[test]
fn v8_go_gzip_decodes_to_2000_a() {
    let v = vector("V8");
    let m = decode(&v);
    assert_eq!(m.header.compress_type(), CompressType::GZIP);
    assert_eq!(m.payload.len(), 2000);
    assert!(m.payload.iter().all(|&b| b == b'A'));
    // Raw decoding keeps Go's 44 gzip bytes and re-encodes to the exact vector.
    let raw = FrameDecoder::default().decode_raw(&mut BytesMut::from(&v[..])).unwrap().unwrap();
    assert_eq!(raw.payload.len(), 44);
    let mut out = Vec::new();
    raw.encode_raw(usize::MAX, &mut out).unwrap();
    assert_eq!(out, v);
    // Our own gzip differs in bytes but decodes to the same message.
    let ours = encode(&m);
    assert_eq!(ours[2], 0x04, "compress flag kept");
    assert_eq!(decode(&ours), m);
}

#[test]
fn v9_protobuf_max_seq_server_timeout() {
    let mut m = Message::request(SerializeType::PROTOBUF, u64::MAX, "S", "M");
    m.metadata.insert("__ServerTimeout", "4999");
    assert_eq!(hex::encode(encode(&m)), hex::encode(vector("V9")));
    assert_eq!(round_trips("V9").header.seq(), u64::MAX);
}

#[test]
fn v10_minimal_frame() {
    assert_eq!(encode(&Message::default()), vector("V10"));
    assert_eq!(round_trips("V10"), Message::default());
}

#[test]
fn v11_json_round_trip() {
    let mut req = Message::request(SerializeType::JSON, 1234567890, "Arith", "Mul");
    req.payload = codec::to_payload(SerializeType::JSON, &Args { A: 10, B: 20 }).unwrap().into();
    assert_eq!(hex::encode(encode(&req)), hex::encode(vector("V11req")));
    let mut resp = round_trips("V11req");
    resp.header.set_message_type(MessageType::Response);
    resp.payload = codec::to_payload(SerializeType::JSON, &Reply { C: 200 }).unwrap().into();
    assert_eq!(hex::encode(encode(&resp)), hex::encode(vector("V11resp")));
    round_trips("V11resp");
}

#[test]
fn v12_metadata_either_order_and_empty() {
    let mut m = Message::request(SerializeType::MSGPACK, 5, "Arith", "Mul");
    m.payload = codec::to_payload(SerializeType::MSGPACK, &Args { A: 10, B: 20 }).unwrap().into();
    m.metadata.insert("a", "1");
    m.metadata.insert("bb", "22");
    assert_eq!(hex::encode(encode(&m)), hex::encode(vector("V12a")));
    let (a, b) = (round_trips("V12a"), round_trips("V12b"));
    for d in [&a, &b] {
        assert_eq!(d.metadata.get_str("a").unwrap(), Some("1"));
        assert_eq!(d.metadata.get_str("bb").unwrap(), Some("22"));
        assert_eq!(d.metadata.len(), 2);
    }

    let mut e = Message::request(SerializeType::NONE, 6, "S", "M");
    e.metadata.insert("", "");
    assert_eq!(hex::encode(encode(&e)), hex::encode(vector("V12empty_pair")));
    assert_eq!(round_trips("V12empty_pair").metadata.get("").map(|v| v.len()), Some(0));

    let empty = Message::request(SerializeType::NONE, 6, "S", "M");
    assert_eq!(hex::encode(encode(&empty)), hex::encode(vector("V12empty_map")));
    assert!(round_trips("V12empty_map").metadata.is_empty());
}
