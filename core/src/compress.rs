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

    /// An incremental decompression of `input`, for callers that must bound the work
    /// done at once (a server inflates a large payload in steps, between which other
    /// connections run). The default decompresses everything at once, in this call;
    /// [`Gzip`] streams.
    fn inflater(&self, input: Bytes, limit: usize) -> Box<dyn Inflate> {
        Box::new(Done(Some(self.decompress(&input, limit))))
    }
}

/// A decompression in progress (see [`Compressor::inflater`]).
pub trait Inflate: Send {
    /// Produce up to about `max_out` more bytes. `Ok(true)` once the output is complete
    /// (then call [`finish`](Self::finish)).
    fn step(&mut self, max_out: usize) -> Result<bool, DecompressError>;

    /// Bytes of memory the output holds so far (its allocation).
    fn held(&self) -> usize;

    /// The output, once [`step`](Self::step) returned `Ok(true)`.
    fn finish(self: Box<Self>) -> Bytes;
}

/// An [`Inflate`] whose work was done up front.
struct Done(Option<Result<Vec<u8>, DecompressError>>);

impl Inflate for Done {
    fn step(&mut self, _max_out: usize) -> Result<bool, DecompressError> {
        match &self.0 {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(true),
        }
    }

    fn held(&self) -> usize {
        match &self.0 {
            Some(Ok(v)) => v.capacity(),
            _ => 0,
        }
    }

    fn finish(self: Box<Self>) -> Bytes {
        match self.0 {
            Some(Ok(v)) => Bytes::from(v),
            _ => Bytes::new(),
        }
    }
}

/// gzip, streamed (see [`Gzip::inflater`]).
struct GzipInflate {
    dec: flate2::bufread::MultiGzDecoder<bytes::buf::Reader<Bytes>>,
    out: Vec<u8>,
    limit: usize,
    empty: bool,
}

impl Inflate for GzipInflate {
    fn step(&mut self, max_out: usize) -> Result<bool, DecompressError> {
        if self.empty {
            return Err(DecompressError::Empty);
        }
        // Read at most limit + 1 bytes in all: one byte past the limit proves the bomb.
        let room = self.limit.saturating_add(1).saturating_sub(self.out.len());
        let want = max_out.max(1).min(room);
        let before = self.out.len();
        (&mut self.dec)
            .take(want as u64)
            .read_to_end(&mut self.out)
            .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
        if self.out.len() > self.limit {
            return Err(DecompressError::TooLarge { limit: self.limit });
        }
        Ok(self.out.len() - before < want)
    }

    fn held(&self) -> usize {
        self.out.capacity()
    }

    fn finish(self: Box<Self>) -> Bytes {
        Bytes::from(self.out)
    }
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

/// Deflate states kept for reuse: a fresh one is about 300 KiB to allocate and zero,
/// which costs more than compressing a small payload. A few are kept process-wide (not
/// per thread: the std server has a thread per connection).
static DEFLATE_POOL: std::sync::Mutex<Vec<(u32, flate2::Compress)>> = std::sync::Mutex::new(Vec::new());
/// At most this many deflate states are kept.
const DEFLATE_POOL_MAX: usize = 8;

fn take_deflate(level: u32) -> flate2::Compress {
    let mut pool = DEFLATE_POOL.lock().unwrap_or_else(|p| p.into_inner());
    match pool.iter().rposition(|(l, _)| *l == level) {
        Some(i) => pool.swap_remove(i).1,
        None => flate2::Compress::new(flate2::Compression::new(level), false),
    }
}

fn give_deflate(level: u32, mut c: flate2::Compress) {
    c.reset();
    let mut pool = DEFLATE_POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < DEFLATE_POOL_MAX {
        pool.push((level, c));
    }
}

impl Gzip {
    /// The gzip header flate2's `GzEncoder` writes (and Go's `compress/gzip`, but for
    /// its extra-flags byte): no name, mtime 0, XFL 2 for the best level and 4 for the
    /// fastest, OS 255 (unknown).
    fn header(level: u32) -> [u8; 10] {
        let xfl = if level >= 9 {
            2
        } else if level <= 1 {
            4
        } else {
            0
        };
        [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
    }
}

impl Compressor for Gzip {
    fn compress(&self, input: &[u8], out: &mut dyn Write) -> Result<(), CompressError> {
        let failed = |e: &dyn std::fmt::Display| CompressError::Failed(e.to_string());
        let level = self.level.unwrap_or(flate2::Compression::default().level());
        let mut deflate = take_deflate(level);
        out.write_all(&Self::header(level)).map_err(|e| failed(&e))?;
        let mut buf = [0u8; 8 << 10];
        let mut rest = input;
        loop {
            let (in0, out0) = (deflate.total_in(), deflate.total_out());
            let status = deflate.compress(rest, &mut buf, flate2::FlushCompress::Finish).map_err(|e| failed(&e))?;
            let used = usize::try_from(deflate.total_in() - in0).unwrap_or(rest.len());
            let made = usize::try_from(deflate.total_out() - out0).unwrap_or(0);
            rest = &rest[used.min(rest.len())..];
            out.write_all(&buf[..made]).map_err(|e| failed(&e))?;
            match status {
                flate2::Status::StreamEnd => break,
                flate2::Status::Ok => {}
                flate2::Status::BufError if made == 0 && used == 0 => {
                    return Err(CompressError::Failed("deflate made no progress".into()));
                }
                flate2::Status::BufError => {}
            }
        }
        give_deflate(level, deflate);
        let mut crc = flate2::Crc::new();
        crc.update(input);
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.sum().to_le_bytes());
        // ISIZE: the input length modulo 2^32.
        trailer[4..].copy_from_slice(&(input.len() as u32).to_le_bytes());
        out.write_all(&trailer).map_err(|e| failed(&e))?;
        Ok(())
    }

    fn decompress(&self, input: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        if input.is_empty() {
            return Err(DecompressError::Empty);
        }
        let dec = flate2::bufread::MultiGzDecoder::new(input);
        // Read at most limit + 1 bytes: one byte past the limit proves the bomb.
        let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit).min(1 << 20));
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        dec.take(cap).read_to_end(&mut out).map_err(|e| DecompressError::Corrupt(e.to_string()))?;
        if out.len() > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        Ok(out)
    }

    fn inflater(&self, input: Bytes, limit: usize) -> Box<dyn Inflate> {
        use bytes::Buf;
        let empty = input.is_empty();
        let out = Vec::with_capacity(input.len().saturating_mul(4).min(limit).min(64 << 10));
        Box::new(GzipInflate { dec: flate2::bufread::MultiGzDecoder::new(input.reader()), out, limit, empty })
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
    fn gzip_inflates_in_steps_like_at_once() {
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut z = Vec::new();
        Gzip::default().compress(&data, &mut z).unwrap();
        let z = Bytes::from(z);
        let mut inf = Gzip::default().inflater(z.clone(), 3 << 20);
        let mut steps = 0;
        while !inf.step(256 << 10).unwrap() {
            steps += 1;
            assert!(inf.held() <= 8 << 20);
        }
        assert!(steps >= 11, "{steps} steps");
        assert_eq!(inf.finish(), Bytes::from(data));
        // The limit and a bomb, in steps.
        let mut inf = Gzip::default().inflater(z, (3 << 20) - 1);
        let err = loop {
            match inf.step(1 << 20) {
                Ok(false) => continue,
                Ok(true) => panic!("over the limit"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, DecompressError::TooLarge { limit: (3 << 20) - 1 });
        assert!(Gzip::default().inflater(Bytes::new(), 10).step(10).is_err());
        assert!(Gzip::default().inflater(Bytes::from_static(b"not gzip"), 10).step(10).is_err());
    }

    #[test]
    fn gzip_writes_what_flate2s_encoder_writes_at_every_level() {
        let inputs: [Vec<u8>; 4] =
            [Vec::new(), b"hello".to_vec(), vec![0u8; 100_000], (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect()];
        for level in 0..=9 {
            for input in &inputs {
                let mut ours = Vec::new();
                Gzip::with_level(level).compress(input, &mut ours).expect("compress");
                let mut theirs = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                theirs.write_all(input).expect("write");
                let theirs = theirs.finish().expect("finish");
                assert_eq!(ours[..10], theirs[..10], "header at level {level}");
                assert_eq!(ours[ours.len() - 8..], theirs[theirs.len() - 8..], "trailer at level {level}");
                assert_eq!(Gzip::default().decompress(&ours, input.len()).expect("inflate"), *input);
            }
        }
        // A reused state (from the pool) gives the same bytes as a fresh one.
        let mut a = Vec::new();
        let mut b = Vec::new();
        Gzip::default().compress(&inputs[3], &mut a).expect("compress");
        Gzip::default().compress(&inputs[3], &mut b).expect("compress");
        assert_eq!(a, b);
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
