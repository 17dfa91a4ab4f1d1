//! Fuzz the stream decoder with arbitrary bytes under arbitrary chunking.
//!
//! Input layout: `control`, then `n` chunk-size bytes, then the byte stream.
//!
//! * `control & 0x07` plus one is `n` (1..=8 chunk sizes, used in a cycle);
//! * `control & 0x08` turns `strict_payload_len` off (Go's lenient mode);
//! * `control & 0x10` caps metadata at 8 pairs instead of the default.
//!
//! Every run decodes the stream four times: chunked and all at once, with
//! `next_raw` and with `next_message`, each in its own `StreamDecoder`. Checked:
//!
//! * no panic, and the decoder never buffers more than `max_message_len + 16` bytes
//!   plus the chunk just fed;
//! * chunking changes nothing: same messages, same first error, same `finish`;
//! * every raw message is exactly what an independent reference parser reads from the
//!   frame's bytes, it re-encodes (`encode_raw`) to exactly those bytes unless its
//!   metadata repeated a key, and in every case the re-encoded bytes decode back to an
//!   equal message;
//! * the decoder rejects a frame exactly when the reference parser does;
//! * `next_message` yields the raw messages with their payloads decompressed, and
//!   stops with `DecodeError::Decompress` where decompression fails;
//! * after an error the decoder is poisoned: it repeats the error and ignores input.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpcx_core::compress::Compressors;
use rpcx_core::wire::{
    DecodeError, DecoderConfig, FrameDecoder, Header, MAGIC, Message, Metadata, PREFIX_LEN, StreamDecoder,
};
use std::ops::Range;

const MAX_MESSAGE_LEN: usize = 64 << 10;
const MAX_DECOMPRESSED_LEN: usize = 256 << 10;
const SMALL_MAX_METADATA_PAIRS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let n = usize::from(control & 0x07) + 1;
    if rest.len() < n {
        return;
    }
    let (size_bytes, stream) = rest.split_at(n);
    // 1..=4065 bytes, fine-grained at the small end where framing edges are.
    let sizes: Vec<usize> = size_bytes.iter().map(|&b| 1 + usize::from(b) * usize::from(b) / 16).collect();

    let mut cfg = DecoderConfig {
        max_message_len: MAX_MESSAGE_LEN,
        max_decompressed_len: MAX_DECOMPRESSED_LEN,
        ..DecoderConfig::default()
    };
    cfg.strict_payload_len = control & 0x08 == 0;
    if control & 0x10 != 0 {
        cfg.max_metadata_pairs = SMALL_MAX_METADATA_PAIRS;
    }

    let raw = drive(&cfg, stream, &sizes, Mode::Raw);
    let raw_whole = drive(&cfg, stream, &[usize::MAX], Mode::Raw);
    assert_eq!(raw, raw_whole, "chunking changed what next_raw yields");

    let dec = drive(&cfg, stream, &sizes, Mode::Decompress);
    let dec_whole = drive(&cfg, stream, &[usize::MAX], Mode::Decompress);
    assert_eq!(dec, dec_whole, "chunking changed what next_message yields");

    check_raw_against_reference(&cfg, stream, &raw);
    check_decompressed_against_raw(&cfg, &raw, &dec);
});

#[derive(Clone, Copy, Debug)]
enum Mode {
    Raw,
    Decompress,
}

/// What one decoder produced from the whole stream.
#[derive(Debug, PartialEq)]
struct Run {
    messages: Vec<Message>,
    /// The byte range of the stream each message was decoded from.
    frames: Vec<Range<usize>>,
    /// The first (and only) error; the stream is not fed further after it.
    error: Option<DecodeError>,
    /// Where the first frame not yielded starts: the one that failed, or the partial
    /// frame left at the end of the stream.
    rest_at: usize,
    finish: Result<(), DecodeError>,
}

fn next(dec: &mut StreamDecoder, mode: Mode) -> Result<Option<Message>, DecodeError> {
    match mode {
        Mode::Raw => dec.next_raw(),
        Mode::Decompress => dec.next_message(),
    }
}

/// Feed `stream` to a fresh decoder in chunks of `sizes` (cycled), draining every
/// message after each chunk.
fn drive(cfg: &DecoderConfig, stream: &[u8], sizes: &[usize], mode: Mode) -> Run {
    let mut dec = StreamDecoder::new(cfg.clone());
    let mut run = Run { messages: Vec::new(), frames: Vec::new(), error: None, rest_at: 0, finish: Ok(()) };
    let mut fed = 0;
    let mut consumed = 0;
    let mut sizes = sizes.iter().cycle();
    while fed < stream.len() && run.error.is_none() {
        let n = (*sizes.next().expect("at least one chunk size")).min(stream.len() - fed);
        dec.feed(&stream[fed..fed + n]);
        fed += n;
        assert!(
            dec.buffered() <= cfg.max_message_len + PREFIX_LEN + n,
            "decoder buffers {} bytes after a {n}-byte chunk (limit {})",
            dec.buffered(),
            cfg.max_message_len,
        );
        loop {
            match next(&mut dec, mode) {
                Ok(Some(m)) => {
                    let len = &stream[consumed + 12..consumed + PREFIX_LEN];
                    let total = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                    let end = consumed + PREFIX_LEN + total;
                    assert_eq!(fed - dec.buffered(), end, "decoder consumed exactly one frame");
                    run.messages.push(m);
                    run.frames.push(consumed..end);
                    consumed = end;
                }
                Ok(None) => {
                    assert!(dec.buffered() < PREFIX_LEN + cfg.max_message_len, "incomplete means under one frame");
                    break;
                }
                Err(e) => {
                    run.error = Some(e);
                    break;
                }
            }
        }
    }
    run.rest_at = consumed;
    if let Some(e) = &run.error {
        assert_eq!(dec.buffered(), 0, "an error drops the buffer");
        dec.feed(&[MAGIC; PREFIX_LEN]);
        assert_eq!(dec.buffered(), 0, "a poisoned decoder ignores input");
        assert_eq!(next(&mut dec, mode).as_ref(), Err(e), "a poisoned decoder repeats its error");
    } else {
        assert_eq!(consumed + dec.buffered(), stream.len(), "nothing lost, nothing invented");
    }
    run.finish = dec.finish();
    match (&run.error, &run.finish) {
        (Some(e), f) => assert_eq!(f.as_ref(), Err(e), "finish repeats the error"),
        (None, Ok(())) => assert_eq!(dec.buffered(), 0),
        (None, Err(DecodeError::UnexpectedEof { buffered })) => assert_eq!(*buffered, dec.buffered()),
        (None, Err(e)) => panic!("finish without an earlier error returned {e:?}"),
    }
    run
}

/// A frame as the reference parser reads it, straight from the spec (section 1.1).
struct RefFrame<'a> {
    header: [u8; 12],
    service_path: &'a [u8],
    service_method: &'a [u8],
    pairs: Vec<(&'a [u8], &'a [u8])>,
    /// Offset of the `payloadLen` field in the frame.
    payload_len_at: usize,
    payload: &'a [u8],
}

#[derive(Debug, PartialEq)]
enum RefError {
    Magic(u8),
    TooLong(u32),
    /// Anything wrong inside the frame's body.
    Body(&'static str),
}

/// Split a `u32`-length-prefixed byte string off the front of `rest`.
fn take_prefixed<'a>(rest: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], RefError> {
    if rest.len() < 4 {
        return Err(RefError::Body(what));
    }
    let (len, tail) = rest.split_at(4);
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > tail.len() {
        return Err(RefError::Body(what));
    }
    let (s, tail) = tail.split_at(len);
    *rest = tail;
    Ok(s)
}

/// Parse the frame at the start of `buf`: `Ok(None)` if it is incomplete.
fn reference<'a>(cfg: &DecoderConfig, buf: &'a [u8]) -> Result<Option<(RefFrame<'a>, usize)>, RefError> {
    match buf.first() {
        None => return Ok(None),
        Some(&b) if b != MAGIC => return Err(RefError::Magic(b)),
        Some(_) => {}
    }
    if buf.len() < PREFIX_LEN {
        return Ok(None);
    }
    let total = u32::from_be_bytes(buf[12..16].try_into().expect("4 bytes"));
    if total as usize > cfg.max_message_len {
        return Err(RefError::TooLong(total));
    }
    let frame_len = PREFIX_LEN + total as usize;
    if buf.len() < frame_len {
        return Ok(None);
    }
    let frame = &buf[..frame_len];
    let mut rest = &frame[PREFIX_LEN..];
    let service_path = take_prefixed(&mut rest, "service path")?;
    let service_method = take_prefixed(&mut rest, "service method")?;
    let mut meta = take_prefixed(&mut rest, "metadata")?;
    let payload_len_at = frame_len - rest.len();
    if rest.len() < 4 {
        return Err(RefError::Body("payload length"));
    }
    let declared = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let payload = &rest[4..];
    if cfg.strict_payload_len && declared != payload.len() {
        return Err(RefError::Body("payload length mismatch"));
    }
    let mut pairs = Vec::new();
    while !meta.is_empty() {
        let k = take_prefixed(&mut meta, "metadata key")?;
        let v = take_prefixed(&mut meta, "metadata value")?;
        pairs.push((k, v));
    }
    if pairs.len() > cfg.max_metadata_pairs {
        return Err(RefError::Body("too many metadata pairs"));
    }
    let header = frame[..12].try_into().expect("12 bytes");
    Ok(Some((RefFrame { header, service_path, service_method, pairs, payload_len_at, payload }, frame_len)))
}

impl RefFrame<'_> {
    /// The message the spec says this frame carries: duplicate metadata keys keep their
    /// first position and their last value (Go's map semantics).
    fn message(&self) -> Message {
        Message {
            header: Header::from_bytes(&self.header),
            service_path: Bytes::copy_from_slice(self.service_path),
            service_method: Bytes::copy_from_slice(self.service_method),
            metadata: self
                .pairs
                .iter()
                .map(|&(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
                .collect::<Metadata>(),
            payload: Bytes::copy_from_slice(self.payload),
        }
    }
}

fn check_raw_against_reference(cfg: &DecoderConfig, stream: &[u8], raw: &Run) {
    let strict = FrameDecoder::new(DecoderConfig {
        max_message_len: usize::MAX,
        max_metadata_pairs: usize::MAX,
        ..DecoderConfig::default()
    });
    for (m, range) in raw.messages.iter().zip(&raw.frames) {
        let frame = &stream[range.clone()];
        let (rf, len) = match reference(cfg, frame) {
            Ok(Some(f)) => f,
            other => panic!("decoder accepted a frame the reference parser reads as {:?}", other.map(|_| ())),
        };
        assert_eq!(len, frame.len());
        assert_eq!(*m, rf.message(), "decoded message differs from the reference parse");

        let mut out = Vec::new();
        let n = m.encode_raw(usize::MAX, &mut out).expect("a decoded message re-encodes");
        assert_eq!(n, out.len());
        if rf.pairs.len() == m.metadata.len() {
            // No duplicate keys: the very same bytes, except that a lenient decoder
            // accepted a payloadLen that the encoder writes correctly.
            let mut expected = frame.to_vec();
            let actual = u32::try_from(rf.payload.len()).expect("payload fits in a frame");
            expected[rf.payload_len_at..rf.payload_len_at + 4].copy_from_slice(&actual.to_be_bytes());
            assert_eq!(out, expected, "re-encoding changed the frame's bytes");
        } else {
            assert!(out.len() < frame.len(), "collapsing duplicate keys shrinks the frame");
        }
        let mut buf = BytesMut::from(&out[..]);
        let back = strict.decode_raw(&mut buf).expect("re-encoded frame decodes").expect("a whole frame");
        assert!(buf.is_empty());
        assert_eq!(back, *m, "re-encoded frame decodes to a different message");
    }

    let tail = &stream[raw.rest_at..];
    match (&raw.error, reference(cfg, tail)) {
        (None, Ok(None)) => {}
        (None, Ok(Some(_))) => panic!("the reference parser found a whole frame the decoder did not yield"),
        (None, Err(e)) => panic!("decoder accepted what the reference parser rejects: {e:?}"),
        (Some(e), Ok(_)) => panic!("decoder rejected a frame the reference parser accepts: {e:?}"),
        (Some(e), Err(RefError::Magic(b))) => assert_eq!(*e, DecodeError::BadMagic(b)),
        (Some(e), Err(RefError::TooLong(len))) => {
            assert_eq!(*e, DecodeError::MessageTooLong { len, max: cfg.max_message_len })
        }
        (Some(e), Err(RefError::Body(what))) => assert!(
            matches!(
                e,
                DecodeError::Truncated { .. }
                    | DecodeError::SectionOverrun { .. }
                    | DecodeError::PayloadLenMismatch { .. }
                    | DecodeError::MetadataTruncated
                    | DecodeError::TooManyMetadataPairs { .. }
            ),
            "reference parser rejects the body ({what}); decoder says {e:?}"
        ),
    }
}

fn check_decompressed_against_raw(cfg: &DecoderConfig, raw: &Run, dec: &Run) {
    let compressors = Compressors::default();
    for (i, r) in raw.messages.iter().enumerate() {
        let ct = r.header.compress_type();
        match compressors.decompress(ct, r.payload.clone(), cfg.max_decompressed_len) {
            Ok(payload) => {
                let mut expected = r.clone();
                expected.payload = payload;
                assert!(expected.payload.len() <= cfg.max_decompressed_len);
                assert_eq!(dec.messages.get(i), Some(&expected), "message {i} decompressed differently");
                assert_eq!(dec.frames[i], raw.frames[i]);
            }
            Err(e) => {
                assert_eq!(dec.messages.len(), i, "decoding stops at the frame that fails to decompress");
                assert_eq!(dec.error, Some(DecodeError::Decompress(e)));
                assert_eq!(dec.rest_at, raw.frames[i].start);
                return;
            }
        }
    }
    assert_eq!(dec.messages.len(), raw.messages.len());
    assert_eq!(dec.error, raw.error);
    assert_eq!(dec.rest_at, raw.rest_at);
    assert_eq!(dec.finish, raw.finish);
}
