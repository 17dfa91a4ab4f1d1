//! How an XClient attempt's raw reply becomes the call's result: one function per kind
//! of finisher (typed with metadata, typed, raw, oneway), chosen once per call, the same
//! on every runtime. A decode error is the attempt's result, so hooks see it and the
//! fail mode counts it like a remote error.

use crate::codec::{self, Decoding};
use crate::error::Error;
use crate::wire::{Message, Metadata};
use serde::de::DeserializeOwned;

/// Turns an attempt's response (`None` for oneway) into the call's result.
pub type ReplyDecoder<T> = fn(Option<Message>) -> Result<T, Error>;

fn go<R: DeserializeOwned>(msg: Option<Message>) -> Result<(R, Metadata), Error> {
    Ok(codec::decode_reply(msg.ok_or(Error::Shutdown)?)?)
}

fn strict<R: DeserializeOwned>(msg: Option<Message>) -> Result<(R, Metadata), Error> {
    Ok(codec::decode_reply_with(msg.ok_or(Error::Shutdown)?, Decoding::Strict)?)
}

fn go_value<R: DeserializeOwned>(msg: Option<Message>) -> Result<R, Error> {
    go(msg).map(|(r, _)| r)
}

fn strict_value<R: DeserializeOwned>(msg: Option<Message>) -> Result<R, Error> {
    strict(msg).map(|(r, _)| r)
}

/// The reply and the response metadata, decoded in mode `d`.
pub fn with_metadata<R: DeserializeOwned>(d: Decoding) -> ReplyDecoder<(R, Metadata)> {
    match d {
        Decoding::Strict => strict::<R>,
        _ => go::<R>,
    }
}

/// The reply alone, decoded in mode `d`.
pub fn value<R: DeserializeOwned>(d: Decoding) -> ReplyDecoder<R> {
    match d {
        Decoding::Strict => strict_value::<R>,
        _ => go_value::<R>,
    }
}

/// The response as it came (raw finishers).
pub fn raw(msg: Option<Message>) -> Result<Message, Error> {
    msg.ok_or(Error::Shutdown)
}

/// Nothing: a oneway call's result is that it was written.
pub fn sent(_: Option<Message>) -> Result<(), Error> {
    Ok(())
}
