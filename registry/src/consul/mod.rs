//! Consul, in Go's `rpcx-consul` layout (its `ConsulRegisterPlugin` and
//! `ConsulDiscovery`, through `libkv`'s Consul store and `hashicorp/consul/api`), over
//! Consul's KV and session HTTP API:
//!
//! * keys are the etcd layout with the base path's leading `/` stripped (libkv's
//!   `normalize`): BasePath `/rpcx_test` gives `rpcx_test/Arith/tcp@127.0.0.1:8972`;
//! * a node's value is the service's metadata string as is, with KV `Flags`
//!   `0x2ddccbc058a50c18` (`api.LockFlagValue`, which every libkv `Put` writes);
//! * a node is held by a session created with `Behavior=delete`, `LockDelay=1ms` and a
//!   TTL (Consul refuses TTLs under 10 s or over 24 h; it invalidates a session that is
//!   not renewed within up to twice its TTL, and deletes the keys it holds); the session
//!   is renewed every update interval;
//! * the directory keys `rpcx_test` = `rpcx_path` and `rpcx_test/Arith` = `Arith` are
//!   plain keys with the same flags, as Go's `Register` writes them;
//! * discovery lists `rpcx_test/Arith/` recursively (`GET /v1/kv/<prefix>?recurse`) and
//!   then runs blocking queries from the returned `X-Consul-Index`
//!   (`?recurse&index=N&wait=...`), as libkv's `WatchTree` does.
//!
//! # What it was tested against
//!
//! No Consul server can be installed where this crate is developed (Consul is not in
//! Debian, and current releases are under the BUSL). The tests therefore run against
//! `testing::ConsulStandIn` (feature `test-support`), a small in-repo HTTP server
//! implementing the subset of Consul's KV + session API both clients use (documented
//! there), with Consul's semantics for it. The point of the exercise: **Go's own rpcx-consul (v0.1.1) is run
//! against the same stand-in** (`interop/tests/consul_go.rs`), in both directions, so
//! both sides prove the same layout and requests. One test uses a real
//! `consul agent -dev`; it is `#[ignore]`d, and `.ci/run` runs it when `consul` is on
//! `PATH` (none is on the CI machines).
//!
//! # Where we differ from Go, on purpose
//!
//! * **One session per registration** (Go creates one per key it writes with a TTL,
//!   including the base path key in `Start`, which then vanishes when the first server
//!   that wrote it dies); the directory keys are plain, persistent keys.
//! * **A node is written in one request**, `PUT ?acquire=<session>&flags=...` with the
//!   metadata as body (Go acquires with an empty value and writes the value in a second
//!   request, so discovery can briefly see a node with empty metadata).
//! * **A lost session is re-created and every key re-put at once** (Go re-creates a
//!   vanished node at the next update tick only), and a lost registry is retried with
//!   backoff, the old session kept if it survived.
//! * A refresh tick re-creates a vanished node and leaves a present one as it is, so an
//!   operator's `state=inactive` survives it (Go re-encodes the value every tick); with
//!   the server's `publish_rates`, Go's `calls` and `connections` rates are written into
//!   the present value, its other keys kept, as Go does with `Metrics`.
//! * Discovery lists `BasePath/<service>/` with the trailing `/` (Go lists
//!   `BasePath/<service>` and filters), coalesces a burst of changes into one update,
//!   resets its index when Consul's index goes backwards (a rebuilt registry), and serves
//!   the last known list while Consul is unreachable, reconnecting with backoff.
//!
//! Only `http://` addresses are supported (no TLS, no ACL token).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use rpcx_registry::consul::{ConsulConfig, ConsulDiscovery, ConsulRegistrar};
//! use rpcx_tokio::core::service::{Context, Router, Service};
//! use std::sync::Arc;
//!
//! let config = ConsulConfig::new("http://127.0.0.1:8500", "/rpcx_test");
//! let router = Router::new().service(
//!     Service::new("Arith")
//!         .metadata("weight=10")
//!         .method("Mul", |_c: Context, (a, b): (i64, i64)| async move { Ok(a * b) }),
//! );
//! // Publishes `rpcx_test/Arith/tcp@10.0.0.5:8972` = `weight=10`, held by a session.
//! let server = rpcx_tokio::Server::new(router)
//!     .registrar(ConsulRegistrar::new(config.clone())?)
//!     .advertise_address("10.0.0.5")
//!     .bind("tcp@0.0.0.0:8972")
//!     .await?;
//! let discovery = ConsulDiscovery::connect(config, "Arith").await?;
//! let xc = rpcx_tokio::XClient::new("Arith", Arc::new(discovery), Default::default());
//! let c: i64 = xc.call("Mul", &(6, 7)).await?;
//! server.shutdown(std::time::Duration::from_secs(5)).await; // unregisters first
//! # let _ = c; Ok(()) }
//! ```

mod discovery;
mod http;
mod registrar;
#[cfg(feature = "test-support")]
pub mod testing;

pub use discovery::ConsulDiscovery;
pub use registrar::ConsulRegistrar;

use crate::RegistryError;
use std::time::Duration;

/// The KV flags every node and directory key carries: `api.LockFlagValue`, which Go's
/// libkv Consul store writes on every `Put`.
pub const LOCK_FLAG_VALUE: u64 = 0x2ddc_cbc0_58a5_0c18;

/// The smallest session TTL Consul accepts.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(10);

/// The largest session TTL Consul accepts (24 h).
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(86_400);

/// The longest blocking query Consul serves (10 min).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Where Consul is and how registrations behave. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    address: String,
    base_path: String,
    session_ttl: Duration,
    update_interval: Duration,
    op_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    coalesce: Duration,
    wait: Duration,
}

impl ConsulConfig {
    /// Consul's HTTP API at `address` (`http://127.0.0.1:8500`, or `host:port`), keys
    /// under `base_path` (Go's `BasePath`; one leading `/` and a trailing `/` are
    /// dropped in keys, as libkv does). Defaults: session TTL 20 s (a crashed server's
    /// nodes go within 20 to 40 s), update interval 10 s, 5 s per operation, backoff
    /// 100 ms doubling to 5 s, 20 ms change coalescing, blocking queries of 60 s.
    pub fn new(address: &str, base_path: &str) -> Self {
        let address = address.trim().trim_end_matches('/');
        let address = if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
        ConsulConfig {
            address,
            base_path: base_path.trim_end_matches('/').to_owned(),
            session_ttl: Duration::from_secs(20),
            update_interval: Duration::from_secs(10),
            op_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            coalesce: Duration::from_millis(20),
            wait: Duration::from_secs(60),
        }
    }

    /// The TTL of each registration's session (Go's `(UpdateInterval + Expired) / 2`):
    /// between 10 s and 24 h, as Consul requires (checked by
    /// [`ConsulRegistrar::new`]). Consul deletes the nodes of a session not renewed
    /// within up to twice this.
    #[must_use]
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// How often a registration renews its session and re-creates vanished nodes
    /// (shorter than the session TTL).
    #[must_use]
    pub fn update_interval(mut self, d: Duration) -> Self {
        self.update_interval = d;
        self
    }

    /// The bound on every single request (a blocking query gets its wait on top).
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

    /// How long discovery waits for more changes after one before publishing the list.
    #[must_use]
    pub fn coalesce(mut self, d: Duration) -> Self {
        self.coalesce = d;
        self
    }

    /// How long one blocking query may wait for a change (Consul's `wait`, at most
    /// 10 min; Go's libkv uses 15 s).
    #[must_use]
    pub fn wait(mut self, d: Duration) -> Self {
        self.wait = d;
        self
    }

    /// The base path, as given (without a trailing `/`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The HTTP address, `http://host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The base path as it appears in Consul keys (one leading `/` stripped).
    fn kv_base(&self) -> &str {
        self.base_path.strip_prefix('/').unwrap_or(&self.base_path)
    }

    fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: &str| Err(RegistryError::Config(m.to_owned()));
        let Some(rest) = self.address.strip_prefix("http://") else {
            return bad("the Consul address must be http://host:port (TLS is not supported)");
        };
        if rest.is_empty() || rest.contains('/') || rest.parse::<hyper::Uri>().is_err() {
            return bad("the Consul address must be http://host:port");
        }
        if self.kv_base().is_empty() {
            return bad("the base path must not be empty");
        }
        if self.session_ttl < MIN_SESSION_TTL || self.session_ttl > MAX_SESSION_TTL {
            return bad("Consul requires a session TTL between 10 s and 24 h");
        }
        if self.update_interval.is_zero() || self.update_interval >= self.session_ttl {
            return bad("the update interval must be positive and shorter than the session TTL");
        }
        if self.op_timeout.is_zero() || self.backoff_min.is_zero() {
            return bad("the operation timeout and backoff must be positive");
        }
        if self.wait.is_zero() || self.wait > MAX_WAIT {
            return bad("the blocking query wait must be positive and at most 10 min");
        }
        Ok(())
    }
}

/// A registry key as Go's libkv Consul store writes it: one leading `/` stripped.
pub fn consul_key(key: &str) -> &str {
    key.strip_prefix('/').unwrap_or(key)
}

/// A Go duration string (`10s`, `1m30s`, `15000ms`) as Consul's HTTP API writes and
/// reads them; `None` if it does not parse.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// `d` as a Go duration string of whole milliseconds (`15000ms`), as the Go API client
/// sends `wait` and `LockDelay`.
fn go_millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Percent-encode a key for a URL path (keeps `/`, `:`, `@` and the other characters
/// Go leaves alone in paths).
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A KV entry as Consul's HTTP API returns it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    key: String,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    flags: u64,
    /// Standard base64; `null` for an empty value.
    #[serde(default)]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
}

impl KvEntry {
    /// The decoded value; `None` if it is not base64.
    fn decoded(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        match &self.value {
            Some(v) => base64::engine::general_purpose::STANDARD.decode(v).ok(),
            None => Some(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_helpers() {
        assert_eq!(consul_key("/rpcx_test/Arith/tcp@1.2.3.4:5"), "rpcx_test/Arith/tcp@1.2.3.4:5");
        assert_eq!(consul_key("rpcx_test/Arith"), "rpcx_test/Arith");
        assert_eq!(LOCK_FLAG_VALUE, 3_304_740_253_564_472_344);
        assert_eq!(encode_path("rpcx_test/Arith/tcp@1.2.3.4:5"), "rpcx_test/Arith/tcp@1.2.3.4:5");
        assert_eq!(encode_path("a b?c#%"), "a%20b%3Fc%23%25");
        assert_eq!(go_millis(Duration::from_secs(15)), "15000ms");
        assert_eq!(go_millis(Duration::from_micros(10)), "1ms");
        for (s, d) in [("10s", 10_000), ("1m30s", 90_000), ("15000ms", 15_000), ("1.5s", 1500), ("1h0m0s", 3_600_000)] {
            assert_eq!(parse_go_duration(s), Some(Duration::from_millis(d)), "{s}");
        }
        for bad in ["", "10", "s", "10x", "-1s", "1s2"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn config_is_validated() {
        let ok = ConsulConfig::new("127.0.0.1:8500", "/rpcx_test");
        assert_eq!(ok.address(), "http://127.0.0.1:8500");
        assert_eq!(ok.kv_base(), "rpcx_test");
        assert!(ok.validate().is_ok());
        let bad = [
            ok.clone().session_ttl(Duration::from_secs(9)),
            ok.clone().session_ttl(Duration::from_secs(86_401)),
            ok.clone().update_interval(Duration::from_secs(20)),
            ok.clone().update_interval(Duration::ZERO),
            ok.clone().wait(Duration::from_secs(601)),
            ok.clone().op_timeout(Duration::ZERO),
            ConsulConfig::new("https://127.0.0.1:8500", "/x"),
            ConsulConfig::new("http://127.0.0.1:8500/path", "/x"),
            ConsulConfig::new("127.0.0.1:8500", "/"),
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(RegistryError::Config(_))), "{c:?}");
        }
    }
}
