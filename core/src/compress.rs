//! Payload compression: gzip via flate2, a registry of compressors by wire number, and
//! rpcx's "compress only above 1024 bytes" rule.
//!
//! Decompression is always bounded: a payload that inflates beyond the limit is a
//! [`DecompressError::TooLarge`], never an unbounded allocation (Go before #943 had no
//! such cap).

use crate::wire::CompressType;
use bytes::Bytes;
use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

/// rpcx compresses a payload only when it is strictly longer than this many bytes
/// (both Go's client and server use 1024).
pub const COMPRESS_THRESHOLD: usize = 1024;

/// The compress type rpcx would put on the wire for a payload of `payload_len` bytes
/// when `preferred` is configured: `preferred` only for payloads over
/// [`COMPRESS_THRESHOLD`], [`CompressType::NONE`] otherwise (an empty payload is never
/// flagged, since Go's decoder takes a flagged empty payload as end of stream).
pub fn choose(preferred: CompressType, payload_len: usize) -> CompressType {
    if preferred != CompressType::NONE && payload_len > COMPRESS_THRESHOLD { preferred } else { CompressType::NONE }
}

/// Why a payload could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The header names a compress type with no registered compressor.
    #[error("unsupported compressor {0}")]
    Unsupported(u8),
    /// The compressed payload is empty (Go reads this as end of stream).
    #[error("compressed payload is empty")]
    Empty,
    /// The payload inflates beyond the configured limit.
    #[error("decompressed payload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The compressed stream is corrupt.
    #[error("corrupt compressed payload: {0}")]
    Corrupt(String),
}

/// Why a payload could not be compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The header names a compress type with no registered compressor.
    #[error("unsupported compressor {0}")]
    Unsupported(u8),
    /// The compressor failed.
    #[error("compression failed: {0}")]
    Failed(String),
}

/// A payload compressor registered under a wire number (see [`Compressors`]).
pub trait Compressor: Send + Sync + fmt::Debug {
    /// Write the compressed form of `input` to `out` (the encoder streams straight into
    /// the frame buffer, so no intermediate copy is made).
    fn compress(&self, input: &[u8], out: &mut dyn Write) -> Result<(), CompressError>;

    /// Decompress `input`, failing with [`DecompressError::TooLarge`] as soon as the
    /// output would exceed `limit` bytes.
    fn decompress(&self, input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError>;
}

/// gzip (RFC 1952), compatible with Go's `compress/gzip` (multi-member streams accepted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gzip {
    level: Option<u32>,
}

impl Gzip {
    /// gzip at the given level (0..=9); the default is flate2's default level (6), which
    /// is also Go's default.
    pub fn with_level(level: u32) -> Self {
        Self { level: Some(level.min(9)) }
    }
}

impl Compressor for Gzip {
    fn compress(&self, input: &[u8], out: &mut dyn Write) -> Result<(), CompressError> {
        let level = self.level.map(flate2::Compression::new).unwrap_or_default();
        let mut enc = flate2::write::GzEncoder::new(out, level);
        enc.write_all(input).map_err(|e| CompressError::Failed(e.to_string()))?;
        enc.finish().map_err(|e| CompressError::Failed(e.to_string()))?;
        Ok(())
    }

    fn decompress(&self, input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        if input.is_empty() {
            return Err(DecompressError::Empty);
        }
        let dec = flate2::read::MultiGzDecoder::new(input);
        // Read at most limit + 1 bytes: one byte past the limit proves the bomb.
        let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit).min(1 << 20));
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        dec.take(cap).read_to_end(&mut out).map_err(|e| DecompressError::Corrupt(e.to_string()))?;
        if out.len() > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        Ok(out)
    }
}

/// Compressors by wire number (0..=7). Number 0 is "none" and cannot be replaced;
/// [`Compressors::default`] registers [`Gzip`] as 1. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Compressors {
    table: [Option<Arc<dyn Compressor>>; 8],
}

impl Default for Compressors {
    fn default() -> Self {
        let mut c = Self::empty();
        c.table[1] = Some(Arc::new(Gzip::default()));
        c
    }
}

impl Compressors {
    /// A registry that knows only "none".
    pub fn empty() -> Self {
        Self { table: Default::default() }
    }

    /// Register `c` under `ty`. Registering [`CompressType::NONE`] is ignored.
    pub fn register(&mut self, ty: CompressType, c: Arc<dyn Compressor>) -> &mut Self {
        if ty != CompressType::NONE {
            self.table[usize::from(ty.bits())] = Some(c);
        }
        self
    }

    /// Whether `ty` can be used (NONE always can).
    pub fn supports(&self, ty: CompressType) -> bool {
        ty == CompressType::NONE || self.table[usize::from(ty.bits())].is_some()
    }

    /// The compressor for `ty`, if registered (never for NONE).
    pub fn get(&self, ty: CompressType) -> Option<&Arc<dyn Compressor>> {
        self.table[usize::from(ty.bits())].as_ref()
    }

    /// Decompress a payload that arrived with compress type `ty` (NONE returns it as is).
    pub fn decompress(&self, ty: CompressType, payload: Bytes, limit: usize) -> Result<Bytes, DecompressError> {
        if ty == CompressType::NONE {
            return Ok(payload);
        }
        let c = self.get(ty).ok_or(DecompressError::Unsupported(ty.bits()))?;
        c.decompress(&payload, limit).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_rule() {
        assert_eq!(choose(CompressType::GZIP, 0), CompressType::NONE);
        assert_eq!(choose(CompressType::GZIP, 1024), CompressType::NONE);
        assert_eq!(choose(CompressType::GZIP, 1025), CompressType::GZIP);
        assert_eq!(choose(CompressType::NONE, 5000), CompressType::NONE);
    }

    #[test]
    fn gzip_round_trip_and_bomb() {
        let data = vec![b'A'; 1 << 20];
        let mut z = Vec::new();
        Gzip::default().compress(&data, &mut z).unwrap();
        assert!(z.len() < 4096);
        assert_eq!(Gzip::default().decompress(&z, 1 << 20).unwrap(), data);
        assert_eq!(
            Gzip::default().decompress(&z, (1 << 20) - 1),
            Err(DecompressError::TooLarge { limit: (1 << 20) - 1 })
        );
    }

    #[test]
    fn corrupt_and_empty_are_typed() {
        assert_eq!(Gzip::default().decompress(&[], 10), Err(DecompressError::Empty));
        assert!(matches!(Gzip::default().decompress(b"not gzip", 10), Err(DecompressError::Corrupt(_))));
        let reg = Compressors::default();
        assert_eq!(
            reg.decompress(CompressType::from_bits(5).unwrap(), Bytes::from_static(b"x"), 10),
            Err(DecompressError::Unsupported(5))
        );
    }
}
