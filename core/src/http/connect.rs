//! rpcx over an HTTP CONNECT tunnel (`http@host:port`), as Go's client and server do
//! it: the client writes `CONNECT /_rpcx_ HTTP/1.0\n\n` (line feeds only, as Go), the
//! server answers `HTTP/1.0 200 Connected to rpcx\n\n`, then the connection speaks
//! rpcx. A server of ours takes a CONNECT as the first request on any port that serves
//! HTTP, and keeps bytes the client sends right after it (Go's loses them).

use bytes::Bytes;

/// The path Go's client and server use (`share.DefaultRPCPath`).
pub const DEFAULT_RPC_PATH: &str = "/_rpcx_";

/// The server's answer to a CONNECT on its rpcx path, byte for byte as Go writes it.
pub const CONNECTED: &[u8] = b"HTTP/1.0 200 Connected to rpcx\n\n";

/// Longest answer head a client reads before giving up.
const MAX_REPLY: usize = 4096;

/// The request a client writes: `CONNECT <path> HTTP/1.0\n\n`.
pub fn connect_request(path: &str) -> Bytes {
    Bytes::from(format!("CONNECT {path} HTTP/1.0\n\n"))
}

/// A CONNECT the server did not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server answered, but not `200 Connected to rpcx` (Go's client refuses the
    /// same).
    #[error("unexpected HTTP response to CONNECT: {0}")]
    Refused(String),
    /// The answer is not HTTP, or its head is too long.
    #[error("malformed HTTP response to CONNECT")]
    Malformed,
}

/// The client's side of the handshake: feed it what the server sends until it says the
/// tunnel is up.
#[derive(Debug, Default)]
pub struct ConnectReply {
    head: Vec<u8>,
}

impl ConnectReply {
    /// A new handshake (after [`connect_request`] was written).
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes from the server. `Ok(Some(n))`: the answer ended after `n` bytes of
    /// `data` and the tunnel is up (what follows is rpcx); `Ok(None)`: more is needed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ConnectError> {
        for (i, &b) in data.iter().enumerate() {
            self.head.push(b);
            let h = &self.head;
            let done = h.ends_with(b"\n\n") || h.ends_with(b"\n\r\n");
            if done {
                self.check()?;
                return Ok(Some(i + 1));
            }
            if h.len() > MAX_REPLY {
                return Err(ConnectError::Malformed);
            }
        }
        Ok(None)
    }

    fn check(&self) -> Result<(), ConnectError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(ConnectError::Malformed),
        }
        let code = r.code.unwrap_or(0);
        let reason = r.reason.unwrap_or("");
        if code == 200 && reason == "Connected to rpcx" {
            Ok(())
        } else {
            Err(ConnectError::Refused(format!("{code} {reason}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_bytes_are_gos() {
        // Vectors V14 of the protocol notes.
        assert_eq!(&connect_request(DEFAULT_RPC_PATH)[..], b"CONNECT /_rpcx_ HTTP/1.0\n\n");
        let mut r = ConnectReply::new();
        assert_eq!(r.feed(&CONNECTED[..10]), Ok(None));
        let mut rest = CONNECTED[10..].to_vec();
        rest.extend_from_slice(&[0x08, 1, 2]);
        assert_eq!(r.feed(&rest), Ok(Some(CONNECTED.len() - 10)));
    }

    #[test]
    fn other_answers_are_refused() {
        let mut r = ConnectReply::new();
        assert_eq!(
            r.feed(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"),
            Err(ConnectError::Refused("405 Method Not Allowed".into()))
        );
        assert_eq!(ConnectReply::new().feed(b"\x08\x01garbage\n\n"), Err(ConnectError::Malformed));
        assert_eq!(ConnectReply::new().feed(&[b'a'; 5000]), Err(ConnectError::Malformed));
    }
}
