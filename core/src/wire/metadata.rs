//! Message metadata: an ordered list of byte-string pairs.

use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;

/// Metadata key carrying a server's error text in an Error response.
pub const SERVICE_ERROR_KEY: &str = "__rpcx_error__";
/// Metadata key carrying the client's auth token.
pub const AUTH_KEY: &str = "__AUTH";
/// Metadata key carrying the client's remaining deadline, in milliseconds (decimal).
pub const SERVER_TIMEOUT_KEY: &str = "__ServerTimeout";

/// Request or response metadata: key/value byte strings.
///
/// * Encoding writes pairs in insertion order (Go writes map order, which is random, so
///   any order is valid on the wire).
/// * Decoding accepts any order; when a key repeats, the last value wins (as in Go) and
///   the key keeps the position of its first occurrence.
/// * Keys and values are bytes: the `*_str` accessors report non-UTF-8 as an error
///   instead of panicking.
///
/// Lookups and inserts stay cheap for large maps: past 16 pairs, an insert
/// builds a hash index (std's `HashMap`, randomly keyed, so a peer cannot choose keys
/// that collide), so filling a map with `n` pairs costs O(n), not O(n^2).
#[derive(Clone, Default)]
pub struct Metadata {
    pairs: Vec<(Bytes, Bytes)>,
    /// Key -> position, kept while present; built by `insert` once there are more than
    /// `INDEX_AT` pairs, dropped by `remove` and `clear`.
    // Boxed: an unindexed map (nearly all of them) then costs 8 bytes, not 48.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Bytes, usize>>>,
}

/// Pairs above which [`Metadata::insert`] keeps a hash index instead of scanning.
const INDEX_AT: usize = 16;

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for Metadata {}

impl std::hash::Hash for Metadata {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pairs.hash(state);
    }
}

impl Metadata {
    /// Empty metadata (encodes as `metadataLen = 0`, like Go's nil map).
    pub const fn new() -> Self {
        Self { pairs: Vec::new(), index: None }
    }

    /// Empty metadata with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        Self { pairs: Vec::with_capacity(n), index: None }
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Set `key` to `value`. An existing key keeps its position and gets the new value,
    /// which is returned.
    pub fn insert(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Option<Bytes> {
        let key = key.into();
        let value = value.into();
        if self.index.is_none() && self.pairs.len() >= INDEX_AT {
            let mut index = HashMap::with_capacity(self.pairs.len() * 2);
            for (i, (k, _)) in self.pairs.iter().enumerate() {
                // Pairs are distinct keys (decoding dedups), so this keeps each position.
                index.entry(k.clone()).or_insert(i);
            }
            self.index = Some(Box::new(index));
        }
        if let Some(i) = self.position(&key) {
            return Some(std::mem::replace(&mut self.pairs[i].1, value));
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.pairs.len());
        }
        self.pairs.push((key, value));
        None
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.pairs.iter().position(|(k, _)| k.as_ref() == key),
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Bytes> {
        self.position(key.as_ref()).map(|i| &self.pairs[i].1)
    }

    /// The value of `key` as UTF-8 text. `Ok(None)` if absent, `Err` if not UTF-8.
    pub fn get_str(&self, key: impl AsRef<[u8]>) -> Result<Option<&str>, std::str::Utf8Error> {
        self.get(key).map(|v| std::str::from_utf8(v)).transpose()
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> bool {
        self.get(key).is_some()
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        let i = self.position(key.as_ref())?;
        self.index = None;
        Some(self.pairs.remove(i).1)
    }

    /// Pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Bytes, &Bytes)> + '_ {
        self.pairs.iter().map(|(k, v)| (k, v))
    }

    /// Pairs whose key and value are both UTF-8, in order; others are skipped.
    pub fn iter_str(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// Remove every pair.
    pub fn clear(&mut self) {
        self.index = None;
        self.pairs.clear();
    }

    /// Length of the encoded block (without its own length prefix).
    pub fn encoded_len(&self) -> u64 {
        self.pairs.iter().map(|(k, v)| 8 + k.len() as u64 + v.len() as u64).sum()
    }

    /// Append a decoded pair, applying "last wins" for a repeated key.
    ///
    /// The duplicate scan is linear for small maps; decoders use
    /// [`Metadata::dedup_decoded`] once at the end for large ones.
    pub(crate) fn push_decoded(&mut self, key: Bytes, value: Bytes) {
        debug_assert!(self.index.is_none());
        self.pairs.push((key, value));
    }

    /// Collapse repeated keys after decoding: first position, last value.
    pub(crate) fn dedup_decoded(&mut self) {
        let n = self.pairs.len();
        if n < 2 {
            return;
        }
        let has_dup = if n <= 16 {
            (1..n).any(|i| self.pairs[..i].iter().any(|(k, _)| *k == self.pairs[i].0))
        } else {
            let mut seen = std::collections::HashSet::with_capacity(n);
            !self.pairs.iter().all(|(k, _)| seen.insert(k.clone()))
        };
        if !has_dup {
            return;
        }
        let mut out: Vec<(Bytes, Bytes)> = Vec::with_capacity(n);
        let mut index = std::collections::HashMap::with_capacity(n);
        for (k, v) in self.pairs.drain(..) {
            match index.get(&k) {
                Some(&i) => out[i] = (k, v),
                None => {
                    index.insert(k.clone(), out.len());
                    out.push((k, v));
                }
            }
        }
        self.pairs = out;
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.pairs.iter().map(|(k, v)| (ByteStr(k), ByteStr(v)))).finish()
    }
}

struct ByteStr<'a>(&'a [u8]);

impl fmt::Debug for ByteStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => fmt::Debug::fmt(s, f),
            Err(_) => write!(f, "b{:?}", bytes::Bytes::copy_from_slice(self.0)),
        }
    }
}

impl<K: Into<Bytes>, V: Into<Bytes>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<K: Into<Bytes>, V: Into<Bytes>> Extend<(K, V)> for Metadata {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_keeps_order_and_replaces_in_place() {
        let mut m = Metadata::new();
        m.insert("b", "1");
        m.insert("a", "2");
        assert_eq!(m.insert("b", "3"), Some(Bytes::from_static(b"1")));
        let keys: Vec<_> = m.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![Bytes::from_static(b"b"), Bytes::from_static(b"a")]);
        assert_eq!(m.get("b").unwrap().as_ref(), b"3");
    }

    #[test]
    fn decoded_duplicates_last_value_wins() {
        for n in [3usize, 40] {
            let mut m = Metadata::new();
            for i in 0..n {
                m.push_decoded(Bytes::from(format!("k{i}")), Bytes::from_static(b"x"));
            }
            m.push_decoded(Bytes::from_static(b"k1"), Bytes::from_static(b"last"));
            m.dedup_decoded();
            assert_eq!(m.len(), n);
            assert_eq!(m.get("k1").unwrap().as_ref(), b"last");
            assert_eq!(m.iter().nth(1).unwrap().0.as_ref(), b"k1");
        }
    }

    #[test]
    fn large_maps_use_the_index_and_stay_consistent() {
        let mut m = Metadata::new();
        for i in 0..1000 {
            assert_eq!(m.insert(format!("k{i}"), format!("v{i}")), None);
        }
        assert!(m.index.is_some());
        assert_eq!(m.insert("k500", "new"), Some(Bytes::from("v500")));
        assert_eq!(m.get("k500").unwrap().as_ref(), b"new");
        assert_eq!(m.iter().nth(500).unwrap().0.as_ref(), b"k500");
        assert_eq!(m.remove("k10"), Some(Bytes::from("v10")));
        assert!(m.get("k10").is_none());
        assert_eq!(m.get("k999").unwrap().as_ref(), b"v999");
        m.insert("k10", "back");
        assert_eq!(m.iter().last().unwrap().0.as_ref(), b"k10");
        assert_eq!(m.len(), 1000);
        let copy: Metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(copy, m);
    }

    #[test]
    fn non_utf8_is_an_error_not_a_panic() {
        let mut m = Metadata::new();
        m.insert(Bytes::from_static(b"k"), Bytes::from_static(&[0xff, 0xfe]));
        assert!(m.get_str("k").is_err());
        assert_eq!(m.iter_str().count(), 0);
    }
}
