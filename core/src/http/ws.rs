//! rpcx over WebSocket (`ws@host:port`, `wss@host:port`), as Go's client and server do
//! it: an HTTP/1.1 upgrade at the rpcx path (`/_rpcx_`), then the WebSocket messages
//! carry the rpcx byte stream (message boundaries mean nothing). Written by hand, in
//! the connection machines, because Go's client sends its binary bytes in **text**
//! frames, which a strict WebSocket library refuses as invalid UTF-8.
//!
//! Both sides: data frames (text, binary, continuation) feed the rpcx decoder; a ping
//! is answered with a pong; a close is answered and ends the connection. The server
//! sends binary frames, unmasked; the client masks every frame (RFC 6455), with keys
//! drawn from a seed its runtime gives ([`WsFraming::client`]: the machines draw no
//! randomness of their own).

use crate::wire::EncodeBuf;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A fresh 64-bit seed for a client's mask keys and handshake key, from std's
/// randomly keyed hasher (the operating system's randomness): for runtimes, which pass
/// it to [`ClientConfig::websocket`](crate::conn::ClientConfig::websocket).
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7270_6378);
    h.finish()
}

/// The `Sec-WebSocket-Key` a client derives from its seed.
pub fn key_from_seed(seed: u64) -> String {
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&seed.to_le_bytes());
    random[8..].copy_from_slice(&seed.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    client_key(random)
}

/// The `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A `Sec-WebSocket-Key` from 16 bytes of the caller's randomness.
pub fn client_key(random: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(random)
}

/// The upgrade request a client writes for `host` (`host:port`), `path` and `key`; the
/// `Origin` is `http://host` (`https://` with `tls`), as Go's client sends it (Go's
/// server refuses a handshake without one).
pub fn upgrade_request(host: &str, path: &str, key: &str, tls: bool) -> Bytes {
    let scheme = if tls { "https" } else { "http" };
    Bytes::from(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {scheme}://{host}\r\n\r\n"
    ))
}

/// Why a WebSocket handshake or stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The server did not switch protocols (its status line is kept).
    #[error("WebSocket upgrade refused: {0}")]
    Refused(String),
    /// The server's `Sec-WebSocket-Accept` does not match the key sent.
    #[error("WebSocket upgrade answered with the wrong Sec-WebSocket-Accept")]
    BadAccept,
    /// The answer to the upgrade is not HTTP, or too long.
    #[error("malformed WebSocket upgrade response")]
    Malformed,
    /// A frame breaks RFC 6455 (reserved bits, an unknown opcode, a fragmented or long
    /// control frame).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A frame is longer than the limit.
    #[error("WebSocket frame of {len} bytes over the {max}-byte limit")]
    TooLarge {
        /// The frame's payload length.
        len: u64,
        /// The limit.
        max: usize,
    },
}

/// The client's side of the upgrade: feed what the server sends until the connection
/// is a WebSocket.
#[derive(Debug)]
pub struct UpgradeReply {
    head: Vec<u8>,
    expect: String,
}

impl UpgradeReply {
    /// A handshake for the key sent.
    pub fn new(key: &str) -> Self {
        Self { head: Vec::new(), expect: accept_key(key.as_bytes()) }
    }

    /// Bytes from the server: `Ok(Some(n))` once the answer ended after `n` bytes of
    /// `data` (what follows is WebSocket frames); `Ok(None)`: more is needed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, WsError> {
        for (i, &b) in data.iter().enumerate() {
            self.head.push(b);
            if self.head.ends_with(b"\r\n\r\n") || self.head.ends_with(b"\n\n") {
                self.check()?;
                return Ok(Some(i + 1));
            }
            if self.head.len() > 8192 {
                return Err(WsError::Malformed);
            }
        }
        Ok(None)
    }

    fn check(&self) -> Result<(), WsError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(WsError::Malformed),
        }
        if r.code != Some(101) {
            return Err(WsError::Refused(format!("{} {}", r.code.unwrap_or(0), r.reason.unwrap_or(""))));
        }
        let accept = r.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
        match accept {
            Some(h) if h.value == self.expect.as_bytes() => Ok(()),
            _ => Err(WsError::BadAccept),
        }
    }
}

/// Most control-frame bytes (pongs) queued unsent: a peer that pings without reading
/// the answers is closed instead of growing the queue.
const MAX_CONTROL: usize = 16 << 10;

const OP_CONT: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// What arrived in the frames fed so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Data (of any data frame): the next bytes of the rpcx stream.
    Data(Bytes),
    /// The peer closed the WebSocket (our close frame is queued).
    Closed,
}

/// A frame header: FIN, opcode, whether masked, payload length, and the header's length
/// before the mask key.
struct FrameHead {
    fin: bool,
    opcode: u8,
    masked: bool,
    len: usize,
    at: usize,
}

/// Framing of one connection's bytes as WebSocket frames, both ways.
#[derive(Debug)]
pub(crate) struct WsFraming {
    buf: BytesMut,
    /// Client: the state of the mask generator (`None` on a server: frames unmasked).
    mask: Option<u64>,
    /// Control frames to send (pongs, our close), before any data.
    control: Vec<u8>,
    /// A close was received or sent.
    closed: bool,
    max_frame: usize,
}

impl WsFraming {
    /// A server's framing; frames longer than `max_frame` are an error.
    pub(crate) fn server(max_frame: usize) -> Self {
        Self { buf: BytesMut::new(), mask: None, control: Vec::new(), closed: false, max_frame }
    }

    /// A client's framing, masking with keys drawn from `seed`.
    pub(crate) fn client(max_frame: usize, seed: u64) -> Self {
        Self { mask: Some(seed | 1), ..Self::server(max_frame) }
    }

    /// Bytes held (part of a frame).
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next data or the end, from the frames fed. Pings are answered on the way.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            if self.closed {
                return Ok(Some(Incoming::Closed));
            }
            let Some(FrameHead { fin, opcode, masked, len, at }) = self.parse_header()? else { return Ok(None) };
            let total = at + if masked { 4 } else { 0 } + len;
            if self.buf.len() < total {
                return Ok(None);
            }
            let key = masked.then(|| [self.buf[at], self.buf[at + 1], self.buf[at + 2], self.buf[at + 3]]);
            self.buf.advance(at + if masked { 4 } else { 0 });
            let mut payload = self.buf.split_to(len);
            if let Some(key) = key {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= key[i & 3];
                }
            }
            match opcode {
                OP_CONT | OP_TEXT | OP_BINARY => {
                    if !payload.is_empty() {
                        return Ok(Some(Incoming::Data(payload.freeze())));
                    }
                }
                OP_PING => {
                    if !fin {
                        return Err(WsError::Protocol("fragmented control frame"));
                    }
                    if self.control.len() > MAX_CONTROL {
                        return Err(WsError::Protocol("pings arrive faster than their pongs are taken"));
                    }
                    let mut pong = std::mem::take(&mut self.control);
                    self.encode(OP_PONG, &payload, &mut pong);
                    self.control = pong;
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let mut close = std::mem::take(&mut self.control);
                    // Echo the status code, as RFC 6455 asks.
                    let code = payload.get(..2).map(<[u8]>::to_vec).unwrap_or_default();
                    self.encode(OP_CLOSE, &code, &mut close);
                    self.control = close;
                    self.closed = true;
                }
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
        }
    }

    /// The header at the front of the buffer.
    fn parse_header(&self) -> Result<Option<FrameHead>, WsError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        if rsv != 0 {
            return Err(WsError::Protocol("reserved bits set (no extension was agreed)"));
        }
        let masked = b[1] & 0x80 != 0;
        let (len, at) = match b[1] & 0x7f {
            126 => {
                let Some(l) = b.get(2..4) else { return Ok(None) };
                (u64::from(u16::from_be_bytes([l[0], l[1]])), 4)
            }
            127 => {
                let Some(l) = b.get(2..10) else { return Ok(None) };
                (u64::from_be_bytes(l.try_into().expect("8 bytes")), 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode >= 8 && len > 125 {
            return Err(WsError::Protocol("control frame over 125 bytes"));
        }
        if len > self.max_frame as u64 {
            return Err(WsError::TooLarge { len, max: self.max_frame });
        }
        Ok(Some(FrameHead { fin, opcode, masked, len: len as usize, at }))
    }

    /// Bytes to send as they are before anything else (the server's 101 answer).
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.control.extend_from_slice(bytes);
    }

    /// Queued control frames (pongs, a close), taken.
    pub(crate) fn take_control(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.control)
    }

    /// `payload` as one binary frame appended to `out`.
    pub(crate) fn wrap<B: EncodeBuf>(&mut self, payload: &[u8], out: &mut B) {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        self.encode(OP_BINARY, payload, &mut frame);
        out.put_slice(&frame);
    }

    fn encode(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(0x80 | opcode);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match self.next_mask() {
            None => out.extend_from_slice(payload),
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
            }
        }
    }

    /// The next mask key (xorshift64* over the seed), for a client.
    fn next_mask(&mut self) -> Option<[u8; 4]> {
        let s = self.mask.as_mut()?;
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        Some(((v >> 32) as u32).to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455s() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn frames_round_trip_masked_and_split_anywhere() {
        let mut client = WsFraming::client(1 << 20, 7);
        let mut wire = Vec::new();
        for n in [0usize, 5, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            client.wrap(&payload, &mut wire);
        }
        // A text frame with non-UTF-8 bytes, as Go's client sends them.
        wire.extend_from_slice(&[0x81, 0x02, 0xff, 0xfe]);
        for step in [1, 3, 1000, wire.len()] {
            let mut server = WsFraming::server(1 << 20);
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                server.feed(chunk);
                while let Some(Incoming::Data(d)) = server.next().expect("valid frames") {
                    got.extend_from_slice(&d);
                }
            }
            let want: Vec<u8> = [0usize, 5, 125, 126, 65535, 65536, 70000]
                .iter()
                .flat_map(|&n| (0..n).map(|i| i as u8))
                .chain([0xff, 0xfe])
                .collect();
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn pings_are_answered_and_close_ends() {
        let mut server = WsFraming::server(1024);
        server.feed(&[0x89, 0x01, b'x', 0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(server.next(), Ok(Some(Incoming::Closed)));
        assert_eq!(server.take_control(), vec![0x8a, 0x01, b'x', 0x88, 0x02, 0x03, 0xe8]);
    }

    #[test]
    fn a_peer_that_pings_without_reading_is_refused() {
        let mut server = WsFraming::server(1024);
        let ping = [0x89, 0x7d].iter().copied().chain([b'p'; 125]).collect::<Vec<u8>>();
        let mut result = Ok(None);
        for _ in 0..1000 {
            server.feed(&ping);
            result = server.next();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(WsError::Protocol("pings arrive faster than their pongs are taken")));
        assert!(server.take_control().len() <= MAX_CONTROL + 127);
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        let err = |bytes: &[u8]| {
            let mut s = WsFraming::server(1024);
            s.feed(bytes);
            s.next().unwrap_err()
        };
        assert_eq!(err(&[0xc2, 0x00]), WsError::Protocol("reserved bits set (no extension was agreed)"));
        assert_eq!(err(&[0x83, 0x00]), WsError::Protocol("unknown opcode"));
        assert_eq!(err(&[0x89, 0x7e, 0x00, 0x7e]), WsError::Protocol("control frame over 125 bytes"));
        assert_eq!(err(&[0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0]), WsError::TooLarge { len: 1 << 32, max: 1024 });
    }

    #[test]
    fn the_upgrade_answer_is_checked() {
        let key = client_key([1; 16]);
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n\x02",
            accept_key(key.as_bytes())
        );
        assert_eq!(UpgradeReply::new(&key).feed(ok.as_bytes()), Ok(Some(ok.len() - 1)));
        let wrong = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(UpgradeReply::new(&key).feed(wrong.as_bytes()), Err(WsError::BadAccept));
        let refused = "HTTP/1.1 403 Forbidden\r\n\r\n";
        assert_eq!(UpgradeReply::new(&key).feed(refused.as_bytes()), Err(WsError::Refused("403 Forbidden".into())));
    }
}
