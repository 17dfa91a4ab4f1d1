//! Encoding messages into caller-owned buffers.

use super::{DEFAULT_MAX_MESSAGE_LEN, Message, PREFIX_LEN, Section};
use crate::compress::{CompressError, Compressor, Compressors};
use crate::wire::CompressType;
use bytes::{BufMut, BytesMut};

/// Why a message could not be encoded. Nothing is left in the buffer on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// One section is longer than a `u32` length prefix can express.
    #[error("{section} is {len} bytes, more than a u32 length can express")]
    SectionTooLong {
        /// Which section.
        section: Section,
        /// Its length.
        len: u64,
    },
    /// The frame's `totalLen` would exceed the configured maximum.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    MessageTooLong {
        /// The frame's `totalLen`.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// Compression failed or the compress type has no registered compressor.
    #[error(transparent)]
    Compress(#[from] CompressError),
}

/// Encoder settings.
#[derive(Clone, Debug)]
pub struct EncoderConfig {
    /// Largest `totalLen` the encoder will produce (default 32 MiB, the decoder's default).
    pub max_message_len: usize,
    /// Compressors by wire number.
    pub compressors: Compressors,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self { max_message_len: DEFAULT_MAX_MESSAGE_LEN, compressors: Compressors::default() }
    }
}

/// A growable byte buffer the encoder can append to and patch: implemented for
/// `Vec<u8>` and [`BytesMut`].
pub trait EncodeBuf: sealed::Sealed {
    /// Current length.
    fn len(&self) -> usize;
    /// Whether the buffer is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reserve room for `n` more bytes.
    fn reserve(&mut self, n: usize);
    /// Append bytes.
    fn put_slice(&mut self, s: &[u8]);
    /// Overwrite four bytes at `at` with `v`, big-endian.
    fn patch_u32(&mut self, at: usize, v: u32);
    /// Shorten to `n` bytes.
    fn truncate(&mut self, n: usize);
    /// Run `c` writing into this buffer.
    fn compress_into(&mut self, c: &dyn Compressor, input: &[u8]) -> Result<(), CompressError>;
    /// The bytes from `from` to the end.
    fn tail(&self, from: usize) -> &[u8];
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for Vec<u8> {}
    impl Sealed for bytes::BytesMut {}
}

impl EncodeBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn tail(&self, from: usize) -> &[u8] {
        &self[from.min(self.len())..]
    }
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n)
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s)
    }
    fn patch_u32(&mut self, at: usize, v: u32) {
        self[at..at + 4].copy_from_slice(&v.to_be_bytes())
    }
    fn truncate(&mut self, n: usize) {
        Vec::truncate(self, n)
    }
    fn compress_into(&mut self, c: &dyn Compressor, input: &[u8]) -> Result<(), CompressError> {
        c.compress(input, self)
    }
}

impl EncodeBuf for BytesMut {
    fn len(&self) -> usize {
        BytesMut::len(self)
    }
    fn tail(&self, from: usize) -> &[u8] {
        &self[from.min(BytesMut::len(self))..]
    }
    fn reserve(&mut self, n: usize) {
        BytesMut::reserve(self, n)
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s)
    }
    fn patch_u32(&mut self, at: usize, v: u32) {
        self[at..at + 4].copy_from_slice(&v.to_be_bytes())
    }
    fn truncate(&mut self, n: usize) {
        BytesMut::truncate(self, n)
    }
    fn compress_into(&mut self, c: &dyn Compressor, input: &[u8]) -> Result<(), CompressError> {
        let mut w = (&mut *self).writer();
        c.compress(input, &mut w)
    }
}

fn section_len(section: Section, len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::SectionTooLong { section, len: len as u64 })
}

impl Message {
    /// Append this message's frame to `buf`, compressing the payload as the header's
    /// compress type says. Returns the number of bytes written.
    ///
    /// The output is what Go's `Message.Encode` writes (metadata in insertion order);
    /// a flagged empty payload is compressed too (gzip of nothing, as Go's heartbeat
    /// echo sends it). One deliberate difference: an unknown compress type is an error
    /// rather than a silently cleared flag or a half-written frame. On error nothing is
    /// appended.
    pub fn encode<B: EncodeBuf>(&self, cfg: &EncoderConfig, buf: &mut B) -> Result<usize, EncodeError> {
        let ct = self.header.compress_type();
        if ct == CompressType::NONE {
            return self.encode_with(cfg.max_message_len, buf);
        }
        let c = cfg.compressors.get(ct).ok_or(CompressError::Unsupported(ct.bits()))?;
        let start = buf.len();
        let fixed = self.write_prefix_and_sections(cfg.max_message_len, buf, self.header)?;
        let payload_at = buf.len();
        if let Err(e) = buf.compress_into(c.as_ref(), &self.payload) {
            buf.truncate(start);
            return Err(e.into());
        }
        let clen = buf.len() - payload_at;
        let total = fixed as u64 + clen as u64;
        let check = section_len(Section::Payload, clen).and_then(|clen32| {
            if total > cfg.max_message_len as u64 {
                Err(EncodeError::MessageTooLong { len: total, max: cfg.max_message_len })
            } else {
                Ok(clen32)
            }
        });
        match check {
            Ok(clen32) => {
                buf.patch_u32(start + PREFIX_LEN - 4, total as u32);
                buf.patch_u32(payload_at - 4, clen32);
                Ok(buf.len() - start)
            }
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Append this message's frame with the payload written as is and the header
    /// exactly as it is (no compression, even if the compress bits are set). For
    /// relaying an already-compressed payload and for round-trip checks.
    pub fn encode_raw<B: EncodeBuf>(&self, max_message_len: usize, buf: &mut B) -> Result<usize, EncodeError> {
        self.encode_with(max_message_len, buf)
    }

    /// `totalLen` of the uncompressed frame (the frame is 16 bytes longer).
    pub fn encoded_total_len(&self) -> u64 {
        16 + self.service_path.len() as u64
            + self.service_method.len() as u64
            + self.metadata.encoded_len()
            + self.payload.len() as u64
    }

    fn encode_with<B: EncodeBuf>(&self, max: usize, buf: &mut B) -> Result<usize, EncodeError> {
        let header = self.header;
        section_len(Section::Payload, self.payload.len())?;
        let total = self.encoded_total_len();
        if total > max as u64 {
            return Err(EncodeError::MessageTooLong { len: total, max });
        }
        let start = buf.len();
        self.write_prefix_and_sections(max, buf, header)?;
        buf.patch_u32(start + PREFIX_LEN - 4, total as u32);
        buf.put_slice(&self.payload);
        Ok(buf.len() - start)
    }

    /// Write header, a `totalLen` placeholder, path, method, metadata and the payload
    /// length prefix (placeholder = uncompressed length). Returns the `totalLen` without
    /// the payload bytes.
    fn write_prefix_and_sections<B: EncodeBuf>(
        &self,
        max: usize,
        buf: &mut B,
        header: super::Header,
    ) -> Result<usize, EncodeError> {
        let sp = section_len(Section::ServicePath, self.service_path.len())?;
        let sm = section_len(Section::ServiceMethod, self.service_method.len())?;
        let meta_len = self.metadata.encoded_len();
        let meta = u32::try_from(meta_len)
            .map_err(|_| EncodeError::SectionTooLong { section: Section::Metadata, len: meta_len })?;
        let fixed = 16 + u64::from(sp) + u64::from(sm) + u64::from(meta);
        if fixed > max as u64 {
            return Err(EncodeError::MessageTooLong { len: fixed, max });
        }
        let fixed = fixed as usize;
        buf.reserve(PREFIX_LEN + fixed + self.payload.len());
        // Header, totalLen placeholder and the path length in one append.
        let mut prefix = [0u8; PREFIX_LEN + 4];
        prefix[..12].copy_from_slice(&header.to_bytes());
        prefix[16..].copy_from_slice(&sp.to_be_bytes());
        buf.put_slice(&prefix);
        buf.put_slice(&self.service_path);
        buf.put_slice(&sm.to_be_bytes());
        buf.put_slice(&self.service_method);
        buf.put_slice(&meta.to_be_bytes());
        self.metadata.encode_into(buf);
        buf.put_slice(&(self.payload.len() as u32).to_be_bytes());
        Ok(fixed)
    }
}
