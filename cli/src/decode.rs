//! `rpcx decode`: frames from hex, a file or stdin.

use crate::frame::{FrameReader, FrameView};
use crate::{Failure, Outcome};
use clap::Args;
use std::io::{Read, Write};

#[derive(Args, Debug)]
pub(crate) struct DecodeArgs {
    /// Frames as hex (whitespace ignored). Without it, --file or stdin is read (either
    /// may be binary frames, hex text or a pcap/pcapng capture).
    hex: Option<String>,
    /// Read this file: binary frames, hex text, or a pcap/pcapng capture (TCP streams
    /// reassembled per flow).
    #[arg(short, long, conflicts_with = "hex")]
    file: Option<std::path::PathBuf>,
    /// One JSON object per frame.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    schema: SchemaArgs,
}

/// A protobuf schema for reading protobuf payloads (`decode`, `dump`).
#[derive(clap::Args, Debug)]
pub(crate) struct SchemaArgs {
    /// Show protobuf payloads as JSON through this .proto's services: a frame of
    /// `Service.Method` is read as the rpc's input (request) or output (response).
    #[arg(long, value_name = "FILE")]
    proto: Option<std::path::PathBuf>,
    /// The same from a FileDescriptorSet (protoc --include_imports --descriptor_set_out).
    #[arg(long, value_name = "FILE")]
    descriptor_set: Option<std::path::PathBuf>,
    /// Import path for --proto (repeatable).
    #[arg(short = 'I', long = "proto-path", value_name = "DIR")]
    proto_path: Vec<std::path::PathBuf>,
}

impl SchemaArgs {
    pub(crate) fn load(&self) -> Result<Option<prost_reflect::DescriptorPool>, Failure> {
        crate::proto::load(self.proto.as_deref(), self.descriptor_set.as_deref(), &self.proto_path)
    }
}

/// Input bytes: binary frames start with the magic byte 0x08, anything else is read
/// as hex text.
pub(crate) fn frames_bytes(input: &[u8]) -> Result<Vec<u8>, Failure> {
    let start = input.iter().position(|b| !b.is_ascii_whitespace());
    match start {
        None => Ok(Vec::new()),
        Some(i) if input[i] == 0x08 => Ok(input.to_vec()),
        Some(_) => {
            let text: Vec<u8> = input.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            if let Some(pos) = text.iter().position(|b| !b.is_ascii_hexdigit()) {
                return Err(Failure::usage(format!(
                    "input is neither rpcx frames (first byte 0x08) nor hex: non-hex character at hex digit {pos}"
                )));
            }
            hex::decode(&text).map_err(|e| Failure::usage(format!("bad hex: {e}")))
        }
    }
}

pub(crate) fn print_frame(
    out: &mut impl Write,
    view: &FrameView,
    json: bool,
    label: &str,
    extra: &[(&str, serde_json::Value)],
) -> std::io::Result<()> {
    if json { writeln!(out, "{}", view.to_json(extra)) } else { writeln!(out, "{}", view.to_text(label)) }
}

pub(crate) fn run(a: DecodeArgs) -> Outcome {
    let input = match (&a.hex, &a.file) {
        (Some(h), _) => h.as_bytes().to_vec(),
        (None, Some(path)) => {
            std::fs::read(path).map_err(|e| Failure::usage(format!("reading {}: {e}", path.display())))?
        }
        (None, None) => {
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v).map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
            v
        }
    };
    let schema = a.schema.load()?;
    if crate::pcap::is_capture(&input) {
        return crate::pcap::decode_capture(&input, a.json, schema);
    }
    let bytes = frames_bytes(&input)?;
    let mut reader = FrameReader::new(schema);
    reader.feed(&bytes);
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| Failure::failed(format!("writing: {e}"));
    let mut n = 0usize;
    let mut bad_payloads = 0usize;
    loop {
        match reader.next_frame() {
            Ok(Some(view)) => {
                bad_payloads += usize::from(view.payload_error.is_some());
                print_frame(&mut out, &view, a.json, &format!("#{n} "), &[("frame", n.into())]).map_err(io)?;
                n += 1;
            }
            Ok(None) => break,
            Err(m) => {
                out.flush().map_err(io)?;
                return Err(Failure::failed(m.to_string()));
            }
        }
    }
    out.flush().map_err(io)?;
    reader.finish().map_err(|m| Failure::failed(m.to_string()))?;
    if bad_payloads > 0 {
        return Err(Failure::failed(format!("{bad_payloads} frame(s) with a payload that could not be decompressed")));
    }
    if n == 0 {
        return Err(Failure::failed("no frame in the input"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_forms() {
        assert_eq!(frames_bytes(b" 08 00\n").unwrap(), [8, 0]);
        assert_eq!(frames_bytes(&[8, 1, 2]).unwrap(), [8, 1, 2]);
        assert!(matches!(frames_bytes(b"xyz"), Err(Failure::Usage(_))));
        assert!(matches!(frames_bytes(b"080"), Err(Failure::Usage(_))));
    }

    #[test]
    fn truncated_and_garbage_report_offsets() {
        let v2 = hex::decode(
            "0800003000000000000000000000001f000000054172697468000000034d756c000000000000000782a1410aa14214",
        )
        .unwrap();
        let mut r = FrameReader::new(None);
        r.feed(&v2);
        r.feed(&v2[..10]);
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.offset, f.len), (0, v2.len()));
        assert!(r.next_frame().unwrap().is_none());
        let e = r.finish().unwrap_err();
        assert_eq!(e.offset, v2.len() as u64);
        let mut r = FrameReader::new(None);
        r.feed(&v2);
        r.feed(&[0x07, 0, 0]);
        assert!(r.next_frame().unwrap().is_some());
        let e = r.next_frame().unwrap_err();
        assert_eq!(e.offset, v2.len() as u64);
        assert!(e.to_string().contains("byte offset 47"), "{e}");
    }
}
