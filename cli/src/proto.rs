//! Protobuf with a schema: a `.proto` file compiled in-process (protox) or a
//! `FileDescriptorSet` (`protoc --descriptor_set_out`), then JSON to protobuf for the
//! request and protobuf to JSON for the reply (prost-reflect).

use crate::Failure;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use std::path::{Path, PathBuf};

/// Load the schema from `--proto` (with its import paths) or `--descriptor-set`.
pub(crate) fn load(
    proto: Option<&Path>,
    descriptor_set: Option<&Path>,
    includes: &[PathBuf],
) -> Result<Option<DescriptorPool>, Failure> {
    match (proto, descriptor_set) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Failure::usage("give --proto or --descriptor-set, not both")),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).map_err(|e| Failure::usage(format!("--descriptor-set {}: {e}", path.display())))?;
            DescriptorPool::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| Failure::usage(format!("--descriptor-set {}: {e}", path.display())))
        }
        (Some(path), None) => {
            if !path.is_file() {
                return Err(Failure::usage(format!("--proto {}: no such file", path.display())));
            }
            // The file is named relative to its own directory, which is searched first.
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let name =
                path.file_name().ok_or_else(|| Failure::usage(format!("--proto {}: not a file", path.display())))?;
            let mut dirs = vec![dir.to_path_buf()];
            dirs.extend(includes.iter().cloned());
            let compiled = protox::Compiler::new(dirs).and_then(|mut c| {
                c.include_imports(true);
                c.open_files([name])?;
                Ok(c.descriptor_pool())
            });
            // protox's errors span several lines (source excerpts): keep the first.
            compiled.map(Some).map_err(|e| {
                let text = e.to_string();
                Failure::usage(format!("--proto {}: {}", path.display(), text.lines().next().unwrap_or("error")))
            })
        }
    }
}

fn message(pool: &DescriptorPool, name: &str, flag: &str) -> Result<MessageDescriptor, Failure> {
    pool.get_message_by_name(name.trim_start_matches('.')).ok_or_else(|| {
        Failure::usage(format!("{flag} {name}: no such message in the schema (use the full name, e.g. pkg.Msg)"))
    })
}

/// The request and reply types: given, or those of the schema's `service` (full name,
/// or its last part) with an rpc named `method`.
pub(crate) fn types(
    pool: &DescriptorPool,
    service: &str,
    method: &str,
    request: Option<&str>,
    reply: Option<&str>,
) -> Result<(MessageDescriptor, MessageDescriptor), Failure> {
    let rpc = pool
        .services()
        .filter(|s| s.full_name() == service || s.name() == service)
        .find_map(|s| s.methods().find(|m| m.name() == method));
    let req = match (request, &rpc) {
        (Some(n), _) => message(pool, n, "--request-type")?,
        (None, Some(m)) => m.input(),
        (None, None) => {
            return Err(Failure::usage(format!(
                "the schema has no rpc {service}.{method}: give --request-type and --reply-type"
            )));
        }
    };
    let rep = match (reply, &rpc) {
        (Some(n), _) => message(pool, n, "--reply-type")?,
        (None, Some(m)) => m.output(),
        (None, None) => return Err(Failure::usage("give --reply-type too")),
    };
    Ok((req, rep))
}

/// JSON text to protobuf bytes of `desc` (proto3 JSON mapping; field names as in the
/// .proto or their JSON names).
pub(crate) fn encode(desc: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let msg = DynamicMessage::deserialize(desc.clone(), &mut de)
        .map_err(|e| Failure::usage(format!("arguments as {}: {e}", desc.full_name())))?;
    de.end().map_err(|e| Failure::usage(format!("arguments as {}: {e}", desc.full_name())))?;
    Ok(msg.encode_to_vec())
}

/// Protobuf bytes of `desc` as JSON (field names as in the .proto, 64-bit integers as
/// numbers, fields at their default values shown).
pub(crate) fn to_json(desc: &MessageDescriptor, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let msg = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| format!("reply as {}: {e}", desc.full_name()))?;
    let opts =
        SerializeOptions::new().stringify_64_bit_integers(false).use_proto_field_name(true).skip_default_fields(false);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| format!("reply as {}: {e}", desc.full_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_through_a_proto_file() {
        let dir = std::env::temp_dir().join(format!("rpcx-cli-proto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.proto");
        std::fs::write(
            &path,
            "syntax = \"proto3\"; package t; message In { int64 A = 1; int64 B = 2; } message Out { int64 C = 1; }\n\
             service Arith { rpc Mul(In) returns (Out); }\n",
        )
        .unwrap();
        let pool = load(Some(&path), None, &[]).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let (req, rep) = types(&pool, "Arith", "Mul", None, None).unwrap();
        assert_eq!((req.full_name(), rep.full_name()), ("t.In", "t.Out"));
        assert_eq!(encode(&req, br#"{"A":10,"B":20}"#).unwrap(), [0x08, 10, 0x10, 20]);
        assert_eq!(to_json(&rep, &[0x08, 0xc8, 0x01]).unwrap(), serde_json::json!({"C": 200}));
        assert_eq!(to_json(&rep, &[]).unwrap(), serde_json::json!({"C": 0}));
        assert!(matches!(encode(&req, br#"{"Z":1}"#), Err(Failure::Usage(_))));
        assert!(matches!(types(&pool, "Arith", "Div", None, None), Err(Failure::Usage(_))));
        let (req, _) = types(&pool, "X", "Y", Some("t.Out"), Some("t.In")).unwrap();
        assert_eq!(req.full_name(), "t.Out");
    }
}
