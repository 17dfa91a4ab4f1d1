//! Malformed input: every row of the protocol notes' V13 table, plus the cases where we
//! are deliberately stricter than Go (Go half-parses them and answers as if they were
//! valid; we reject them with a typed error so the connection is closed).

use bytes::BytesMut;
use rpcx_core::compress::DecompressError;
use rpcx_core::wire::{DecodeError, DecoderConfig, FrameDecoder, Section, StreamDecoder};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn decode_with(cfg: DecoderConfig, bytes: &[u8]) -> Result<Option<rpcx_core::wire::Message>, DecodeError> {
    FrameDecoder::new(cfg).decode(&mut BytesMut::from(bytes))
}

fn decode(bytes: &[u8]) -> Result<Option<rpcx_core::wire::Message>, DecodeError> {
    decode_with(DecoderConfig::default(), bytes)
}

/// Go: `wrong magic number: 9`. Same here, with the same text.
#[test]
fn v13_bad_magic() {
    let e = decode(&h("09 00 00 00")).unwrap_err();
    assert_eq!(e, DecodeError::BadMagic(9));
    assert_eq!(e.to_string(), "wrong magic number: 9");
    // Known after one byte: no need to wait for a whole header.
    assert_eq!(decode(&[0x09]).unwrap_err(), DecodeError::BadMagic(9));
}

/// Go: nil error and an empty message (panic recovered). Stricter: the frame is too
/// short to hold the four section lengths.
#[test]
fn v13_total_len_zero_is_rejected_stricter_than_go() {
    let e = decode(&h("080000000000000000000000 00000000")).unwrap_err();
    assert_eq!(e, DecodeError::Truncated { section: Section::ServicePath });
}

/// Go: nil error, empty message. Stricter: the path length overruns the frame.
#[test]
fn v13_section_overrun_is_rejected_stricter_than_go() {
    let e = decode(&h("080000000000000000000000 00000008 000000ff 41414141")).unwrap_err();
    assert_eq!(e, DecodeError::SectionOverrun { section: Section::ServicePath, len: 255, remaining: 4 });
}

/// Go: ok, payload `hi` (payloadLen 99 ignored). Stricter by default; the lenient mode
/// accepts exactly what Go accepts.
#[test]
fn v13_wrong_payload_len() {
    let frame = h("080000000000000000000000 00000012 00000000 00000000 00000000 00000063 6869");
    assert_eq!(decode(&frame).unwrap_err(), DecodeError::PayloadLenMismatch { declared: 99, actual: 2 });
    let lenient = DecoderConfig { strict_payload_len: false, ..Default::default() };
    let m = decode_with(lenient, &frame).unwrap().unwrap();
    assert_eq!(m.payload.as_ref(), b"hi");
}

/// Go: `unexpected EOF`. Here: incomplete (not an error) while the stream is open, and
/// `UnexpectedEof` when the stream ends.
#[test]
fn v13_short_frame_is_incomplete_then_unexpected_eof() {
    let frame = h("080000000000000000000000 00000010 0000");
    assert_eq!(decode(&frame).unwrap(), None);
    let mut s = StreamDecoder::default();
    s.feed(&frame);
    assert_eq!(s.next_message().unwrap(), None);
    assert_eq!(s.finish().unwrap_err(), DecodeError::UnexpectedEof { buffered: 18 });
}

/// Go: `unsupported compressor` (compress = 5).
#[test]
fn v13_unknown_compressor() {
    let e = decode(&h("080014000000000000000000 00000010 00000000 00000000 00000000 00000000")).unwrap_err();
    assert_eq!(e, DecodeError::Decompress(DecompressError::Unsupported(5)));
    assert_eq!(e.to_string(), "unsupported compressor 5");
}

/// Go: `EOF`, which the Go server takes as a clean close. Here a typed error.
#[test]
fn v13_gzip_flag_with_empty_payload() {
    let e = decode(&h("080004000000000000000000 00000010 00000000 00000000 00000000 00000000")).unwrap_err();
    assert_eq!(e, DecodeError::Decompress(DecompressError::Empty));
}

/// Go with MaxMessageLength=16: total 17 is `message is too long`, total 16 is fine.
/// The limit is checked on the 16-byte prefix, before the body arrives or is allocated.
#[test]
fn v13_max_message_len() {
    let cfg = DecoderConfig { max_message_len: 16, ..Default::default() };
    let ok = h("080000000000000000000000 00000010 00000000 00000000 00000000 00000000");
    assert!(decode_with(cfg.clone(), &ok).unwrap().is_some());
    let prefix_only = h("080000000000000000000000 00000011");
    let e = decode_with(cfg, &prefix_only).unwrap_err();
    assert_eq!(e, DecodeError::MessageTooLong { len: 17, max: 16 });
    // The default cap refuses a 4 GiB announcement without allocating for it.
    let mut buf = BytesMut::from(&h("080000000000000000000000 ffffffff")[..]);
    let e = FrameDecoder::default().decode(&mut buf).unwrap_err();
    assert!(matches!(e, DecodeError::MessageTooLong { len: u32::MAX, .. }));
    assert!(buf.capacity() < 1024, "no allocation for the announced length");
}

/// Go: `ErrMetaKVMissing` for a truncated value; a missing length prefix panics
/// internally in Go. Both are `MetadataTruncated` here.
#[test]
fn metadata_truncations() {
    // metadataLen 6: key len 1, key "a", then only 1 byte where a 4-byte value len belongs.
    let short_prefix = h("080000000000000000000000 00000016 00000000 00000000 00000006 00000001 61 00 00000000");
    assert_eq!(decode(&short_prefix).unwrap_err(), DecodeError::MetadataTruncated);
    // value length 9 with 1 byte left.
    let long_value = h("080000000000000000000000 0000001a 00000000 00000000 0000000a 00000001 61 00000009 62 00000000");
    assert_eq!(decode(&long_value).unwrap_err(), DecodeError::MetadataTruncated);
}

#[test]
fn too_many_metadata_pairs() {
    let cfg = DecoderConfig { max_metadata_pairs: 2, ..Default::default() };
    // three empty pairs: 24 bytes of zeros.
    let mut frame = h("080000000000000000000000 00000028 00000000 00000000 00000018");
    frame.extend_from_slice(&[0; 24]);
    frame.extend_from_slice(&[0; 4]);
    assert_eq!(decode_with(cfg, &frame).unwrap_err(), DecodeError::TooManyMetadataPairs { max: 2 });
    // Three *identical* empty pairs are fine under the default cap and collapse to one.
    let m = decode(&frame).unwrap().unwrap();
    assert_eq!(m.metadata.len(), 1);
}

#[test]
fn corrupt_gzip_and_bomb() {
    // gzip flag + 4 bytes of junk.
    let junk = h("080004000000000000000000 00000014 00000000 00000000 00000000 00000004 deadbeef");
    assert!(matches!(decode(&junk).unwrap_err(), DecodeError::Decompress(DecompressError::Corrupt(_))));
    // 1 MiB of 'A' gzipped, with a 64 KiB decompression cap.
    let mut m = rpcx_core::wire::Message::default();
    m.header.set_compress_type(rpcx_core::wire::CompressType::GZIP);
    m.payload = vec![b'A'; 1 << 20].into();
    let mut frame = Vec::new();
    m.encode(&Default::default(), &mut frame).unwrap();
    assert!(frame.len() < 8192);
    let cfg = DecoderConfig { max_decompressed_len: 64 << 10, ..Default::default() };
    assert_eq!(
        decode_with(cfg, &frame).unwrap_err(),
        DecodeError::Decompress(DecompressError::TooLarge { limit: 64 << 10 })
    );
}

#[test]
fn stream_decoder_is_poisoned_after_an_error() {
    let mut s = StreamDecoder::default();
    s.feed(&[0x07, 0x08]);
    assert_eq!(s.next_message().unwrap_err(), DecodeError::BadMagic(7));
    s.feed(&h("0800000000000000000000000000001000000000000000000000000000000000"));
    assert_eq!(s.next_message().unwrap_err(), DecodeError::BadMagic(7));
    assert_eq!(s.buffered(), 0, "nothing is kept after an error");
}
