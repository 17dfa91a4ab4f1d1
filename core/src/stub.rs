//! What typed client stubs call through: the small call traits every runtime's `Client`
//! and `XClient` implement, and the per-call builder a stub method returns.
//!
//! The `#[service]` attribute (crate `rpcx-macros`, re-exported by every runtime crate:
//! `#[rpcx_tokio::service]`) writes, for a trait `Arith`, a stub `ArithClient<C>` whose
//! methods return a [`StubCall`]: set
//! per-call options on it (the same setters as every request builder: metadata, timeout,
//! deadline, `context`, serialize type, compression), then `.await` it over an async
//! client ([`CallAsync`]) or [`call`](StubCall::call) it over a blocking one
//! ([`CallBlocking`], rpcx-std).
//!
//! ```
//! use rpcx_core::conn::CallOptions;
//! use rpcx_core::stub::{CallBlocking, CallClient, Serde, StubCall};
//! use rpcx_core::wire::{Message, SerializeType};
//!
//! /// A client that answers every call itself (a real one sends it).
//! struct Echo;
//! impl CallClient for Echo {
//!     fn options(&self, service: &str, method: &str) -> CallOptions {
//!         CallOptions::new(service, method, SerializeType::JSON, Default::default(), None)
//!     }
//! }
//! impl CallBlocking for Echo {
//!     fn call_raw(&self, opts: CallOptions, payload: bytes::Bytes) -> Result<Message, rpcx_core::error::Error> {
//!         let mut reply = Message::request(opts.serialize_type, 1, "", "");
//!         reply.payload = payload;
//!         Ok(reply)
//!     }
//! }
//! let n: i64 = StubCall::<_, i64, i64, Serde>::new(&Echo, "Num", "Echo", 42).metadata("k", "v").call()?;
//! assert_eq!(n, 42);
//! # Ok::<(), rpcx_core::error::Error>(())
//! ```

use crate::codec::{self, CodecError, Decoding};
use crate::conn::CallOptions;
use crate::error::Error;
use crate::wire::{Message, SerializeType};
use bytes::Bytes;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

/// A client a stub can call through: its defaults for a call of `service.method`.
pub trait CallClient {
    /// The options of a call of `service.method` with this client's defaults
    /// (serialize type, timeout, compression).
    fn options(&self, service: &str, method: &str) -> CallOptions;
}

/// An async client (every `Client` and `XClient` of rpcx-tokio and rpcx-smol).
pub trait CallAsync: CallClient + Sync {
    /// Call with a payload already serialized with `opts.serialize_type`; the response
    /// (a service error is an `Err`).
    fn call_raw(&self, opts: CallOptions, payload: Bytes) -> impl Future<Output = Result<Message, Error>> + Send;
}

/// A blocking client (rpcx-std's `Client` and `XClient`).
pub trait CallBlocking: CallClient {
    /// Call with a payload already serialized with `opts.serialize_type`, waiting for the
    /// response (a service error is an `Err`).
    fn call_raw(&self, opts: CallOptions, payload: Bytes) -> Result<Message, Error>;
}

macro_rules! forward_call_traits {
    ($($ptr:ty),*) => {$(
        impl<T: CallClient + ?Sized> CallClient for $ptr {
            fn options(&self, service: &str, method: &str) -> CallOptions {
                (**self).options(service, method)
            }
        }

        impl<T: CallAsync + ?Sized + Send> CallAsync for $ptr {
            fn call_raw(&self, opts: CallOptions, payload: Bytes) -> impl Future<Output = Result<Message, Error>> + Send {
                (**self).call_raw(opts, payload)
            }
        }

        impl<T: CallBlocking + ?Sized> CallBlocking for $ptr {
            fn call_raw(&self, opts: CallOptions, payload: Bytes) -> Result<Message, Error> {
                (**self).call_raw(opts, payload)
            }
        }
    )*};
}

forward_call_traits!(&T, Arc<T>, Box<T>);

/// How a stub method encodes its arguments and decodes its reply.
pub trait StubCodec<A, R> {
    /// The serialize type to use, given the client's default.
    fn serialize_type(default: SerializeType) -> SerializeType;
    /// Encode the arguments.
    fn encode(st: SerializeType, args: &A) -> Result<Bytes, CodecError>;
    /// Decode the reply.
    fn decode(reply: Message, decoding: Decoding) -> Result<R, CodecError>;
}

/// serde types, with the client's serialize type (JSON or MsgPack).
#[derive(Debug, Clone, Copy)]
pub enum Serde {}

impl<A: serde::Serialize, R: serde::de::DeserializeOwned> StubCodec<A, R> for Serde {
    fn serialize_type(default: SerializeType) -> SerializeType {
        default
    }

    fn encode(st: SerializeType, args: &A) -> Result<Bytes, CodecError> {
        codec::to_payload_bytes(st, args)
    }

    fn decode(reply: Message, decoding: Decoding) -> Result<R, CodecError> {
        codec::decode_reply_with(reply, decoding).map(|(r, _)| r)
    }
}

/// prost messages, always serialize type Protobuf.
#[cfg(feature = "protobuf")]
#[derive(Debug, Clone, Copy)]
pub enum Proto {}

#[cfg(feature = "protobuf")]
impl<A: prost::Message, R: prost::Message + Default> StubCodec<A, R> for Proto {
    fn serialize_type(_default: SerializeType) -> SerializeType {
        SerializeType::PROTOBUF
    }

    fn encode(_st: SerializeType, args: &A) -> Result<Bytes, CodecError> {
        Ok(Bytes::from(codec::to_proto(args)))
    }

    fn decode(reply: Message, decoding: Decoding) -> Result<R, CodecError> {
        codec::from_proto_with(&reply.payload, decoding)
    }
}

/// Types that are serde and prost types both: Protobuf when the call's serialize type is
/// Protobuf, serde otherwise (the server side of such a method answers every type).
#[cfg(feature = "protobuf")]
#[derive(Debug, Clone, Copy)]
pub enum Any {}

#[cfg(feature = "protobuf")]
impl<A, R> StubCodec<A, R> for Any
where
    A: serde::Serialize + prost::Message,
    R: serde::de::DeserializeOwned + prost::Message + Default,
{
    fn serialize_type(default: SerializeType) -> SerializeType {
        default
    }

    fn encode(st: SerializeType, args: &A) -> Result<Bytes, CodecError> {
        if st == SerializeType::PROTOBUF {
            <Proto as StubCodec<A, R>>::encode(st, args)
        } else {
            <Serde as StubCodec<A, R>>::encode(st, args)
        }
    }

    fn decode(reply: Message, decoding: Decoding) -> Result<R, CodecError> {
        if reply.header.serialize_type() == SerializeType::PROTOBUF {
            <Proto as StubCodec<A, R>>::decode(reply, decoding)
        } else {
            <Serde as StubCodec<A, R>>::decode(reply, decoding)
        }
    }
}

/// One call of a stub method, being configured: the request builders' setters, then
/// `.await` (async clients) or [`call`](Self::call) (blocking clients).
#[must_use = "a stub call is sent when awaited or called"]
pub struct StubCall<'c, C: ?Sized, A, R, K> {
    client: &'c C,
    opts: CallOptions,
    args: A,
    _codec: PhantomData<fn() -> (R, K)>,
}

impl<'c, C: CallClient + ?Sized, A, R, K: StubCodec<A, R>> StubCall<'c, C, A, R, K> {
    /// A call of `service.method` with `args` through `client`.
    pub fn new(client: &'c C, service: &str, method: &str, args: A) -> Self {
        let mut opts = client.options(service, method);
        opts.serialize_type = K::serialize_type(opts.serialize_type);
        Self { client, opts, args, _codec: PhantomData }
    }

    crate::call_options_setters!();

    fn encode(&self) -> Result<Bytes, Error> {
        Ok(K::encode(self.opts.serialize_type, &self.args)?)
    }
}

impl<C: CallBlocking + ?Sized, A, R, K: StubCodec<A, R>> StubCall<'_, C, A, R, K> {
    /// Send the call and wait for its reply (blocking clients).
    pub fn call(self) -> Result<R, Error> {
        let payload = self.encode()?;
        let decoding = self.opts.decoding;
        let reply = self.client.call_raw(self.opts, payload)?;
        Ok(K::decode(reply, decoding)?)
    }
}

impl<'c, C, A, R, K> IntoFuture for StubCall<'c, C, A, R, K>
where
    C: CallAsync + ?Sized,
    A: Send + Sync + 'c,
    R: Send + 'c,
    K: StubCodec<A, R> + 'c,
{
    type Output = Result<R, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<R, Error>> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let payload = self.encode()?;
            let decoding = self.opts.decoding;
            let reply = self.client.call_raw(self.opts, payload).await?;
            Ok(K::decode(reply, decoding)?)
        })
    }
}

impl<C: ?Sized, A: std::fmt::Debug, R, K> std::fmt::Debug for StubCall<'_, C, A, R, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubCall").field("opts", &self.opts).field("args", &self.args).finish_non_exhaustive()
    }
}
