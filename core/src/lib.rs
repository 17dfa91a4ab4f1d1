//! # rpcx-core
//!
//! The sans-IO core of an rpcx implementation that is wire-compatible with the Go
//! framework [smallnest/rpcx](https://github.com/smallnest/rpcx). It does no IO, reads no
//! clock and spawns nothing: it turns bytes into messages and messages into bytes.
//! Runtime crates (`rpcx-tokio`, `rpcx-smol`, `rpcx-std`) move bytes between sockets
//! and this core.
//!
//! ```
//! use bytes::BytesMut;
//! use rpcx_core::codec;
//! use rpcx_core::wire::{EncoderConfig, FrameDecoder, Message, SerializeType};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! #[allow(non_snake_case)]
//! struct Args { A: i64, B: i64 }
//!
//! // The default Go client's request for Arith.Mul{A:10,B:20} (MsgPack, seq 0).
//! let mut req = Message::request(SerializeType::MSGPACK, 0, "Arith", "Mul");
//! req.payload = codec::to_payload(SerializeType::MSGPACK, &Args { A: 10, B: 20 })?.into();
//! let mut buf = BytesMut::new();
//! req.encode(&EncoderConfig::default(), &mut buf)?;
//! assert_eq!(hex(&buf), "0800003000000000000000000000001f000000054172697468000000034d756c000000000000000782a1410aa14214");
//!
//! // Decode it back; the payload is a zero-copy slice of the frame.
//! let msg = FrameDecoder::default().decode(&mut buf)?.expect("a whole frame");
//! let args: Args = codec::from_payload(msg.header.serialize_type(), &msg.payload)?;
//! assert_eq!(args, Args { A: 10, B: 20 });
//! # fn hex(b: &[u8]) -> String { b.iter().map(|x| format!("{x:02x}")).collect() }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod addr;
pub mod codec;
pub mod compress;
pub mod conn;
pub mod error;
mod ext;
pub mod govern;
pub mod guard;
pub mod http;
#[cfg(unix)]
pub mod memu;
mod query;
pub mod registry;
pub mod service;
pub mod stub;
pub mod wire;

pub use error::Error;
pub use ext::Extensions;

#[doc(hidden)]
pub use bytes; // for `call_options_setters!`
