//! `rpcx call ADDR Service.Method ARGS`.

use crate::frame::{compress_name, payload_value, serialize_name};
use crate::{ConnectArgs, Failure, Outcome, Serialize};
use clap::{Args, ValueEnum};
use rpcx_tokio::core::conn::CallError;
use rpcx_tokio::core::wire::AUTH_KEY;
use rpcx_tokio::{CompressType, Error, Message, SerializeType};
use std::io::{Read, Write};
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct CallArgs {
    /// Server address: tcp@host:port, host:port or unix@/path; or a registry,
    /// etcd://host:port[,host:port...] or redis://host:port, to call one of the servers
    /// registered there for the service (under --base-path).
    addr: String,
    /// The method, as Service.Method.
    method: String,
    /// The arguments: JSON text, @FILE, or - for stdin (raw bytes with --serialize raw,
    /// hex with --serialize protobuf and no schema). Default: {} (empty for raw and hex).
    args: Option<String>,
    /// How the arguments are encoded on the wire (default: json, or protobuf with a schema).
    #[arg(short, long, value_enum)]
    serialize: Option<Serialize>,
    /// Protobuf schema: a .proto file (compiled here; its directory and -I paths are
    /// searched for imports). Arguments are then JSON, and the reply printed as JSON.
    #[arg(long, value_name = "FILE")]
    proto: Option<std::path::PathBuf>,
    /// Protobuf schema as a FileDescriptorSet (protoc --include_imports --descriptor_set_out).
    #[arg(long, value_name = "FILE")]
    descriptor_set: Option<std::path::PathBuf>,
    /// Import path for --proto (repeatable).
    #[arg(short = 'I', long = "proto-path", value_name = "DIR")]
    proto_path: Vec<std::path::PathBuf>,
    /// Request message (full name, e.g. pkg.Args); default: the input of the schema's
    /// rpc Service.Method.
    #[arg(long, value_name = "NAME")]
    request_type: Option<String>,
    /// Reply message (full name); default: the output of the schema's rpc Service.Method.
    #[arg(long, value_name = "NAME")]
    reply_type: Option<String>,
    /// Request metadata, KEY=VALUE (repeatable).
    #[arg(short = 'm', long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Auth token, sent as `__AUTH` metadata.
    #[arg(long)]
    auth: Option<String>,
    /// Call timeout (also sent to the server as `__ServerTimeout`).
    #[arg(short, long, default_value = "10s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Gzip the request (payloads over 1024 bytes; the server answers in kind).
    #[arg(long)]
    gzip: bool,
    /// Send as oneway: no reply is waited for.
    #[arg(long)]
    oneway: bool,
    /// How to print the reply.
    #[arg(short, long, value_enum, default_value = "json")]
    output: Output,
    /// Show the response header and metadata on stderr.
    #[arg(short, long)]
    verbose: bool,
    /// With a registry address: the registry's base path (Go's BasePath).
    #[arg(long, default_value = "/rpcx_test")]
    base_path: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// JSON (MsgPack converted); protobuf and binary replies as hex.
    Json,
    /// The payload bytes as hex.
    Hex,
    /// The payload bytes as they are.
    Raw,
}

/// Split `Service.Method` at its last dot.
pub(crate) fn split_method(m: &str) -> Result<(&str, &str), Failure> {
    match m.rsplit_once('.') {
        Some((s, m)) if !s.is_empty() && !m.is_empty() => Ok((s, m)),
        _ => Err(Failure::usage(format!("bad method {m:?}: expected Service.Method"))),
    }
}

/// The argument bytes as given: inline, `@file` or `-` (stdin).
fn read_args(arg: Option<&str>, st: Serialize) -> Result<Vec<u8>, Failure> {
    match arg {
        None => Ok(match st {
            Serialize::Json | Serialize::Msgpack => b"{}".to_vec(),
            Serialize::Raw | Serialize::Protobuf => Vec::new(),
        }),
        Some("-") => {
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v).map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
            Ok(v)
        }
        Some(a) => match a.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|e| Failure::usage(format!("reading {path}: {e}"))),
            None => Ok(a.as_bytes().to_vec()),
        },
    }
}

/// The request payload for the serialize type: JSON checked and sent as is, MsgPack
/// converted from the JSON, raw as given, protobuf from hex.
pub(crate) fn encode_args(raw: &[u8], st: Serialize) -> Result<Vec<u8>, Failure> {
    let json = || -> Result<serde_json::Value, Failure> {
        serde_json::from_slice(raw).map_err(|e| Failure::usage(format!("bad JSON arguments: {e}")))
    };
    match st {
        Serialize::Json => {
            json()?;
            Ok(raw.to_vec())
        }
        Serialize::Msgpack => rmp_serde::to_vec_named(&json()?).map_err(|e| Failure::usage(format!("msgpack: {e}"))),
        Serialize::Raw => Ok(raw.to_vec()),
        Serialize::Protobuf => {
            let text: String = String::from_utf8_lossy(raw).chars().filter(|c| !c.is_whitespace()).collect();
            hex::decode(&text)
                .map_err(|e| Failure::usage(format!("protobuf arguments must be hex (no descriptor support): {e}")))
        }
    }
}

/// A failed call as the CLI reports it: the server's error (exit 1, or 2 for an
/// unknown service or method), or the transport's.
fn call_failure(e: &Error, verbose: bool) -> Failure {
    if let Some(remote) = e.remote() {
        if verbose {
            eprint!("{}", response_header(&remote.response));
        }
        let text = &remote.text;
        if text.starts_with("rpcx: can't find service") || text.starts_with("rpcx: can't find method") {
            return Failure::usage(format!("server error: {text}"));
        }
        return Failure::failed(format!("server error: {text}"));
    }
    match e {
        Error::Call(CallError::TimedOut) => Failure::failed("call timed out"),
        other => Failure::failed(other.to_string()),
    }
}

fn response_header(msg: &Message) -> String {
    let h = &msg.header;
    let mut s = format!(
        "< seq={} serialize={} compress={} status={}{}\n",
        h.seq(),
        serialize_name(h.serialize_type()),
        compress_name(h.compress_type()),
        if h.status().bits() == 1 { "error" } else { "normal" },
        if h.is_heartbeat() { " heartbeat" } else { "" },
    );
    for (k, v) in msg.metadata.iter() {
        s.push_str(&format!("< {}: {}\n", String::from_utf8_lossy(k), String::from_utf8_lossy(v)));
    }
    s
}

pub(crate) async fn run(a: CallArgs) -> Outcome {
    let (service, method) = split_method(&a.method)?;
    let addr = if a.addr.contains("://") {
        crate::registry::pick(&crate::registry::Registry::parse(&a.addr, &a.base_path)?, service).await?
    } else {
        crate::net::check_addr(&a.addr)?;
        a.addr.clone()
    };
    if a.verbose && addr != a.addr {
        eprintln!("calling {addr} (from {})", a.addr);
    }
    let schema = crate::proto::load(a.proto.as_deref(), a.descriptor_set.as_deref(), &a.proto_path)?;
    let serialize = a.serialize.unwrap_or(if schema.is_some() { Serialize::Protobuf } else { Serialize::Json });
    let types = match &schema {
        Some(_) if serialize != Serialize::Protobuf => {
            return Err(Failure::usage("--proto / --descriptor-set go with --serialize protobuf"));
        }
        Some(pool) => {
            Some(crate::proto::types(pool, service, method, a.request_type.as_deref(), a.reply_type.as_deref())?)
        }
        None if a.request_type.is_some() || a.reply_type.is_some() => {
            return Err(Failure::usage("--request-type / --reply-type need --proto or --descriptor-set"));
        }
        None => None,
    };
    let payload = match &types {
        Some((req, _)) => {
            crate::proto::encode(req, &read_args(Some(a.args.as_deref().unwrap_or("{}")), Serialize::Json)?)?
        }
        None => encode_args(&read_args(a.args.as_deref(), serialize)?, serialize)?,
    };
    let mut meta = Vec::new();
    for kv in &a.meta {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Failure::usage(format!("bad metadata {kv:?}: expected KEY=VALUE")));
        };
        meta.push((k.to_owned(), v.to_owned()));
    }
    let client = crate::net::connect(&addr, &a.connect).await?;
    let mut req = client.request(service, method).serialize_type(serialize.wire()).timeout(a.timeout);
    if a.gzip {
        req = req.compress(CompressType::GZIP);
    }
    for (k, v) in &meta {
        req = req.metadata(k, v);
    }
    if let Some(token) = &a.auth {
        req = req.metadata(AUTH_KEY, token);
    }
    if a.oneway {
        let r = req.oneway_raw(payload).await;
        client.close().await;
        return r.map_err(|e| call_failure(&e, a.verbose));
    }
    let pushes = client.take_push_receiver();
    let result = req.call_raw(payload).await;
    // Pushes the server sent on this connection before its reply (e.g. Notify.Subscribe).
    if let Some(rx) = pushes {
        while let Some(push) = rx.try_recv() {
            eprintln!("{}", push_line(&push));
        }
    }
    client.close().await;
    let reply = result.map_err(|e| call_failure(&e, a.verbose))?;
    if a.verbose {
        eprint!("{}", response_header(&reply));
    }
    print_reply(&reply, a.output, types.as_ref().map(|t| &t.1))
}

/// A server push, on one line: `push Service.Method {meta} payload`.
fn push_line(m: &Message) -> String {
    let (v, _) = payload_value(m.header.serialize_type(), &m.payload);
    let payload = match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let meta: Vec<String> = m.metadata.iter_str().map(|(k, v)| format!("{k}={v}")).collect();
    let meta = if meta.is_empty() { String::new() } else { format!(" {{{}}}", meta.join(", ")) };
    format!(
        "push {}.{}{meta} {payload}",
        String::from_utf8_lossy(&m.service_path),
        String::from_utf8_lossy(&m.service_method)
    )
}

fn print_reply(reply: &Message, output: Output, schema: Option<&prost_reflect::MessageDescriptor>) -> Outcome {
    let mut out = std::io::stdout().lock();
    let r = match output {
        Output::Raw => out.write_all(&reply.payload),
        Output::Hex => writeln!(out, "{}", hex::encode(&reply.payload)),
        Output::Json => {
            let st = reply.header.serialize_type();
            let text = if let (Some(desc), true) = (schema, st == SerializeType::PROTOBUF) {
                let v = crate::proto::to_json(desc, &reply.payload).map_err(Failure::failed)?;
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            } else if st == SerializeType::PROTOBUF {
                hex::encode(&reply.payload)
            } else {
                match payload_value(st, &reply.payload) {
                    (serde_json::Value::String(s), "text" | "hex" | "empty") => s,
                    (v, _) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()),
                }
            };
            writeln!(out, "{text}")
        }
    };
    r.and_then(|()| out.flush()).map_err(|e| Failure::failed(format!("writing the reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_encoding() {
        assert_eq!(encode_args(br#"{"A":1}"#, Serialize::Json).unwrap(), br#"{"A":1}"#);
        assert_eq!(
            encode_args(br#"{"A":10,"B":20}"#, Serialize::Msgpack).unwrap(),
            [0x82, 0xa1, 0x41, 0x0a, 0xa1, 0x42, 0x14]
        );
        assert_eq!(encode_args(b"08 0a 10 14", Serialize::Protobuf).unwrap(), [8, 10, 16, 20]);
        assert!(matches!(encode_args(b"{nope", Serialize::Json), Err(Failure::Usage(_))));
        assert!(matches!(encode_args(b"zz", Serialize::Protobuf), Err(Failure::Usage(_))));
        assert_eq!(split_method("Arith.Mul").unwrap(), ("Arith", "Mul"));
        assert!(split_method("ArithMul").is_err());
    }
}
