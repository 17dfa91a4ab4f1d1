//! Redis, in Go's libkv layout (rpcx's in-tree `serverplugin.RedisRegisterPlugin` and
//! `rpcx-redis`'s discovery):
//!
//! * the Redis key is libkv's `Normalize(key)`, which is `"/" + key`: BasePath
//!   `/rpcx_test` gives `//rpcx_test/Arith/tcp@127.0.0.1:8972`, BasePath `rpcx_test`
//!   gives `/rpcx_test/Arith/tcp@...` (checked against a real Go run in
//!   `interop/tests/redis_go.rs`);
//! * the value is libkv's JSON `{"Key":"<key as given>","Value":"<base64 of the
//!   metadata>","LastIndex":<n>}`;
//! * nodes expire after twice the update interval and are refreshed every interval;
//!   the directory keys (`BasePath` = `rpcx_path`, `BasePath/<service>` = the name) do not
//!   expire, as Go writes them.
//!
//! Where we differ from Go, on purpose: a refresh keeps a present node's value (only its
//! expiry is renewed, so an operator's `state=inactive` survives), a reconnection
//! re-creates vanished nodes at once, discovery lists `BasePath/<service>/` with the
//! trailing `/` (Go's `SCAN <dir>*` lists `Arith2` under `Arith`), and when
//! `CONFIG SET notify-keyspace-events` is refused (managed Redis) discovery polls instead
//! of watching keyspace notifications.

mod discovery;
mod registrar;
#[cfg(feature = "test-support")]
pub mod testing;

pub use discovery::RedisDiscovery;
pub use registrar::RedisRegistrar;

use crate::RegistryError;
use base64::Engine as _;
use std::future::Future;
use std::time::Duration;

/// Where Redis is and how registrations behave. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    url: String,
    base_path: String,
    update_interval: Duration,
    op_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    coalesce: Duration,
    poll_interval: Duration,
}

impl RedisConfig {
    /// Redis at `url` (`redis://127.0.0.1:6379`, `redis://:password@host/2`), keys under
    /// `base_path` (Go's `BasePath`, used as given, a trailing `/` dropped). Defaults:
    /// update interval 10 s (nodes expire after 20 s), 5 s per operation, backoff 100 ms
    /// doubling to 5 s, 20 ms event coalescing, 2 s polling when keyspace notifications
    /// are unavailable.
    pub fn new(url: &str, base_path: &str) -> Self {
        RedisConfig {
            url: url.to_owned(),
            base_path: base_path.trim_end_matches('/').to_owned(),
            update_interval: Duration::from_secs(10),
            op_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            coalesce: Duration::from_millis(20),
            poll_interval: Duration::from_secs(2),
        }
    }

    /// How often nodes are refreshed; they expire after twice this (Go's rule).
    #[must_use]
    pub fn update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }

    /// The bound on every single Redis operation.
    #[must_use]
    pub fn op_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Reconnection backoff: from `min`, doubling, up to `max`.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// How long discovery waits for more notifications before listing again.
    #[must_use]
    pub fn coalesce(mut self, d: Duration) -> Self {
        self.coalesce = d;
        self
    }

    /// How often discovery lists when keyspace notifications cannot be enabled.
    #[must_use]
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// The base path, as used in keys.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: &str| Err(RegistryError::Config(m.to_owned()));
        if redis::Client::open(self.url.as_str()).is_err() {
            return bad("the Redis URL does not parse (redis://host:port[/db])");
        }
        if self.update_interval < Duration::from_millis(10) {
            return bad("the update interval must be at least 10 ms");
        }
        if self.op_timeout.is_zero() || self.backoff_min.is_zero() || self.poll_interval.is_zero() {
            return bad("the operation timeout, backoff and poll interval must be positive");
        }
        Ok(())
    }

    /// Node expiry: twice the update interval, as Go's plugin sets it.
    fn expiry_ms(&self) -> u64 {
        u64::try_from((self.update_interval * 2).as_millis()).unwrap_or(u64::MAX)
    }

    fn client(&self) -> Result<redis::Client, RegistryError> {
        redis::Client::open(self.url.as_str()).map_err(|e| RegistryError::Config(e.to_string()))
    }

    async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, RegistryError> {
        let client = self.client()?;
        self.op("connect", client.get_multiplexed_async_connection()).await
    }

    /// `fut` bounded by the operation timeout, its error typed.
    async fn op<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.typed(op, e)),
            Err(_) => Err(RegistryError::Timeout { op, after: self.op_timeout }),
        }
    }

    fn typed(&self, op: &'static str, e: redis::RedisError) -> RegistryError {
        if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            RegistryError::Connect { endpoints: self.url.clone(), source: Box::new(e) }
        } else {
            RegistryError::Operation { op, source: Box::new(e) }
        }
    }
}

/// libkv's `Normalize`: `"/" + key` (it splits on `/` and joins again).
pub fn redis_key(key: &str) -> String {
    format!("/{key}")
}

/// libkv's JSON encoding of a `KVPair`.
#[derive(serde::Serialize, serde::Deserialize)]
struct KvPair {
    #[serde(rename = "Key")]
    key: String,
    /// Go's `[]byte`: standard base64; `null` for nil.
    #[serde(rename = "Value", default)]
    value: Option<String>,
    #[serde(rename = "LastIndex", default)]
    last_index: u64,
}

/// The value Go's store writes for `key` = `value`.
pub fn encode_value(key: &str, value: &str) -> String {
    let pair = KvPair {
        key: key.to_owned(),
        value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
        // Go writes `time.Now().Nanosecond()`; any number does.
        last_index: u64::from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()),
        ),
    };
    // A struct of strings and an integer always serializes.
    serde_json::to_string(&pair).unwrap_or_default()
}

/// The key as given and the value of a stored libkv pair; `None` if it is not one.
pub fn decode_value(raw: &[u8]) -> Option<(String, String)> {
    let pair: KvPair = serde_json::from_slice(raw).ok()?;
    let value = match pair.value {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok()?,
        None => Vec::new(),
    };
    Some((pair.key, String::from_utf8_lossy(&value).into_owned()))
}

/// A `SCAN MATCH` / `PSUBSCRIBE` pattern matching exactly the keys that start with
/// `prefix` (glob characters in it escaped).
fn glob_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libkv_layout() {
        assert_eq!(redis_key("/rpcx_test/Arith/tcp@1.2.3.4:5"), "//rpcx_test/Arith/tcp@1.2.3.4:5");
        assert_eq!(redis_key("rpcx_test/Arith/tcp@1.2.3.4:5"), "/rpcx_test/Arith/tcp@1.2.3.4:5");
        let v = encode_value("/rpcx_test/Arith/tcp@1.2.3.4:5", "group=a&weight=2");
        assert!(
            v.starts_with(r#"{"Key":"/rpcx_test/Arith/tcp@1.2.3.4:5","Value":"Z3JvdXA9YSZ3ZWlnaHQ9Mg==","LastIndex":"#),
            "{v}"
        );
        assert_eq!(decode_value(v.as_bytes()).unwrap().1, "group=a&weight=2");
        assert_eq!(decode_value(br#"{"Key":"k","Value":null,"LastIndex":1}"#).unwrap(), ("k".into(), String::new()));
        for bad in [&b"not json"[..], br#"{"Key":"k","Value":"%%%"}"#, br#"{"Value":"eA=="}"#] {
            assert!(decode_value(bad).is_none());
        }
    }

    #[test]
    fn glob_escapes() {
        assert_eq!(glob_prefix("//a/[x]*?\\/"), "//a/\\[x\\]\\*\\?\\\\/*");
    }
}
