//! Payload serialization chosen by [`SerializeType`].
//!
//! | type | here |
//! |---|---|
//! | `NONE` (0) | raw bytes: use the payload [`bytes::Bytes`] directly; serde values are refused |
//! | `JSON` (1) | `serde_json` |
//! | `PROTOBUF` (2) | `prost` ([`to_proto`], [`from_proto`]; feature `protobuf`, on by default) |
//! | `MSGPACK` (3) | `rmp-serde`, structs as maps keyed by field name (what Go's vmihailenco/msgpack writes); decoding accepts any integer width |
//! | `THRIFT` (4) | not supported yet: [`CodecError::Unsupported`] |
//!
//! Go field names are capitalised; give Rust fields the same names (or
//! `#[serde(rename = "A")]`) to interoperate: `Args{A:10,B:20}` in MsgPack is
//! `82 a1 41 0a a1 42 14`.
//!
//! # Decoding as Go does
//!
//! [`from_payload`], [`decode_reply`] and [`from_proto`] (and so every typed handler and
//! typed call) decode with [`Decoding::Go`]: what a Go rpcx server accepts is accepted,
//! with the values Go would see. For serde types:
//!
//! * a field missing from the payload is its zero value (`0`, `""`, `false`, empty
//!   `Vec`/map, `None`, a struct of zeros) — no `#[serde(default)]` needed; a
//!   `#[serde(default = ...)]` function is not consulted (Go has no defaults);
//! * `null` (JSON) / `nil` (MsgPack) is the zero value: a field, a nested struct, the
//!   whole payload;
//! * a key repeated in one object: the last one wins;
//! * JSON keys match field names exactly, else case-insensitively (`{"a":1}` fills `A`);
//!   MsgPack keys match exactly and must be strings (a map with integer keys is an error);
//! * bytes after the JSON value (or the MsgPack value) are ignored;
//! * MsgPack integers wrap into the field's integer type (a `uint64` above `i64::MAX`
//!   into an `i64`), as Go's msgpack does; JSON integers must fit, as in Go;
//! * a JSON array is never a struct; a MsgPack array is a struct when empty (zero) or
//!   exactly as long as the field list (positional), as in Go;
//! * unknown fields are skipped (unless the type says `#[serde(deny_unknown_fields)]`).
//!
//! What a user's own types need: plain structs with the Go field names (or
//! `#[serde(rename)]`); fields whose types deserialize from a zero (numbers, strings,
//! bools, `Option`, `Vec`, maps, nested structs). An enum or a type with a custom
//! `Deserialize` that rejects the zero shape makes a missing field an error. Go mode
//! applies to structs the derived impl asks for with `deserialize_struct`; a
//! `#[serde(flatten)]` part is decoded with serde's defaults, and a type with a
//! `#[serde(alias)]` field fails in Go mode (serde lists the alias as one more field
//! name, both get a value: a duplicate); decode such types in strict mode. Where Go mode still
//! differs from Go: an overridden duplicate with the wrong type is not an error (Go
//! reports it), and JSON strings must be valid UTF-8 (Go replaces bad bytes).
//!
//! [`Decoding::Strict`] ([`from_payload_strict`], [`from_proto_strict`],
//! [`Service::strict_decoding`](crate::service::Service::strict_decoding)) is plain
//! serde_json / rmp-serde / prost: missing fields and duplicates are errors, keys are
//! case-sensitive, trailing JSON is an error.
//!
//! Protobuf in Go mode follows protobuf-go (what `protoc-gen-go` types do): a field
//! whose wire type does not match its declaration (also a packed encoding of a
//! singular field) is kept as an unknown field, so the field reads as zero; prost
//! alone rejects the message. This is done for the message's own fields; inside a
//! nested message such a field makes the whole nested field unknown. (gogo-generated
//! `Unmarshal` methods reject a wrong wire type; protobuf-go is the common generator.)

mod gomode;

use crate::wire::SerializeType;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How payloads are decoded (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decoding {
    /// What a Go rpcx server accepts, with the values Go would see (the default).
    #[default]
    Go,
    /// serde's and prost's own rules.
    Strict,
}

/// A payload could not be serialized or deserialized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The serialize type has no codec here (Thrift, or a number rpcx does not define).
    #[error("unsupported serialize type {0:?}")]
    Unsupported(SerializeType),
    /// The payload is raw bytes (`SerializeType::NONE`), but a serde value was given.
    #[error("serialize type None carries raw bytes; pass the payload as bytes, not a serde value")]
    RawNeedsBytes,
    /// Protobuf needs a `prost::Message` type, but a serde value was given.
    #[error("serialize type Protobuf needs a prost::Message type, not a serde value")]
    ProtobufNeedsProst,
    /// JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// MsgPack encoding failed.
    #[error("msgpack encode: {0}")]
    MsgPackEncode(#[from] rmp_serde::encode::Error),
    /// MsgPack decoding failed.
    #[error("msgpack decode: {0}")]
    MsgPackDecode(#[from] rmp_serde::decode::Error),
    /// Protobuf encoding failed.
    #[cfg(feature = "protobuf")]
    #[error("protobuf encode: {0}")]
    ProtobufEncode(#[from] prost::EncodeError),
    /// Protobuf decoding failed.
    #[cfg(feature = "protobuf")]
    #[error("protobuf decode: {0}")]
    ProtobufDecode(#[from] prost::DecodeError),
}

fn serde_only(st: SerializeType) -> Result<(), CodecError> {
    match st {
        SerializeType::JSON | SerializeType::MSGPACK => Ok(()),
        SerializeType::NONE => Err(CodecError::RawNeedsBytes),
        SerializeType::PROTOBUF => Err(CodecError::ProtobufNeedsProst),
        other => Err(CodecError::Unsupported(other)),
    }
}

/// Serialize `value` with serde in the given format, appending to `out`.
pub fn write_payload<T: Serialize + ?Sized>(st: SerializeType, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    serde_only(st)?;
    if st == SerializeType::JSON {
        serde_json::to_writer(out, value)?;
    } else {
        value.serialize(&mut rmp_serde::Serializer::new(out).with_struct_map())?;
    }
    Ok(())
}

/// Serialize `value` with serde in the given format.
pub fn to_payload<T: Serialize + ?Sized>(st: SerializeType, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    write_payload(st, value, &mut out)?;
    Ok(out)
}

thread_local! {
    /// [`to_payload_bytes`]' buffer.
    static PAYLOAD_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Serialize `value` with serde in the given format, as `Bytes`: through a reused
/// per-thread buffer, so a small payload costs one allocation of its exact size (a
/// `Vec` grown while serializing, then turned into `Bytes`, costs two or more). A
/// payload over 16 KiB is handed over without a copy. A thread keeps at most 2 KiB of
/// buffer between calls (the std runtime has a thread per connection).
pub fn to_payload_bytes<T: Serialize + ?Sized>(st: SerializeType, value: &T) -> Result<bytes::Bytes, CodecError> {
    /// Above this, the buffer is given away rather than copied from.
    const COPY_BELOW: usize = 16 << 10;
    /// Above this, the buffer is freed after the call rather than kept.
    const KEEP_BELOW: usize = 2 << 10;
    PAYLOAD_SCRATCH.with(|scratch| {
        // A `Serialize` impl that serializes a payload itself finds the buffer taken.
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            return to_payload(st, value).map(bytes::Bytes::from);
        };
        buf.clear();
        let r = write_payload(st, value, &mut buf);
        let out = match r {
            Err(e) => Err(e),
            Ok(()) if buf.len() < COPY_BELOW => Ok(bytes::Bytes::copy_from_slice(&buf)),
            Ok(()) => Ok(bytes::Bytes::from(std::mem::take(&mut *buf))),
        };
        if buf.capacity() > KEEP_BELOW {
            *buf = Vec::new();
        }
        out
    })
}

/// Deserialize a serde value from a payload in the given format, as Go does
/// ([`Decoding::Go`]).
pub fn from_payload<T: DeserializeOwned>(st: SerializeType, payload: &[u8]) -> Result<T, CodecError> {
    from_payload_with(st, payload, Decoding::Go)
}

/// Deserialize a serde value with serde's own rules ([`Decoding::Strict`]).
pub fn from_payload_strict<T: DeserializeOwned>(st: SerializeType, payload: &[u8]) -> Result<T, CodecError> {
    from_payload_with(st, payload, Decoding::Strict)
}

/// Deserialize a serde value from a payload in the given format and mode.
pub fn from_payload_with<T: DeserializeOwned>(
    st: SerializeType,
    payload: &[u8],
    decoding: Decoding,
) -> Result<T, CodecError> {
    serde_only(st)?;
    Ok(match (st == SerializeType::JSON, decoding) {
        (true, Decoding::Go) => gomode::from_json(payload)?,
        (false, Decoding::Go) => gomode::from_msgpack(payload)?,
        (true, Decoding::Strict) => serde_json::from_slice(payload)?,
        (false, Decoding::Strict) => rmp_serde::from_slice(payload)?,
    })
}

/// A reply message's payload decoded by its own serialize type (as Go does), with its
/// metadata.
pub fn decode_reply<T: DeserializeOwned>(msg: crate::wire::Message) -> Result<(T, crate::wire::Metadata), CodecError> {
    decode_reply_with(msg, Decoding::Go)
}

/// [`decode_reply`] in the given decoding mode.
pub fn decode_reply_with<T: DeserializeOwned>(
    msg: crate::wire::Message,
    decoding: Decoding,
) -> Result<(T, crate::wire::Metadata), CodecError> {
    let reply = from_payload_with(msg.header.serialize_type(), &msg.payload, decoding)?;
    Ok((reply, msg.metadata))
}

/// Encode a protobuf message (`SerializeType::PROTOBUF`).
#[cfg(feature = "protobuf")]
pub fn to_proto<T: prost::Message>(value: &T) -> Vec<u8> {
    value.encode_to_vec()
}

/// Decode a protobuf message (`SerializeType::PROTOBUF`) as protobuf-go does
/// ([`Decoding::Go`]: a field with an unexpected wire type is an unknown field).
#[cfg(feature = "protobuf")]
pub fn from_proto<T: prost::Message + Default>(payload: &[u8]) -> Result<T, CodecError> {
    from_proto_with(payload, Decoding::Go)
}

/// Decode a protobuf message with prost's own rules ([`Decoding::Strict`]).
#[cfg(feature = "protobuf")]
pub fn from_proto_strict<T: prost::Message + Default>(payload: &[u8]) -> Result<T, CodecError> {
    from_proto_with(payload, Decoding::Strict)
}

/// Decode a protobuf message in the given mode.
#[cfg(feature = "protobuf")]
pub fn from_proto_with<T: prost::Message + Default>(payload: &[u8], decoding: Decoding) -> Result<T, CodecError> {
    match T::decode(payload) {
        Ok(v) => Ok(v),
        Err(e) if decoding == Decoding::Strict => Err(e.into()),
        // The slow path only for messages prost rejects.
        Err(e) => proto_fieldwise(payload).map_err(|_| e.into()),
    }
}

/// Decode field by field; a field prost rejects for its wire type alone is skipped
/// (protobuf-go keeps it as an unknown field), any other failure is an error.
#[cfg(feature = "protobuf")]
fn proto_fieldwise<T: prost::Message + Default>(payload: &[u8]) -> Result<T, prost::DecodeError> {
    use prost::encoding::{DecodeContext, decode_key, skip_field};
    let mut msg = T::default();
    let mut rest = payload;
    while !rest.is_empty() {
        let start = rest;
        let (tag, wire_type) = decode_key(&mut rest)?;
        skip_field(wire_type, tag, &mut rest, DecodeContext::default())?;
        let field = &start[..start.len() - rest.len()];
        // Try on a scratch message first, so a rejected field leaves no partial merge.
        match T::default().merge(field) {
            Ok(()) => msg.merge(field)?,
            Err(e) if e.to_string().contains(PROST_WIRE_TYPE_TEXT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(msg)
}

/// How prost describes a wire-type mismatch (pinned by a test, in case prost rewords it).
#[cfg(feature = "protobuf")]
const PROST_WIRE_TYPE_TEXT: &str = "invalid wire type: ";

/// Go's JSON key folding, for the unit tests.
#[cfg(test)]
fn gomode_fold_for_test(s: &str) -> String {
    gomode::fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[allow(non_snake_case)]
    struct Args {
        A: i64,
        B: i64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[allow(non_snake_case)]
    struct Reply {
        C: i64,
    }

    #[test]
    fn msgpack_matches_go_bytes() {
        assert_eq!(
            to_payload(SerializeType::MSGPACK, &Args { A: 10, B: 20 }).unwrap(),
            [0x82, 0xa1, 0x41, 0x0a, 0xa1, 0x42, 0x14]
        );
        assert_eq!(to_payload(SerializeType::MSGPACK, &Reply { C: 200 }).unwrap(), [0x81, 0xa1, 0x43, 0xcc, 0xc8]);
    }

    /// Serializes a payload of its own while being serialized (the scratch buffer is
    /// taken then).
    struct Reentrant(Vec<u8>);

    impl Serialize for Reentrant {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let inner = to_payload_bytes(SerializeType::MSGPACK, &self.0).map_err(serde::ser::Error::custom)?;
            s.serialize_bytes(&inner)
        }
    }

    #[test]
    fn payload_bytes_are_to_payload_bytes() {
        let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        for st in [SerializeType::MSGPACK, SerializeType::JSON] {
            for v in [vec![], vec![7u8; 3], vec![1u8; 16 << 10], big.clone(), vec![2u8; 8 << 10]] {
                assert_eq!(to_payload_bytes(st, &v).unwrap(), to_payload(st, &v).unwrap(), "{st:?} {}", v.len());
            }
            // After an 8 KiB one (copied out) the buffer is not kept at that size, and
            // results stay right.
            let kept = PAYLOAD_SCRATCH.with(|b| b.borrow().capacity());
            assert!(kept <= 2 << 10, "{st:?}: {kept} bytes of buffer kept");
            assert_eq!(
                to_payload_bytes(st, &Args { A: 1, B: 2 }).unwrap(),
                to_payload(st, &Args { A: 1, B: 2 }).unwrap()
            );
            // A small one keeps its buffer for the next call.
            assert!(PAYLOAD_SCRATCH.with(|b| b.borrow().capacity()) > 0, "{st:?}: buffer not kept");
            assert_eq!(
                to_payload_bytes(st, &Reentrant(vec![9; 5])).unwrap(),
                to_payload(st, &Reentrant(vec![9; 5])).unwrap()
            );
        }
        assert!(to_payload_bytes(SerializeType::PROTOBUF, &Args { A: 1, B: 2 }).is_err());
    }

    #[test]
    fn msgpack_decodes_any_integer_width() {
        // Go int64 fields are written with the d3 marker and 8 bytes.
        let wide = [0x81, 0xa1, 0x43, 0xd3, 0, 0, 0, 0, 0, 0, 0, 200];
        assert_eq!(from_payload::<Reply>(SerializeType::MSGPACK, &wide).unwrap(), Reply { C: 200 });
        let u16w = [0x81, 0xa1, 0x43, 0xcd, 0, 200];
        assert_eq!(from_payload::<Reply>(SerializeType::MSGPACK, &u16w).unwrap(), Reply { C: 200 });
    }

    #[test]
    fn json_matches_go_bytes() {
        assert_eq!(to_payload(SerializeType::JSON, &Args { A: 10, B: 20 }).unwrap(), br#"{"A":10,"B":20}"#);
        assert_eq!(from_payload::<Reply>(SerializeType::JSON, br#"{"C":200}"#).unwrap(), Reply { C: 200 });
    }

    #[test]
    fn unsupported_types_are_clear_errors() {
        let e = to_payload(SerializeType::THRIFT, &Args { A: 1, B: 2 }).unwrap_err();
        assert_eq!(e.to_string(), "unsupported serialize type Thrift");
        assert!(matches!(from_payload::<Args>(SerializeType::NONE, b""), Err(CodecError::RawNeedsBytes)));
        assert!(matches!(
            from_payload::<Args>(SerializeType::from_bits(9).unwrap(), b""),
            Err(CodecError::Unsupported(_))
        ));
    }

    /// Go's `struct { A int; B int }` with plain serde derives: no `#[serde(default)]`.
    #[derive(Deserialize, Debug, PartialEq)]
    #[allow(non_snake_case)]
    struct Plain {
        A: i64,
        B: i64,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[allow(non_snake_case)]
    struct Nested {
        Name: String,
        Inner: Plain,
        List: Vec<i32>,
        Opt: Option<u8>,
        Flag: bool,
        Ratio: f64,
    }

    fn json<T: DeserializeOwned>(p: &str) -> Result<T, CodecError> {
        from_payload(SerializeType::JSON, p.as_bytes())
    }

    fn mp<T: DeserializeOwned>(p: &[u8]) -> Result<T, CodecError> {
        from_payload(SerializeType::MSGPACK, p)
    }

    const fn ab(a: i64, b: i64) -> Plain {
        Plain { A: a, B: b }
    }

    #[test]
    fn go_missing_fields_are_zero() {
        assert_eq!(json::<Plain>(r#"{"A":128}"#).unwrap(), ab(128, 0));
        assert_eq!(json::<Plain>("{}").unwrap(), ab(0, 0));
        assert_eq!(mp::<Plain>(&[0x81, 0xa1, b'B', 0x07]).unwrap(), ab(0, 7));
        assert_eq!(mp::<Plain>(&[0x80]).unwrap(), ab(0, 0));
        let n: Nested = json("{}").unwrap();
        assert_eq!(
            n,
            Nested { Name: String::new(), Inner: ab(0, 0), List: vec![], Opt: None, Flag: false, Ratio: 0.0 }
        );
        // Strict mode keeps serde's rule.
        let e = from_payload_strict::<Plain>(SerializeType::JSON, br#"{"A":128}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `B`"), "{e}");
        assert!(from_payload_strict::<Plain>(SerializeType::MSGPACK, &[0x80]).is_err());
    }

    #[test]
    fn go_json_keys_fold_case() {
        assert_eq!(json::<Plain>(r#"{"a":54,"b":-45}"#).unwrap(), ab(54, -45));
        // An exact match is preferred, then a folded one; the last assignment wins.
        assert_eq!(json::<Plain>(r#"{"A":1,"a":2}"#).unwrap(), ab(2, 0));
        assert_eq!(json::<Plain>(r#"{"a":2,"A":1}"#).unwrap(), ab(1, 0));
        assert_eq!(json::<Nested>(r#"{"inner":{"b":3},"NAME":"x"}"#).unwrap().Inner, ab(0, 3));
        assert_eq!(super::gomode_fold_for_test("\u{212a}"), "K");
        // MsgPack keys are case-sensitive in Go: `a` is an unknown field.
        assert_eq!(mp::<Plain>(&[0x81, 0xa1, b'a', 0x07]).unwrap(), ab(0, 0));
        assert!(from_payload_strict::<Plain>(SerializeType::JSON, br#"{"a":1,"b":2}"#).is_err());
    }

    #[test]
    fn go_null_is_zero() {
        assert_eq!(json::<Plain>(r#"{"A":null,"B":3}"#).unwrap(), ab(0, 3));
        assert_eq!(json::<Plain>("null").unwrap(), ab(0, 0));
        assert_eq!(json::<Nested>(r#"{"Inner":null,"List":null,"Name":null,"Opt":null}"#).unwrap().Inner, ab(0, 0));
        assert_eq!(mp::<Plain>(&[0xc0]).unwrap(), ab(0, 0));
        assert_eq!(mp::<Plain>(&[0x82, 0xa1, b'A', 0xc0, 0xa1, b'B', 0x05]).unwrap(), ab(0, 5));
        // An empty MsgPack array where a struct is expected is its zero value.
        assert_eq!(mp::<Plain>(&[0x90]).unwrap(), ab(0, 0));
        assert!(from_payload_strict::<Plain>(SerializeType::JSON, b"null").is_err());
    }

    #[test]
    fn go_duplicate_keys_last_wins() {
        assert_eq!(json::<Plain>(r#"{"A":1,"B":2,"A":3}"#).unwrap(), ab(3, 2));
        assert_eq!(mp::<Plain>(&[0x83, 0xa1, b'A', 1, 0xa1, b'B', 2, 0xa1, b'A', 3]).unwrap(), ab(3, 2));
        let e = from_payload_strict::<Plain>(SerializeType::JSON, br#"{"A":1,"B":2,"A":3}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field"), "{e}");
    }

    #[test]
    fn go_json_reads_one_value() {
        assert_eq!(json::<Plain>(r#"{"A":1,"B":2}garbage{"#).unwrap(), ab(1, 2));
        assert_eq!(json::<Plain>(" \n{\"A\":1} {\"A\":2}").unwrap(), ab(1, 0));
        assert_eq!(mp::<Plain>(&[0x81, 0xa1, b'A', 1, 0xff, 0xff]).unwrap(), ab(1, 0));
        // The value itself must still be whole and valid.
        assert!(json::<Plain>(r#"{"A":1"#).is_err());
        assert!(json::<Plain>("").is_err());
        assert!(mp::<Plain>(&[]).is_err());
        let e = from_payload_strict::<Plain>(SerializeType::JSON, br#"{"A":1,"B":2}x"#).unwrap_err();
        assert!(e.to_string().contains("trailing characters"), "{e}");
    }

    #[test]
    fn go_msgpack_integers_wrap() {
        // uint64 max into an int is -1 in Go.
        let big = [0x81, 0xa1, b'A', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(mp::<Plain>(&big).unwrap(), ab(-1, 0));
        let above = [0x81, 0xa1, b'A', 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(mp::<Plain>(&above).unwrap(), ab(i64::MIN + 1, 0));
        // Narrower fields wrap too (reflect.Value.SetInt truncates); a negative into an
        // unsigned field wraps.
        #[derive(Deserialize, Debug, PartialEq)]
        #[allow(non_snake_case)]
        struct Narrow {
            X: i8,
            Y: u16,
        }
        let n = [0x82, 0xa1, b'X', 0xcd, 0x01, 0x80, 0xa1, b'Y', 0xff];
        assert_eq!(mp::<Narrow>(&n).unwrap(), Narrow { X: -128, Y: 0xffff });
        // Floats are not integers in Go's msgpack either.
        assert!(mp::<Plain>(&[0x81, 0xa1, b'A', 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]).is_err());
        // JSON integers must fit, as in Go.
        assert!(json::<Plain>(r#"{"A":9223372036854775808}"#).is_err());
        assert!(json::<Plain>(r#"{"A":1.5}"#).is_err());
        assert!(from_payload_strict::<Plain>(SerializeType::MSGPACK, &big).is_err());
    }

    #[test]
    fn go_rejects_what_go_rejects() {
        // A JSON array is not a struct in Go.
        assert!(json::<Plain>("[1,2]").is_err());
        assert_eq!(from_payload_strict::<Plain>(SerializeType::JSON, b"[1,2]").unwrap(), ab(1, 2));
        // MsgPack map keys must be strings.
        let int_keys = [0x82, 0x00, 0x01, 0x01, 0x02];
        assert!(mp::<Plain>(&int_keys).is_err());
        assert_eq!(from_payload_strict::<Plain>(SerializeType::MSGPACK, &int_keys).unwrap(), ab(1, 2));
        // A MsgPack array of exactly the field count is positional in Go; other lengths fail.
        assert_eq!(mp::<Plain>(&[0x92, 0x01, 0x02]).unwrap(), ab(1, 2));
        assert!(mp::<Plain>(&[0x91, 0x01]).is_err());
        // Wrong types stay errors.
        assert!(json::<Plain>(r#"{"A":"1"}"#).is_err());
        assert!(json::<Plain>("7").is_err());
        assert!(mp::<Plain>(&[0x81, 0xa1, b'A', 0xc3]).is_err());
        // bin and nil keys are accepted as names (Go reads str, bin or nil).
        assert_eq!(mp::<Plain>(&[0x82, 0xc4, 1, b'A', 0x05, 0xc0, 0x06]).unwrap(), ab(5, 0));
    }

    #[test]
    fn go_mode_keeps_serde_attributes() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Renamed {
            #[serde(rename = "Value", alias = "V")]
            value: u32,
        }
        // Go has no aliases. serde lists an alias as one more field name, so Go mode
        // gives both names a value and the derived impl reports a duplicate
        // (documented in the module docs: such types need strict mode).
        assert!(json::<Renamed>(r#"{"Value":3}"#).unwrap_err().to_string().contains("duplicate field"));
        assert_eq!(from_payload_strict::<Renamed>(SerializeType::JSON, br#"{"V":4}"#).unwrap(), Renamed { value: 4 });
        #[derive(Deserialize, Debug, PartialEq)]
        struct Lower {
            #[serde(rename = "Value")]
            value: u32,
        }
        assert_eq!(json::<Lower>(r#"{"value":3}"#).unwrap(), Lower { value: 3 });
        #[derive(Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        #[allow(non_snake_case)]
        struct Closed {
            A: i64,
        }
        assert!(json::<Closed>(r#"{"A":1,"Z":2}"#).is_err());
        #[derive(Deserialize, Debug, PartialEq)]
        enum Kind {
            One,
            Two(i32),
        }
        assert_eq!(json::<Kind>(r#""One""#).unwrap(), Kind::One);
        assert_eq!(json::<Kind>(r#"{"Two":5}"#).unwrap(), Kind::Two(5));
        assert_eq!(json::<std::collections::BTreeMap<String, i32>>(r#"{"x":1,"x":2}"#).unwrap()["x"], 2);
        // Reply types decode the same way on the client side.
        let msg = crate::wire::Message {
            header: crate::wire::Header::request(SerializeType::JSON, 1),
            service_path: Default::default(),
            service_method: Default::default(),
            metadata: Default::default(),
            payload: bytes::Bytes::from_static(b"{}"),
        };
        assert_eq!(decode_reply::<Reply>(msg).unwrap().0, Reply { C: 0 });
    }

    #[cfg(feature = "protobuf")]
    #[test]
    fn protobuf_round_trip() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct ProtoArgs {
            #[prost(int64, tag = "1")]
            a: i64,
            #[prost(int64, tag = "2")]
            b: i64,
        }
        let bytes = to_proto(&ProtoArgs { a: 10, b: 20 });
        assert_eq!(bytes, [0x08, 10, 0x10, 20]);
        assert_eq!(from_proto::<ProtoArgs>(&bytes).unwrap(), ProtoArgs { a: 10, b: 20 });
        assert!(from_proto::<ProtoArgs>(&[0x08]).is_err());
    }

    #[cfg(feature = "protobuf")]
    #[test]
    fn protobuf_wrong_wire_type_is_an_unknown_field() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct ProtoArgs {
            #[prost(int64, tag = "1")]
            a: i64,
            #[prost(int64, tag = "2")]
            b: i64,
            #[prost(int64, repeated, tag = "3")]
            r: Vec<i64>,
        }
        // Field 1 as length-delimited (a packed encoding of a singular field), field 2
        // as a fixed64: protobuf-go keeps both as unknown fields, so they read as zero.
        let packed_a = [0x0a, 0x02, 0x05, 0x06, 0x10, 0x07];
        assert_eq!(from_proto::<ProtoArgs>(&packed_a).unwrap(), ProtoArgs { a: 0, b: 7, r: vec![] });
        let fixed_b = [0x08, 0x03, 0x11, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(from_proto::<ProtoArgs>(&fixed_b).unwrap(), ProtoArgs { a: 3, b: 0, r: vec![] });
        // A later valid occurrence still counts; packed and unpacked repeated fields both work.
        let later = [0x0a, 0x01, 0x05, 0x08, 0x09, 0x1a, 0x02, 0x01, 0x02, 0x18, 0x03];
        assert_eq!(from_proto::<ProtoArgs>(&later).unwrap(), ProtoArgs { a: 9, b: 0, r: vec![1, 2, 3] });
        // prost alone rejects these, with the text the lenient path recognises.
        let e = from_proto_strict::<ProtoArgs>(&packed_a).unwrap_err();
        assert!(e.to_string().contains(PROST_WIRE_TYPE_TEXT), "{e}");
        // Malformed input stays an error: truncated value, bad wire type number, tag 0.
        assert!(from_proto::<ProtoArgs>(&[0x0a, 0x05, 0x01]).is_err());
        assert!(from_proto::<ProtoArgs>(&[0x0f, 0x01]).is_err());
        assert!(from_proto::<ProtoArgs>(&[0x00, 0x01]).is_err());
        assert!(from_proto::<ProtoArgs>(&[0x08]).is_err());
    }
}
