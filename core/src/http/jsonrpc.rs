//! JSON-RPC 2.0 on the rpcx port, as Go's `server/jsonrpc2.go` maps it: `method` is
//! `"<servicePath>.<method>"` split at the last dot, `params` goes as the JSON payload,
//! a request without `id` is a notification (oneway).
//!
//! Stricter or better than Go, on purpose: a request without `params` gets an
//! "invalid params" error (Go dereferences a nil pointer: the call's connection is
//! aborted, a notification crashes the process), batches are accepted, and a reply that
//! is not JSON is an error object rather than an HTTP 500.

use crate::query;
use crate::wire::{AUTH_KEY, Message, Metadata, SerializeType};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Go's error codes.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
pub(crate) const INVALID_PARAMS: i64 = -32602;
pub(crate) const INTERNAL_ERROR: i64 = -32603;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default)]
    method: String,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    /// `null` or absent: a notification (as Go has it).
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// One call of a request (a batch has several).
#[derive(Debug)]
pub(crate) enum Call {
    /// To dispatch; `id` is `None` for a notification.
    Dispatch { message: Message, id: Option<Bytes> },
    /// Answered without dispatch (bad method, missing params); `None` for a
    /// notification, which gets no answer.
    Answered(Option<Bytes>),
}

/// A parsed request body.
#[derive(Debug)]
pub(crate) enum Body {
    Single(Call),
    Batch(Vec<Call>),
}

/// A response object's text.
pub(crate) fn error_object(id: Option<&[u8]>, code: i64, message: &str) -> Bytes {
    let message = serde_json::to_string(message).expect("a string serializes");
    let mut out = format!(r#"{{"jsonrpc":"2.0","error":{{"code":{code},"message":{message},"data":null}}"#);
    push_id(&mut out, id);
    out.into()
}

/// A result object's text; a reply that is not JSON becomes an error object, an empty
/// one `null`.
pub(crate) fn result_object(id: &[u8], payload: &[u8]) -> Bytes {
    let result = if payload.iter().all(u8::is_ascii_whitespace) {
        "null"
    } else {
        match std::str::from_utf8(payload).ok().filter(|s| serde_json::from_str::<&RawValue>(s).is_ok()) {
            Some(s) => s,
            None => return error_object(Some(id), INTERNAL_ERROR, "the reply is not JSON"),
        }
    };
    let mut out = format!(r#"{{"jsonrpc":"2.0","result":{result}"#);
    push_id(&mut out, Some(id));
    out.into()
}

fn push_id(out: &mut String, id: Option<&[u8]>) {
    if let Some(id) = id {
        out.push_str(r#","id":"#);
        out.push_str(std::str::from_utf8(id).unwrap_or("null"));
    }
    out.push('}');
}

/// Parse a request body. `Err` is the error object to answer with. `meta` and `auth`
/// are the `X-RPCX-Meta` and `Authorization` headers; `max_batch` bounds a batch and
/// `max_pairs` the metadata.
pub(crate) fn parse(
    body: &[u8],
    meta: Option<&str>,
    auth: Option<&Bytes>,
    max_batch: usize,
    max_pairs: usize,
) -> Result<Body, Bytes> {
    let mut metadata = Metadata::new();
    if let Some(meta) = meta {
        // Go ignores a malformed query here and keeps what parsed.
        for (k, v) in query::parse(meta).0 {
            if !metadata.contains_key(&k) && metadata.len() < max_pairs {
                metadata.insert(k, v);
            }
        }
    }
    if let Some(auth) = auth.filter(|a| !a.is_empty()) {
        metadata.insert(AUTH_KEY, auth.clone());
    }
    let text = std::str::from_utf8(body).map_err(|_| error_object(None, PARSE_ERROR, "the body is not UTF-8"))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| error_object(None, PARSE_ERROR, &e.to_string()))?;
        if items.is_empty() {
            return Err(error_object(None, INVALID_REQUEST, "empty batch"));
        }
        if items.len() > max_batch {
            return Err(error_object(None, INVALID_REQUEST, &format!("a batch of more than {max_batch} calls")));
        }
        let calls = items
            .into_iter()
            .map(|item| match serde_json::from_str::<Wire<'_>>(item.get()) {
                Ok(w) => call(w, &metadata),
                Err(e) => Call::Answered(Some(error_object(None, INVALID_REQUEST, &e.to_string()))),
            })
            .collect();
        return Ok(Body::Batch(calls));
    }
    let w: Wire<'_> = serde_json::from_str(text).map_err(|e| error_object(None, PARSE_ERROR, &e.to_string()))?;
    Ok(Body::Single(call(w, &metadata)))
}

fn call(w: Wire<'_>, metadata: &Metadata) -> Call {
    let id = w.id.filter(|id| id.get() != "null").map(|id| Bytes::copy_from_slice(id.get().as_bytes()));
    let answer = |code, text: &str| Call::Answered(id.as_ref().map(|id| error_object(Some(id), code, text)));
    if let Some(v) = w.jsonrpc.as_deref().filter(|v| *v != "2.0") {
        // Go fails the whole decoding here: a parse error, without an id (even for a
        // notification).
        return Call::Answered(Some(error_object(None, PARSE_ERROR, &format!("invalid RPC version {v}"))));
    }
    if let Some(id) = &w.id {
        let t = id.get();
        // Go's ID: an integer or a string.
        if !(t.starts_with('"') || t == "null" || t.parse::<i64>().is_ok()) {
            return Call::Answered(Some(error_object(None, INVALID_REQUEST, "id must be an integer or a string")));
        }
    }
    let Some(dot) = w.method.rfind('.').filter(|&i| i > 0) else {
        return answer(METHOD_NOT_FOUND, "must contains servicepath and method");
    };
    let Some(params) = w.params else {
        return answer(INVALID_PARAMS, "params is required (the rpcx method's argument)");
    };
    let path = Bytes::copy_from_slice(&w.method.as_bytes()[..dot]);
    let method = Bytes::copy_from_slice(&w.method.as_bytes()[dot + 1..]);
    let mut message = Message::request(SerializeType::JSON, 0, path, method);
    message.header.set_oneway(id.is_none());
    message.metadata = metadata.clone();
    message.payload = Bytes::copy_from_slice(params.get().as_bytes());
    Call::Dispatch { message, id }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> Call {
        match parse(body.as_bytes(), Some("a=1&b=%zz"), Some(&Bytes::from_static(b"tok")), 8, 8) {
            Ok(Body::Single(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn calls_map_as_go_maps_them() {
        let Call::Dispatch { message, id } =
            single(r#"{"jsonrpc":"2.0","method":"a.Arith.Mul","params":{"A":2},"id":7}"#)
        else {
            panic!("dispatch")
        };
        assert_eq!((&message.service_path[..], &message.service_method[..]), (&b"a.Arith"[..], &b"Mul"[..]));
        assert_eq!(&message.payload[..], br#"{"A":2}"#);
        assert_eq!(message.header.serialize_type(), SerializeType::JSON);
        assert!(!message.header.is_oneway());
        assert_eq!(message.metadata.get("a").map(|v| &v[..]), Some(&b"1"[..]));
        assert_eq!(message.metadata.get(AUTH_KEY).map(|v| &v[..]), Some(&b"tok"[..]));
        assert_eq!(id.as_deref(), Some(&b"7"[..]));
        let Call::Dispatch { message, id: None } = single(r#"{"method":"S.M","params":[1]}"#) else { panic!("notify") };
        assert!(message.header.is_oneway());
    }

    #[test]
    fn errors_are_objects_with_go_codes() {
        let Call::Answered(Some(e)) = single(r#"{"jsonrpc":"2.0","method":"NoDot","params":1,"id":"x"}"#) else {
            panic!("answered")
        };
        assert_eq!(
            &e[..],
            br#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"must contains servicepath and method","data":null},"id":"x"}"#
        );
        let Call::Answered(Some(e)) = single(r#"{"jsonrpc":"2.0","method":"S.M","id":1}"#) else { panic!("params") };
        assert!(std::str::from_utf8(&e).unwrap().contains("-32602"));
        assert!(matches!(single(r#"{"method":"S.M"}"#), Call::Answered(None)), "a notification gets no answer");
        let Err(e) = parse(b"{oops", None, None, 8, 8) else { panic!("parse error") };
        assert!(std::str::from_utf8(&e).unwrap().starts_with(r#"{"jsonrpc":"2.0","error":{"code":-32700,"#));
        assert!(parse(b"[]", None, None, 8, 8).is_err());
        assert!(parse(b"[1,2,3]", None, None, 2, 8).is_err());
        let Ok(Body::Batch(calls)) = parse(br#"[1,{"method":"S.M","params":1,"id":2}]"#, None, None, 8, 8) else {
            panic!("batch")
        };
        assert!(matches!(&calls[..], [Call::Answered(Some(_)), Call::Dispatch { .. }]));
    }

    #[test]
    fn results_are_raw_json() {
        assert_eq!(&result_object(b"1", br#"{"C":6}"#)[..], br#"{"jsonrpc":"2.0","result":{"C":6},"id":1}"#);
        assert_eq!(&result_object(b"\"a\"", b"")[..], br#"{"jsonrpc":"2.0","result":null,"id":"a"}"#);
        assert!(std::str::from_utf8(&result_object(b"1", b"\x93\x01")).unwrap().contains("-32603"));
    }
}
