//! Incremental, bounded, zero-copy decoding of rpcx frames.

use super::{
    DEFAULT_MAX_MESSAGE_LEN, DEFAULT_MAX_METADATA_PAIRS, HEADER_LEN, Header, KnownNames, MAGIC, Message, Metadata,
    PREFIX_LEN,
};
use crate::compress::{Compressors, DecompressError};
use bytes::{Buf, Bytes, BytesMut};
use std::fmt;

/// Most a frame's announced length makes the decoder reserve ahead of its bytes.
const RESERVE_AHEAD: usize = 64 << 10;

/// One of the four length-prefixed sections of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// The service path.
    ServicePath,
    /// The service method.
    ServiceMethod,
    /// The metadata block.
    Metadata,
    /// The payload.
    Payload,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::ServicePath => "service path",
            Section::ServiceMethod => "service method",
            Section::Metadata => "metadata",
            Section::Payload => "payload",
        })
    }
}

/// The peer sent bytes that are not a valid rpcx frame. The stream cannot be resynced:
/// the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first byte of a frame is not `0x08`.
    #[error("wrong magic number: {0}")]
    BadMagic(u8),
    /// `totalLen` exceeds the configured maximum (checked before anything is allocated).
    #[error("message is too long: totalLen {len} exceeds the maximum of {max}")]
    MessageTooLong {
        /// The announced `totalLen`.
        len: u32,
        /// The configured maximum.
        max: usize,
    },
    /// A section's length prefix does not fit in what is left of the frame.
    #[error("{section} length prefix missing: frame ends early")]
    Truncated {
        /// The section whose prefix is missing.
        section: Section,
    },
    /// A section's length runs past the end of the frame.
    #[error("{section} length {len} overruns the frame ({remaining} bytes left)")]
    SectionOverrun {
        /// The section.
        section: Section,
        /// Its announced length.
        len: u32,
        /// Bytes left in the frame after its length prefix.
        remaining: usize,
    },
    /// `payloadLen` disagrees with the bytes that remain in the frame (Go ignores it).
    #[error("payload length {declared} does not match the {actual} bytes left in the frame")]
    PayloadLenMismatch {
        /// The announced payload length.
        declared: u32,
        /// The bytes actually left.
        actual: usize,
    },
    /// A metadata key or value runs past the end of the metadata block.
    #[error("wrong metadata lines. some keys or values are missing")]
    MetadataTruncated,
    /// More metadata pairs than the configured maximum.
    #[error("more than {max} metadata pairs")]
    TooManyMetadataPairs {
        /// The configured maximum.
        max: usize,
    },
    /// The payload could not be decompressed (unknown compressor, empty, corrupt, bomb).
    #[error("{0}")]
    Decompress(#[from] DecompressError),
    /// The stream ended in the middle of a frame.
    #[error("unexpected EOF: stream ended with {buffered} bytes of an incomplete frame")]
    UnexpectedEof {
        /// Bytes of the partial frame.
        buffered: usize,
    },
}

/// Decoder limits and options.
#[derive(Clone, Debug)]
pub struct DecoderConfig {
    /// Largest accepted `totalLen` (default 32 MiB). Checked before allocating.
    pub max_message_len: usize,
    /// Largest accepted decompressed payload (default: `max_message_len`).
    pub max_decompressed_len: usize,
    /// Largest accepted number of metadata pairs (default 4096).
    pub max_metadata_pairs: usize,
    /// Reject frames whose `payloadLen` disagrees with the frame (default `true`).
    /// Go ignores `payloadLen`; set `false` to accept what Go accepts.
    pub strict_payload_len: bool,
    /// Compressors by wire number, used to decompress payloads.
    pub compressors: Compressors,
    /// Service paths and methods returned as static [`Bytes`] rather than slices of the
    /// frame (default: none). Saves an atomic reference-count increment and decrement
    /// per field and frame.
    pub known_names: KnownNames,
    /// Learn the other service paths and methods (default `true`): a name not in
    /// `known_names` goes into a process-wide table the first time a decoder sees it
    /// and comes back as a static [`Bytes`] from then on, as a known name does. The
    /// table is bounded: at most [`MAX_LEARNED_NAMES`](super::MAX_LEARNED_NAMES) names
    /// of at most [`MAX_LEARNED_NAME_LEN`](super::MAX_LEARNED_NAME_LEN) bytes (64 KiB),
    /// kept for the life of the process; once it is full, new names are sliced from the
    /// frame. Clients learn the names their responses echo. Servers do not:
    /// `ServerConfig`'s default turns it off, and the servers of every runtime (their
    /// `Dispatcher`) always do, since a server knows the names it serves and a peer's
    /// made-up names would only fill the table.
    pub learn_names: bool,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_decompressed_len: DEFAULT_MAX_MESSAGE_LEN,
            max_metadata_pairs: DEFAULT_MAX_METADATA_PAIRS,
            strict_payload_len: true,
            compressors: Compressors::default(),
            known_names: KnownNames::default(),
            learn_names: true,
        }
    }
}

/// Decodes frames from a caller-owned [`BytesMut`] (the shape of a tokio-util codec).
///
/// "Incomplete" is `Ok(None)`, not an error; nothing is taken from the buffer until a
/// whole frame is present, and the frame's length is checked against the limit before
/// the buffer is grown for it.
#[derive(Clone, Debug, Default)]
pub struct FrameDecoder {
    config: DecoderConfig,
}

impl FrameDecoder {
    /// A decoder with the given limits.
    pub fn new(config: DecoderConfig) -> Self {
        Self { config }
    }

    /// The limits in force.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Take one whole frame from `src` and decode it, decompressing the payload.
    /// `Ok(None)` means more bytes are needed.
    #[inline(always)]
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        let Some(frame) = self.split_frame(src)? else { return Ok(None) };
        self.parse(frame, true).map(Some)
    }

    /// Like [`FrameDecoder::decode`] but leaves the payload as it was on the wire
    /// (compressed if the header says so, compress type not checked).
    #[inline]
    pub fn decode_raw(&self, src: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        let Some(frame) = self.split_frame(src)? else { return Ok(None) };
        self.parse(frame, false).map(Some)
    }

    /// Decode exactly one complete frame (16-byte prefix included), decompressing.
    #[inline]
    pub fn decode_frame(&self, frame: Bytes) -> Result<Message, DecodeError> {
        self.parse(frame, true)
    }

    #[cold]
    #[inline(never)]
    fn decompress(&self, ct: super::CompressType, payload: Bytes) -> Result<Bytes, DecodeError> {
        Ok(self.config.compressors.decompress(ct, payload, self.config.max_decompressed_len)?)
    }

    /// If `src` starts with a whole frame, split it off. Validates magic and length.
    #[inline]
    fn split_frame(&self, src: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        let Some(prefix) = src.first_chunk::<PREFIX_LEN>() else {
            return match src.first() {
                Some(&first) if first != MAGIC => Err(DecodeError::BadMagic(first)),
                _ => Ok(None),
            };
        };
        if prefix[0] != MAGIC {
            return Err(DecodeError::BadMagic(prefix[0]));
        }
        let total = u32::from_be_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
        if total as usize > self.config.max_message_len {
            return Err(DecodeError::MessageTooLong { len: total, max: self.config.max_message_len });
        }
        let frame_len = PREFIX_LEN + total as usize;
        if src.len() < frame_len {
            // Room for what is coming, but never more than RESERVE_AHEAD on the word of
            // a 16-byte prefix: memory grows with the bytes that actually arrive.
            src.reserve((frame_len - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        Ok(Some(src.split_to(frame_len).freeze()))
    }

    /// A path or method: static if known or learned, else a slice of the frame.
    #[inline(always)]
    fn name(&self, frame: &Bytes, range: std::ops::Range<usize>) -> Bytes {
        if range.is_empty() {
            return Bytes::new();
        }
        let name = &frame[range.clone()];
        if let Some(known) = self.config.known_names.get(name) {
            return known;
        }
        if self.config.learn_names {
            if let Some(learned) = super::names::learned(name) {
                return learned;
            }
        }
        frame.slice(range)
    }

    /// Parse a whole frame into sections, decompressing the payload if `decompress`.
    ///
    /// Every length is checked on the borrowed bytes first; the message's fields are
    /// then cut from the frame, one reference-count increment per non-empty path,
    /// method (unless known) and metadata section (the payload takes over the frame's
    /// own handle). Errors come in frame order (sections, payload length, metadata),
    /// then decompression. Inlined into its callers, so the message is built where
    /// it is returned rather than moved out of intermediate results.
    #[inline(always)]
    fn parse(&self, frame: Bytes, decompress: bool) -> Result<Message, DecodeError> {
        debug_assert!(frame.len() >= PREFIX_LEN && frame[0] == MAGIC);
        let b: &[u8] = &frame;
        let hdr: &[u8; HEADER_LEN] = b[..HEADER_LEN].try_into().expect("a frame has a 16-byte prefix");
        let header = Header::from_bytes(hdr);
        let mut pos = PREFIX_LEN;
        let path = section(b, &mut pos, Section::ServicePath)?;
        let method = section(b, &mut pos, Section::ServiceMethod)?;
        let meta = section(b, &mut pos, Section::Metadata)?;
        let len = len_prefix(b, &mut pos, Section::Payload)?;
        if self.config.strict_payload_len && len as usize != b.len() - pos {
            return Err(DecodeError::PayloadLenMismatch { declared: len, actual: b.len() - pos });
        }
        let payload_at = pos;
        let metadata = if meta.is_empty() {
            Metadata::new()
        } else {
            Metadata::decode(frame.slice(meta), self.config.max_metadata_pairs)?
        };
        let service_path = self.name(&frame, path);
        let service_method = self.name(&frame, method);
        let mut payload = frame;
        payload.advance(payload_at);
        let ct = header.compress_type();
        if decompress && ct != super::CompressType::NONE {
            payload = self.decompress(ct, payload)?;
        }
        Ok(Message { header, service_path, service_method, metadata, payload })
    }
}

/// The section length prefix at `*pos`, which moves past it.
#[inline]
fn len_prefix(b: &[u8], pos: &mut usize, section: Section) -> Result<u32, DecodeError> {
    let Some(prefix) = b.get(*pos..).and_then(|rest| rest.first_chunk::<4>()) else {
        return Err(DecodeError::Truncated { section });
    };
    *pos += 4;
    Ok(u32::from_be_bytes(*prefix))
}

/// The range of the length-prefixed section at `*pos`, which moves past it.
#[inline]
fn section(b: &[u8], pos: &mut usize, section: Section) -> Result<std::ops::Range<usize>, DecodeError> {
    let len = len_prefix(b, pos, section)?;
    let remaining = b.len() - *pos;
    if len as usize > remaining {
        return Err(DecodeError::SectionOverrun { section, len, remaining });
    }
    let start = *pos;
    *pos += len as usize;
    Ok(start..*pos)
}

/// A [`FrameDecoder`] with its own input buffer: feed it any chunking of the byte
/// stream and take whole messages out.
///
/// The buffer holds at most one partial frame plus whatever was fed since the last
/// [`StreamDecoder::next_message`]; the partial frame is bounded by the configured
/// maximum. After the first error the decoder is poisoned and keeps returning it: a
/// byte stream cannot be resynchronised.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    decoder: FrameDecoder,
    buf: BytesMut,
    /// Whole large frames, each in an allocation of its own, ahead of `buf`.
    ready: std::collections::VecDeque<BytesMut>,
    error: Option<DecodeError>,
}

/// Frames at least this long are received into an allocation of exactly their size,
/// shared with no other frame: a message (or a slice of it that a response keeps)
/// then pins only its own bytes.
const EXACT_FRAME: usize = 64 << 10;

impl StreamDecoder {
    /// A stream decoder with the given limits.
    pub fn new(config: DecoderConfig) -> Self {
        Self { decoder: FrameDecoder::new(config), buf: BytesMut::new(), ready: Default::default(), error: None }
    }

    /// Append received bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let max = self.decoder.config.max_message_len.saturating_add(super::PREFIX_LEN);
        while !bytes.is_empty() {
            match self.pending_frame_len() {
                Some(len) if len >= EXACT_FRAME && len <= max && self.buf.len() < len => {
                    let take = (len - self.buf.len()).min(bytes.len());
                    let want = self.buf.len() + take;
                    if self.buf.capacity() < want {
                        // Grow by doubling, but never past the frame: it ends up alone
                        // in an allocation of its own size.
                        let target = self.buf.capacity().saturating_mul(2).max(want).min(len);
                        let mut grown = BytesMut::with_capacity(target);
                        grown.extend_from_slice(&self.buf);
                        self.buf = grown;
                    }
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buf.len() == len && !bytes.is_empty() {
                        self.ready.push_back(std::mem::take(&mut self.buf));
                    }
                }
                _ => {
                    self.buf.extend_from_slice(bytes);
                    return;
                }
            }
        }
    }

    fn after_front(&mut self) {
        if self.ready.front().is_some_and(|f| f.is_empty()) {
            self.ready.pop_front();
        }
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        // A parked whole frame first, else the stream buffer.
        let Self { decoder, buf, ready, .. } = self;
        let r = decoder.decode(ready.front_mut().unwrap_or(buf));
        self.settle(r)
    }

    fn settle(&mut self, r: Result<Option<Message>, DecodeError>) -> Result<Option<Message>, DecodeError> {
        match r {
            Ok(m) => {
                self.after_front();
                Ok(m)
            }
            Err(e) => {
                self.error = Some(e.clone());
                self.buf = BytesMut::new();
                self.ready.clear();
                Err(e)
            }
        }
    }

    /// Like [`StreamDecoder::next_message`] without decompressing the payload.
    pub fn next_raw(&mut self) -> Result<Option<Message>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let Self { decoder, buf, ready, .. } = self;
        let r = decoder.decode_raw(ready.front_mut().unwrap_or(buf));
        self.settle(r)
    }

    /// The stream ended: `Err(UnexpectedEof)` if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(DecodeError::UnexpectedEof { buffered }),
        }
    }

    /// The length (prefix included) of the frame at the front of the buffer, once its
    /// 16-byte prefix has arrived; `None` before that or after an error.
    pub fn pending_frame_len(&self) -> Option<usize> {
        if self.error.is_some() || !self.ready.is_empty() || self.buf.len() < PREFIX_LEN || self.buf[0] != MAGIC {
            return None;
        }
        Some(PREFIX_LEN + u32::from_be_bytes([self.buf[12], self.buf[13], self.buf[14], self.buf[15]]) as usize)
    }

    /// Whether a call to `next_message` / `next_raw` has something to do now: a whole
    /// frame (or a bad one to report) is buffered.
    pub fn has_frame(&self) -> bool {
        if self.error.is_some() || !self.ready.is_empty() {
            return true;
        }
        match self.buf.first() {
            None => false,
            Some(&b) if b != MAGIC => true,
            Some(_) => self.buf.len() >= PREFIX_LEN && self.pending_frame_len().is_none_or(|l| self.buf.len() >= l),
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.ready.iter().map(|f| f.len()).sum::<usize>()
    }

    /// The limits in force.
    pub fn config(&self) -> &DecoderConfig {
        self.decoder.config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EncoderConfig, SerializeType};

    #[test]
    fn known_names_decode_to_the_same_message_without_pinning_the_frame() {
        let mut msg = Message::request(SerializeType::MSGPACK, 7, "Arith", "Mul");
        msg.metadata.insert("k", "v");
        msg.payload = Bytes::from_static(b"payload");
        let mut wire = BytesMut::new();
        msg.encode(&EncoderConfig::default(), &mut wire).unwrap();
        let frame = wire.freeze();

        let sliced = DecoderConfig { learn_names: false, ..Default::default() };
        let plain = FrameDecoder::new(sliced).decode_frame(frame.clone()).unwrap();
        let cfg =
            DecoderConfig { known_names: KnownNames::new(["Mul", "Arith"]), learn_names: false, ..Default::default() };
        let known = FrameDecoder::new(cfg).decode_frame(frame.clone()).unwrap();
        let learned = FrameDecoder::default().decode_frame(frame.clone()).unwrap();
        let again = FrameDecoder::default().decode_frame(frame.clone()).unwrap();
        assert_eq!(plain, msg);
        assert_eq!(known, msg);
        assert_eq!(learned, msg);
        let in_frame = |b: &Bytes| frame.as_ptr_range().contains(&b.as_ptr());
        assert!(in_frame(&plain.service_path) && in_frame(&plain.service_method));
        assert!(!in_frame(&known.service_path) && !in_frame(&known.service_method));
        assert!(in_frame(&known.payload));
        // Learned once, by whichever decoder saw the name first; the same copy after.
        assert!(!in_frame(&learned.service_path) && !in_frame(&learned.service_method));
        assert_eq!(learned.service_path.as_ptr(), again.service_path.as_ptr());
        assert_eq!(learned.service_method.as_ptr(), again.service_method.as_ptr());
        assert!(in_frame(&learned.payload));

        // A name longer than the table takes is sliced.
        let long = "L".repeat(crate::wire::MAX_LEARNED_NAME_LEN + 1);
        let long_msg = Message::request(SerializeType::MSGPACK, 9, long, "Mul");
        let mut wire = BytesMut::new();
        long_msg.encode(&EncoderConfig::default(), &mut wire).unwrap();
        let frame = wire.freeze();
        let decoded = FrameDecoder::default().decode_frame(frame.clone()).unwrap();
        assert_eq!(decoded, long_msg);
        assert!(frame.as_ptr_range().contains(&decoded.service_path.as_ptr()));

        // Only whole names match.
        let other = Message::request(SerializeType::MSGPACK, 8, "Arit", "Mull");
        let mut wire = BytesMut::new();
        other.encode(&EncoderConfig::default(), &mut wire).unwrap();
        let cfg = DecoderConfig { known_names: KnownNames::new(["Mul", "Arith"]), ..Default::default() };
        let decoded = FrameDecoder::new(cfg).decode(&mut wire).unwrap().unwrap();
        assert_eq!(decoded, other);
    }
}
