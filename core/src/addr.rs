//! rpcx server addresses: `network@address`, where no `@` means `tcp`
//! (`tcp@127.0.0.1:8972`, `127.0.0.1:8972`, `unix@/tmp/rpcx.sock`, `memu@name`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parsed server address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    /// TCP (`tcp`, `tcp4`, `tcp6`): `host:port`.
    Tcp(String),
    /// A unix domain socket path.
    Unix(PathBuf),
    /// An in-process server name (`memu@name`, see [`crate::memu`]).
    Memory(String),
    /// rpcx through an HTTP CONNECT tunnel (`http@host:port`): TCP (and TLS when
    /// configured), then `CONNECT /_rpcx_` before the first frame. A server bound to
    /// an `http@` address serves what a `tcp@` one does (CONNECT included).
    Http(String),
    /// rpcx over WebSocket (`ws@host:port`): an upgrade at `/_rpcx_`, then WebSocket
    /// frames. A server bound to it serves what a `tcp@` one does.
    Ws(String),
    /// rpcx over WebSocket over TLS (`wss@host:port`): needs the client's TLS settings.
    Wss(String),
}

/// An address that could not be parsed or names a network we do not speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The network before `@` is not supported (quic, kcp, http, ws, ...).
    #[error("unsupported network {0:?} (supported: tcp, tcp4, tcp6, http, ws, wss, unix, memu)")]
    UnsupportedNetwork(String),
    /// Nothing after the `@`.
    #[error("empty address")]
    Empty,
}

impl FromStr for ServerAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (network, addr) = s.split_once('@').unwrap_or(("tcp", s));
        if addr.is_empty() {
            return Err(AddrError::Empty);
        }
        match network {
            "tcp" | "tcp4" | "tcp6" => Ok(ServerAddr::Tcp(addr.to_owned())),
            "unix" => Ok(ServerAddr::Unix(PathBuf::from(addr))),
            "memu" => Ok(ServerAddr::Memory(addr.to_owned())),
            "http" => Ok(ServerAddr::Http(addr.to_owned())),
            "ws" => Ok(ServerAddr::Ws(addr.to_owned())),
            "wss" => Ok(ServerAddr::Wss(addr.to_owned())),
            other => Err(AddrError::UnsupportedNetwork(other.to_owned())),
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp(a) => write!(f, "tcp@{a}"),
            ServerAddr::Unix(p) => write!(f, "unix@{}", p.display()),
            ServerAddr::Memory(n) => write!(f, "memu@{n}"),
            ServerAddr::Http(a) => write!(f, "http@{a}"),
            ServerAddr::Ws(a) => write!(f, "ws@{a}"),
            ServerAddr::Wss(a) => write!(f, "wss@{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rpcx_addresses() {
        assert_eq!("127.0.0.1:8972".parse(), Ok(ServerAddr::Tcp("127.0.0.1:8972".into())));
        assert_eq!("tcp@localhost:1".parse(), Ok(ServerAddr::Tcp("localhost:1".into())));
        assert_eq!("unix@/tmp/x.sock".parse(), Ok(ServerAddr::Unix("/tmp/x.sock".into())));
        assert_eq!("memu@svc".parse(), Ok(ServerAddr::Memory("svc".into())));
        assert_eq!("quic@h:1".parse::<ServerAddr>(), Err(AddrError::UnsupportedNetwork("quic".into())));
        assert_eq!("tcp@".parse::<ServerAddr>(), Err(AddrError::Empty));
        assert_eq!(ServerAddr::Tcp("a:1".into()).to_string(), "tcp@a:1");
    }
}
