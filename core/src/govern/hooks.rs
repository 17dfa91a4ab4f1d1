//! What a bidirectional XClient yields. (The client hooks are [`crate::conn::ClientHooks`].)

use super::discovery::ServerKey;

/// What a bidirectional XClient's push receiver yields: server pushes from every
/// server it is connected to, tagged with the server, and the end of each connection
/// (Go's bidirectional XClient delivers only the messages).
#[derive(Debug, Clone, PartialEq)]
pub enum XPush {
    /// A server push.
    Message {
        /// The server that sent it.
        server: ServerKey,
        /// The push (a oneway request frame from the server).
        message: crate::wire::Message,
    },
    /// The connection to `server` ended; pushes from it resume after the next dial.
    ConnectionLost {
        /// The server whose connection ended.
        server: ServerKey,
    },
}

/// Capacity of a bidirectional XClient's push queue; when it is full, further pushes
/// are dropped and counted (connection-lost signals are never dropped).
pub const XPUSH_CAPACITY: usize = 1024;
