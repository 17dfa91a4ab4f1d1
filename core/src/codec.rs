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

use crate::wire::SerializeType;
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Deserialize a serde value from a payload in the given format.
pub fn from_payload<T: DeserializeOwned>(st: SerializeType, payload: &[u8]) -> Result<T, CodecError> {
    serde_only(st)?;
    if st == SerializeType::JSON { Ok(serde_json::from_slice(payload)?) } else { Ok(rmp_serde::from_slice(payload)?) }
}

/// A reply message's payload decoded by its own serialize type, with its metadata.
pub fn decode_reply<T: DeserializeOwned>(msg: crate::wire::Message) -> Result<(T, crate::wire::Metadata), CodecError> {
    let reply = from_payload(msg.header.serialize_type(), &msg.payload)?;
    Ok((reply, msg.metadata))
}

/// Encode a protobuf message (`SerializeType::PROTOBUF`).
#[cfg(feature = "protobuf")]
pub fn to_proto<T: prost::Message>(value: &T) -> Vec<u8> {
    value.encode_to_vec()
}

/// Decode a protobuf message (`SerializeType::PROTOBUF`).
#[cfg(feature = "protobuf")]
pub fn from_proto<T: prost::Message + Default>(payload: &[u8]) -> Result<T, CodecError> {
    Ok(T::decode(payload)?)
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
}
