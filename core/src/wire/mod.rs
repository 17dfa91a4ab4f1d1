//! The rpcx wire format: header, message, encoder and incremental decoder.
//!
//! A frame is a 12-byte [`Header`], a `u32` total length, then four length-prefixed
//! sections (service path, service method, metadata, payload), all big-endian.
//! See `docs/protocol.md` (in the repository) section 1 for the byte layout.

mod decode;
mod encode;
mod header;
mod metadata;
mod names;

pub use decode::{DecodeError, DecoderConfig, FrameDecoder, Section, StreamDecoder};
pub use encode::{EncodeBuf, EncodeError, EncoderConfig};
pub use header::{CompressType, HEADER_LEN, Header, MAGIC, MessageStatus, MessageType, SerializeType};
pub use metadata::{AUTH_KEY, Metadata, SERVER_TIMEOUT_KEY, SERVICE_ERROR_KEY};
pub use names::{KnownNames, MAX_LEARNED_NAME_LEN, MAX_LEARNED_NAMES};

use bytes::Bytes;

/// Default cap on a frame's `totalLen` (the bytes after the 16-byte prefix): 32 MiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 32 << 20;

/// Default cap on the number of metadata pairs in one frame.
pub const DEFAULT_MAX_METADATA_PAIRS: usize = 4096;

/// Bytes before the sections: header plus `totalLen`.
pub const PREFIX_LEN: usize = HEADER_LEN + 4;

/// One rpcx message.
///
/// Path, method, metadata and payload are [`Bytes`]; a decoded message's fields are
/// zero-copy slices of the received frame (or static, for a path or method in the
/// decoder's [`KnownNames`]). The payload is the *plain* payload: the
/// decoder decompresses it (and keeps the compress bits in the header, so a server knows
/// the request was compressed), and the encoder compresses it according to the header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Every header bit.
    pub header: Header,
    /// Service path (service name), raw bytes on the wire.
    pub service_path: Bytes,
    /// Service method, raw bytes on the wire.
    pub service_method: Bytes,
    /// Metadata pairs.
    pub metadata: Metadata,
    /// Plain (decompressed) payload.
    pub payload: Bytes,
}

impl Message {
    /// A request with the given header fields; everything else empty.
    pub fn request(
        serialize: SerializeType,
        seq: u64,
        service_path: impl Into<Bytes>,
        service_method: impl Into<Bytes>,
    ) -> Self {
        Self {
            header: Header::request(serialize, seq),
            service_path: service_path.into(),
            service_method: service_method.into(),
            metadata: Metadata::new(),
            payload: Bytes::new(),
        }
    }

    /// The service path as UTF-8; `Err` if the peer sent other bytes.
    pub fn service_path_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.service_path)
    }

    /// The service method as UTF-8; `Err` if the peer sent other bytes.
    pub fn service_method_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.service_method)
    }

    /// The error text of an Error response (`__rpcx_error__`), if any, lossily decoded.
    pub fn error_text(&self) -> Option<String> {
        self.metadata.get(SERVICE_ERROR_KEY).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}
