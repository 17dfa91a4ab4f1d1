//! Client-side hooks (Go's client plugins) for the multi-server client.

use super::discovery::ServerKey;

/// Hooks around an `XClient`'s calls. Every method has a no-op default. They run inside
/// the [`Governor`](super::Governor)'s steps, on the caller's task and under whatever
/// lock the runtime keeps the governor in: they must not block, nor call back into the
/// same `XClient`.
pub trait ClientHooks: Send + Sync + 'static {
    /// Before a call (each fail-mode attempt counts once as one call). `Err(text)` aborts
    /// the call with that text.
    fn pre_call(&self, _service_path: &str, _method: &str) -> Result<(), String> {
        Ok(())
    }
    /// After a call ended; `error` is its error text, if it failed.
    fn post_call(&self, _service_path: &str, _method: &str, _server: Option<&ServerKey>, _error: Option<&str>) {}
    /// A new connection to `server` was made.
    fn conn_created(&self, _server: &ServerKey) {}
    /// Dialing `server` failed.
    fn conn_create_failed(&self, _server: &ServerKey, _error: &str) {}
}

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
