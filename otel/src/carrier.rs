//! rpcx request metadata as an OpenTelemetry text-map carrier (Go's
//! `rpcx-plugins/share.metadataSupplier`), and Go's `%+v` rendering of a metadata map
//! for the span events.

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector};
use rpcx_core::wire::Metadata;

/// Writes propagation fields (`traceparent`, `tracestate`, `baggage`) into metadata.
pub(crate) struct MetadataInjector<'a>(pub(crate) &'a mut Metadata);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(Bytes::copy_from_slice(key.as_bytes()), value);
    }
}

/// Reads propagation fields from metadata (keys that are not UTF-8 are not seen).
pub(crate) struct MetadataExtractor<'a>(pub(crate) &'a Metadata);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key).ok().flatten()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter_str().map(|(k, _)| k).collect()
    }
}

/// Go's `fmt.Sprintf("%+v", map[string]string)`: `map[k1:v1 k2:v2]`, keys sorted (as
/// rpcx-plugins writes the metadata into its server span events).
pub(crate) fn go_map(md: &Metadata) -> String {
    let mut pairs: Vec<(String, String)> = md
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    pairs.sort();
    let mut out = String::from("map[");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        out.push_str(v);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injector_and_extractor_round_trip() {
        let mut md = Metadata::new();
        md.insert("other", "x");
        MetadataInjector(&mut md).set("traceparent", "00-abc-def-01".to_owned());
        MetadataInjector(&mut md).set("traceparent", "00-123-456-01".to_owned());
        let ex = MetadataExtractor(&md);
        assert_eq!(ex.get("traceparent"), Some("00-123-456-01"));
        assert_eq!(ex.get("missing"), None);
        let mut keys = ex.keys();
        keys.sort_unstable();
        assert_eq!(keys, ["other", "traceparent"]);
    }

    #[test]
    fn go_map_sorts_keys_like_fmt() {
        let mut md = Metadata::new();
        assert_eq!(go_map(&md), "map[]");
        md.insert("tracestate", "");
        md.insert("b", "2");
        md.insert("a", "1");
        assert_eq!(go_map(&md), "map[a:1 b:2 tracestate:]");
    }
}
