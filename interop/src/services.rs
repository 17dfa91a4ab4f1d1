//! The interop service contract (`interop/go/README.md` §2), implemented in Rust.
//!
//! | Service.Method | behaviour |
//! |---|---|
//! | `Arith.Mul` / `Arith.Add` | `Reply{C: A*B}` / `Reply{C: A+B}` (wrapping, as Go's `int`) |
//! | `Arith.Error` | error `intentional error A=<A>` |
//! | `Arith.Slow` | waits `A` ms, or until the handler deadline (`__ServerTimeout`): then error `slow: context done` |
//! | `ProtoArith.Mul` | [`ProtoArgs`] → [`ProtoReply`]: prost for Protobuf, serde for JSON and MsgPack (as the Go server) |
//! | `Echo.Meta` | `Reply{C: A+B}`, request metadata not starting with `__` copied to the response |
//! | `Echo.Raw` | raw payload echo |
//! | `Echo.Deadline` | remaining ms of the handler deadline, or `-1` |
//! | `Push.Me` | `A` pushes `Push.Note` (`{"i": k}`, `push-k`) before replying `Reply{C: A}` |
//! | `Stats.Heartbeats` | heartbeats this server has received |

use bytes::Bytes;
use rpcx_core::service::{Context, Peer, Router, ServerHooks, Service, ServiceError};
use rpcx_core::wire::Metadata;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Error text of `Arith.Slow` when the deadline passes first.
pub const ERR_SLOW_CONTEXT_DONE: &str = "slow: context done";
/// Error text of a failed auth check.
pub const ERR_AUTH_FAILED: &str = "auth failed";
/// Most pushes `Push.Me` sends.
pub const MAX_PUSHES: i64 = 1000;

/// The exact error text of `Arith.Error`.
pub fn error_text(a: i64) -> String {
    format!("intentional error A={a}")
}

/// Request of `Arith.*`, `Echo.Meta`, `Echo.Deadline`, `Push.Me`, `Stats.Heartbeats`
/// (Go `struct { A int; B int }`; field names are the wire names). Decoded as Go does
/// (`rpcx_core::codec::Decoding::Go`), so missing fields are zero even without the
/// `#[serde(default)]`s, which keep strict decoding Go-like too.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_snake_case)]
pub struct Args {
    /// First operand.
    #[serde(default)]
    pub A: i64,
    /// Second operand.
    #[serde(default)]
    pub B: i64,
}

/// Reply of the same methods (Go `struct { C int }`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_snake_case)]
pub struct Reply {
    /// The result.
    #[serde(default)]
    pub C: i64,
}

/// `rpcxinterop.ProtoArgs` (`interop/go/proto/arith.proto`). Also a serde type with
/// the Go field names: the Go server decodes JSON and MsgPack into the same struct.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct ProtoArgs {
    /// Field 1.
    #[prost(int64, tag = "1")]
    #[serde(rename = "A")]
    pub a: i64,
    /// Field 2.
    #[prost(int64, tag = "2")]
    #[serde(rename = "B")]
    pub b: i64,
}

/// `rpcxinterop.ProtoReply`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct ProtoReply {
    /// Field 1.
    #[prost(int64, tag = "1")]
    #[serde(rename = "C")]
    pub c: i64,
}

/// A server hook counting heartbeats (Go: a `HeartbeatPlugin`).
#[derive(Debug, Default)]
pub struct HeartbeatCounter(AtomicU64);

impl HeartbeatCounter {
    /// Heartbeats counted so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ServerHooks for HeartbeatCounter {
    fn heartbeat(&self, _peer: &Peer) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `Arith` of the contract, as a typed service: [`ArithClient`] calls it (on the Go
/// server too).
#[rpcx_macros::service(name = "Arith")]
pub trait Arith {
    /// `A * B` (wrapping).
    async fn mul(&self, args: Args) -> Result<Reply, ServiceError>;
    /// `A + B` (wrapping).
    async fn add(&self, args: Args) -> Result<Reply, ServiceError>;
    /// Always the error [`error_text`]`(A)`.
    async fn error(&self, args: Args) -> Result<Reply, ServiceError>;
    /// Waits `A` ms, or until the handler deadline: then [`ERR_SLOW_CONTEXT_DONE`].
    async fn slow(&self, ctx: &Context, args: Args) -> Result<Reply, ServiceError>;
}

/// `ProtoArith` of the contract: [`ProtoArgs`] and [`ProtoReply`] in every serialize type.
#[rpcx_macros::service(name = "ProtoArith")]
pub trait ProtoArith {
    /// `a * b` (wrapping).
    #[rpcx(serde, proto)]
    async fn mul(&self, args: ProtoArgs) -> Result<ProtoReply, ServiceError>;
}

/// The Rust implementation of the contract's typed services.
#[derive(Debug, Clone, Copy)]
pub struct Interop;

impl Arith for Interop {
    async fn mul(&self, a: Args) -> Result<Reply, ServiceError> {
        Ok(Reply { C: a.A.wrapping_mul(a.B) })
    }

    async fn add(&self, a: Args) -> Result<Reply, ServiceError> {
        Ok(Reply { C: a.A.wrapping_add(a.B) })
    }

    async fn error(&self, a: Args) -> Result<Reply, ServiceError> {
        Err(error_text(a.A).into())
    }

    async fn slow(&self, ctx: &Context, a: Args) -> Result<Reply, ServiceError> {
        slow(ctx.clone(), a).await
    }
}

impl ProtoArith for Interop {
    async fn mul(&self, a: ProtoArgs) -> Result<ProtoReply, ServiceError> {
        Ok(ProtoReply { c: a.a.wrapping_mul(a.b) })
    }
}

/// Remaining whole milliseconds until `deadline` (negative once passed), truncated
/// toward zero like Go's `time.Until(d).Milliseconds()`.
fn remaining_ms(deadline: Instant, now: Instant) -> i64 {
    if deadline >= now {
        i64::try_from((deadline - now).as_millis()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((now - deadline).as_millis()).unwrap_or(i64::MAX)
    }
}

/// Waits `A` ms or until the handler deadline, whichever is first. The timer is
/// runtime-neutral (a helper thread wakes the task, [`rpcx_conformance::services::sleep`]),
/// so the service serves on every runtime.
async fn slow(ctx: Context, a: Args) -> Result<Reply, ServiceError> {
    let wait = Instant::now() + Duration::from_millis(u64::try_from(a.A).unwrap_or(0));
    let (until, outcome) = match ctx.deadline() {
        Some(d) if d < wait => (d, Err(ERR_SLOW_CONTEXT_DONE.into())),
        _ => (wait, Ok(Reply { C: a.A })),
    };
    sleep_until(until).await;
    outcome
}

/// Sleep until `until` on any executor.
pub async fn sleep_until(until: Instant) {
    rpcx_conformance::services::sleep(until.saturating_duration_since(Instant::now())).await;
}

async fn push_me(ctx: Context, a: Args) -> Result<Reply, ServiceError> {
    let n = a.A;
    if !(0..=MAX_PUSHES).contains(&n) {
        return Err(format!("push: count {n} out of range [0, {MAX_PUSHES}]").into());
    }
    for k in 1..=n {
        let metadata: Metadata = [("i", k.to_string())].into_iter().collect();
        ctx.pusher().push("Push", "Note", metadata, format!("push-{k}")).map_err(|e| format!("push: send {k}: {e}"))?;
    }
    Ok(Reply { C: n })
}

/// The interop services; `auth` is the required `__AUTH` token (error `auth failed`,
/// then the connection is closed), if any.
pub fn router(auth: Option<String>) -> Router {
    router_with_counter(auth).0
}

/// [`router`], also returning its heartbeat counter.
pub fn router_with_counter(auth: Option<String>) -> (Router, Arc<HeartbeatCounter>) {
    let counter = Arc::new(HeartbeatCounter::default());
    let stats = counter.clone();
    // Written as traits (`#[service]`): Go clients reach them through the generated
    // registration, and Rust clients can call the Go server through the stubs.
    let arith = Arith::into_service(Interop);
    let proto = ProtoArith::into_service(Interop);
    let echo = Service::new("Echo")
        .method("Meta", |ctx: Context, a: Args| async move {
            for (k, v) in ctx.metadata().iter() {
                if !k.starts_with(b"__") {
                    ctx.set_response_metadata(k.clone(), v.clone());
                }
            }
            Ok(Reply { C: a.A.wrapping_add(a.B) })
        })
        .raw_method("Raw", |_: Context, payload: Bytes| async move { Ok(payload) })
        .method("Deadline", |ctx: Context, _: Args| async move {
            let c = ctx.deadline().map_or(-1, |d| remaining_ms(d, Instant::now()));
            Ok(Reply { C: c })
        });
    let push = Service::new("Push").method("Me", push_me);
    let stats = Service::new("Stats").method("Heartbeats", move |_: Context, _: Args| {
        let n = i64::try_from(stats.count()).unwrap_or(i64::MAX);
        async move { Ok(Reply { C: n }) }
    });
    // Go's book example, as the Go server installs it with its AliasPlugin.
    let alias = rpcx_core::service::Alias::new().alias("a.b.c.d", "Times", "Arith", "Mul");
    let mut router = Router::new()
        .service(arith)
        .service(proto)
        .service(echo)
        .service(push)
        .service(stats)
        .hook(counter.clone())
        .hook(Arc::new(alias));
    if let Some(token) = auth {
        router = router.auth(move |_: Context, got: String| {
            let ok = got == token;
            async move { if ok { Ok(()) } else { Err(ERR_AUTH_FAILED.to_owned()) } }
        });
    }
    (router, counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_ms_truncates_toward_zero() {
        let now = Instant::now();
        assert_eq!(remaining_ms(now + Duration::from_micros(2_999_900), now), 2999);
        assert_eq!(remaining_ms(now, now + Duration::from_micros(1500)), -1);
        assert_eq!(remaining_ms(now, now), 0);
    }

    #[test]
    fn sleep_until_needs_no_runtime() {
        let start = Instant::now();
        rpcx_std::block_on(sleep_until(start + Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        // A past instant is ready at once.
        rpcx_std::block_on(sleep_until(start));
    }

    #[test]
    fn proto_wire_bytes_match_the_contract() {
        use prost::Message as _;
        assert_eq!(ProtoArgs { a: 10, b: 20 }.encode_to_vec(), [0x08, 0x0a, 0x10, 0x14]);
        assert_eq!(ProtoReply { c: 200 }.encode_to_vec(), [0x08, 0xc8, 0x01]);
        assert!(ProtoReply { c: 0 }.encode_to_vec().is_empty());
    }

    #[test]
    fn router_has_every_contract_method() {
        let r = router(None);
        for (s, m) in [
            ("Arith", "Mul"),
            ("Arith", "Add"),
            ("Arith", "Error"),
            ("Arith", "Slow"),
            ("ProtoArith", "Mul"),
            ("Echo", "Meta"),
            ("Echo", "Raw"),
            ("Echo", "Deadline"),
            ("Push", "Me"),
            ("Stats", "Heartbeats"),
        ] {
            assert!(r.has_method(s, m), "{s}.{m}");
        }
    }
}
