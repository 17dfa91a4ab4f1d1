//! The 12-byte rpcx header and its enumerations.

use std::fmt;

/// The first byte of every rpcx frame.
pub const MAGIC: u8 = 0x08;

/// Size of the fixed header (magic, version, two flag bytes, seq).
pub const HEADER_LEN: usize = 12;

const TYPE_BIT: u8 = 0x80;
const HEARTBEAT_BIT: u8 = 0x40;
const ONEWAY_BIT: u8 = 0x20;
const COMPRESS_MASK: u8 = 0x1C;
const STATUS_MASK: u8 = 0x03;

/// Whether a frame is a request or a response (bit 7 of byte 2).
///
/// Server push frames are requests (see [`Header::is_server_push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A request (client to server, or a server push).
    Request,
    /// A response to a request with the same seq.
    Response,
}

/// Compression of the payload on the wire (3 bits of byte 2).
///
/// rpcx defines `None = 0` and `Gzip = 1`; values 2..=7 are legal on the wire and are
/// kept as received, so that a registered custom compressor or a precise error can use
/// them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CompressType(u8);

impl CompressType {
    /// No compression.
    pub const NONE: Self = Self(0);
    /// RFC 1952 gzip, as Go's `compress/gzip` writes it.
    pub const GZIP: Self = Self(1);

    /// The compress type with the given 3-bit value, or `None` if `bits > 7`.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits <= 7 { Some(Self(bits)) } else { None }
    }

    /// The 3-bit wire value.
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for CompressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("None"),
            1 => f.write_str("Gzip"),
            n => write!(f, "CompressType({n})"),
        }
    }
}

/// Payload serialization (high nibble of byte 3).
///
/// Values 5..=15 are representable (Go lets users register codecs by number).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SerializeType(u8);

impl SerializeType {
    /// Raw bytes, no serialization (`SerializeNone` in Go).
    pub const NONE: Self = Self(0);
    /// JSON.
    pub const JSON: Self = Self(1);
    /// Protocol Buffers.
    pub const PROTOBUF: Self = Self(2);
    /// MessagePack, structs as maps keyed by field name. The Go client's default.
    pub const MSGPACK: Self = Self(3);
    /// Apache Thrift binary protocol.
    pub const THRIFT: Self = Self(4);

    /// The serialize type with the given 4-bit value, or `None` if `bits > 15`.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits <= 15 { Some(Self(bits)) } else { None }
    }

    /// The 4-bit wire value.
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for SerializeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("None"),
            1 => f.write_str("Json"),
            2 => f.write_str("Protobuf"),
            3 => f.write_str("MsgPack"),
            4 => f.write_str("Thrift"),
            n => write!(f, "SerializeType({n})"),
        }
    }
}

/// Message status (2 bits of byte 2): `Normal = 0`, `Error = 1`; 2 and 3 are unused by
/// Go but kept as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageStatus(u8);

impl MessageStatus {
    /// A normal message.
    pub const NORMAL: Self = Self(0);
    /// An error response; the text travels in metadata `__rpcx_error__`.
    pub const ERROR: Self = Self(1);

    /// The status with the given 2-bit value, or `None` if `bits > 3`.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits <= 3 { Some(Self(bits)) } else { None }
    }

    /// The 2-bit wire value.
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("Normal"),
            1 => f.write_str("Error"),
            n => write!(f, "MessageStatus({n})"),
        }
    }
}

/// The fixed 12-byte header: every bit of it, as received.
///
/// The version byte and the reserved low nibble of byte 3 are kept so that a response
/// can echo them, as Go's server does (it copies the whole request header).
/// Unlike Go's `SetMessageType`, every setter here both sets and clears its bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Header {
    version: u8,
    flags: u8,
    serialize_reserved: u8,
    seq: u64,
}

impl Header {
    /// A request header: version 0, Normal status, no compression, the given serialize
    /// type and seq.
    pub const fn request(serialize: SerializeType, seq: u64) -> Self {
        Self { version: 0, flags: 0, serialize_reserved: serialize.0 << 4, seq }
    }

    /// Parse the 12 header bytes. The magic byte must have been checked already; this
    /// never fails and keeps every bit.
    pub const fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            version: b[1],
            flags: b[2],
            serialize_reserved: b[3],
            seq: u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]),
        }
    }

    /// The 12 header bytes as they go on the wire (magic first).
    pub const fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let s = self.seq.to_be_bytes();
        [MAGIC, self.version, self.flags, self.serialize_reserved, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]
    }

    /// The version byte (Go always sends 0 and never checks it).
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// Set the version byte.
    pub const fn set_version(&mut self, v: u8) {
        self.version = v;
    }

    /// Request or response.
    pub const fn message_type(&self) -> MessageType {
        if self.flags & TYPE_BIT != 0 { MessageType::Response } else { MessageType::Request }
    }

    /// Set (or clear) the response bit.
    pub const fn set_message_type(&mut self, t: MessageType) {
        match t {
            MessageType::Request => self.flags &= !TYPE_BIT,
            MessageType::Response => self.flags |= TYPE_BIT,
        }
    }

    /// The heartbeat bit.
    pub const fn is_heartbeat(&self) -> bool {
        self.flags & HEARTBEAT_BIT != 0
    }

    /// Set or clear the heartbeat bit.
    pub const fn set_heartbeat(&mut self, on: bool) {
        if on { self.flags |= HEARTBEAT_BIT } else { self.flags &= !HEARTBEAT_BIT }
    }

    /// The oneway bit: no response is expected.
    pub const fn is_oneway(&self) -> bool {
        self.flags & ONEWAY_BIT != 0
    }

    /// Set or clear the oneway bit.
    pub const fn set_oneway(&mut self, on: bool) {
        if on { self.flags |= ONEWAY_BIT } else { self.flags &= !ONEWAY_BIT }
    }

    /// How the payload is compressed on the wire.
    pub const fn compress_type(&self) -> CompressType {
        CompressType((self.flags & COMPRESS_MASK) >> 2)
    }

    /// Set the compress field.
    pub const fn set_compress_type(&mut self, c: CompressType) {
        self.flags = (self.flags & !COMPRESS_MASK) | ((c.0 << 2) & COMPRESS_MASK);
    }

    /// The status bits.
    pub const fn status(&self) -> MessageStatus {
        MessageStatus(self.flags & STATUS_MASK)
    }

    /// Set the status bits.
    pub const fn set_status(&mut self, s: MessageStatus) {
        self.flags = (self.flags & !STATUS_MASK) | (s.0 & STATUS_MASK);
    }

    /// How the payload is serialized.
    pub const fn serialize_type(&self) -> SerializeType {
        SerializeType(self.serialize_reserved >> 4)
    }

    /// Set the serialize type (the reserved nibble is kept).
    pub const fn set_serialize_type(&mut self, s: SerializeType) {
        self.serialize_reserved = (self.serialize_reserved & 0x0F) | (s.0 << 4);
    }

    /// The reserved low nibble of byte 3 (Go sends 0, never reads it, echoes it).
    pub const fn reserved(&self) -> u8 {
        self.serialize_reserved & 0x0F
    }

    /// Set the reserved nibble (only the low 4 bits of `r` are used).
    pub const fn set_reserved(&mut self, r: u8) {
        self.serialize_reserved = (self.serialize_reserved & 0xF0) | (r & 0x0F);
    }

    /// The sequence number that matches a response to its request.
    pub const fn seq(&self) -> u64 {
        self.seq
    }

    /// Set the sequence number.
    pub const fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// rpcx's server-push rule: a Request with the oneway bit and without the heartbeat
    /// bit. Go clients recognise pushes by exactly this, so a server must set it.
    pub const fn is_server_push(&self) -> bool {
        matches!(self.message_type(), MessageType::Request) && self.is_oneway() && !self.is_heartbeat()
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("version", &self.version)
            .field("type", &self.message_type())
            .field("heartbeat", &self.is_heartbeat())
            .field("oneway", &self.is_oneway())
            .field("compress", &self.compress_type())
            .field("status", &self.status())
            .field("serialize", &self.serialize_type())
            .field("reserved", &self.reserved())
            .field("seq", &self.seq)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_round_trips() {
        for b2 in 0..=255u8 {
            for b3 in [0u8, 0x0F, 0x30, 0xF5, 0xFF] {
                let bytes = [MAGIC, 7, b2, b3, 1, 2, 3, 4, 5, 6, 7, 8];
                let h = Header::from_bytes(&bytes);
                assert_eq!(h.to_bytes(), bytes);
            }
        }
    }

    #[test]
    fn go_example_header_bits() {
        // Response + heartbeat + oneway + gzip + Error + Thrift = 08 00 e5 40 (spec 1.2).
        let mut h = Header::request(SerializeType::THRIFT, 0);
        h.set_message_type(MessageType::Response);
        h.set_heartbeat(true);
        h.set_oneway(true);
        h.set_compress_type(CompressType::GZIP);
        h.set_status(MessageStatus::ERROR);
        assert_eq!(&h.to_bytes()[..4], &[0x08, 0x00, 0xe5, 0x40]);
    }

    #[test]
    fn setters_clear_as_well_as_set() {
        let mut h = Header::from_bytes(&[MAGIC, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.set_message_type(MessageType::Request);
        h.set_heartbeat(false);
        h.set_oneway(false);
        h.set_compress_type(CompressType::NONE);
        h.set_status(MessageStatus::NORMAL);
        h.set_serialize_type(SerializeType::NONE);
        assert_eq!(h.to_bytes()[2], 0);
        assert_eq!(h.to_bytes()[3], 0x0F, "reserved nibble is kept");
    }
}
