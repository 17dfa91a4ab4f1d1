//! Message metadata: an ordered list of byte-string pairs.
//!
//! A decoded [`Metadata`] of up to [`LAZY_MAX`] distinct keys keeps the block as it came
//! off the wire (one reference-counted slice of the frame, validated at decode time) and
//! parses pairs out of it on access; `get` and `iter`, which hand out `&Bytes`, build the
//! pairs once, on first use, and keep them. Encoding an untouched decoded block copies
//! it as it is.

use super::DecodeError;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

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
///
/// Decoding allocates nothing for a block of up to 16 distinct keys: the block stays one
/// slice of the frame. `len`, `get_str`, `contains_key`, `iter_str`, `encoded_len`,
/// equality and encoding read it in place; `get` of a present key and `iter` (which
/// return `&Bytes`) parse it into pairs once; `insert` and `remove` parse it and then own
/// the pairs.
#[derive(Clone, Default)]
pub struct Metadata {
    /// The block as received, when decoding left it so: validated, at most [`LAZY_MAX`]
    /// pairs, no key twice. Empty when `parsed` holds the pairs.
    wire: Bytes,
    /// Pairs in `wire` (0 when `wire` is empty).
    wire_pairs: u32,
    /// The pairs: authoritative when `wire` is empty (unset means none), else a cache of
    /// `wire` parsed, filled on the first access that needs `&Bytes`.
    parsed: OnceLock<Pairs>,
}

/// Most pairs a decoded block may have and stay unparsed (and most it is scanned for
/// repeated keys without a hash set).
const LAZY_MAX: usize = 16;

/// Pairs above which [`Metadata::insert`] keeps a hash index instead of scanning.
const INDEX_AT: usize = 16;

#[derive(Clone, Default)]
struct Pairs {
    pairs: Vec<(Bytes, Bytes)>,
    /// Key -> position, kept while present; built by `insert` once there are more than
    /// `INDEX_AT` pairs, dropped by `remove` and `clear`.
    // Boxed: an unindexed map (nearly all of them) then costs 8 bytes, not 48.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Bytes, usize>>>,
}

static NO_PAIRS: Pairs = Pairs { pairs: Vec::new(), index: None };

impl Pairs {
    fn position(&self, key: &[u8]) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.pairs.iter().position(|(k, _)| k.as_ref() == key),
        }
    }

    fn insert(&mut self, key: Bytes, value: Bytes) -> Option<Bytes> {
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

    /// Every pair of a block, repeated keys included, in wire order.
    fn from_block(block: &Bytes, n: usize) -> Self {
        let mut pairs = Vec::with_capacity(n);
        let mut pos = 0;
        while pos < block.len() {
            let (k, v, next) = pair_at(block, pos);
            pairs.push((block.slice(k), block.slice(v)));
            pos = next;
        }
        Self { pairs, index: None }
    }

    /// Collapse repeated keys after decoding: first position, last value.
    fn dedup(&mut self) {
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
        let mut index = HashMap::with_capacity(n);
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

/// A cheap 64-bit summary of a key (its first and last up to 8 bytes), so that the
/// repeated-key check rarely compares whole keys.
#[inline]
fn fingerprint(key: &[u8]) -> u64 {
    let (a, b) = super::names::words(key);
    a ^ b.rotate_left(32)
}

/// The big-endian `u32` at `pos` of a validated block.
#[inline]
fn len_at(block: &[u8], pos: usize) -> usize {
    let b: [u8; 4] = block[pos..pos + 4].try_into().expect("4 bytes");
    u32::from_be_bytes(b) as usize
}

/// The key range, value range and next position of the pair at `pos` of a validated
/// block.
#[inline]
fn pair_at(block: &[u8], pos: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
    let k = pos + 4;
    let klen = len_at(block, pos);
    let v = k + klen + 4;
    let vlen = len_at(block, k + klen);
    (k..k + klen, v..v + vlen, v + vlen)
}

/// A length prefix at `pos` of an unvalidated block, with the bytes it announces in
/// the block: the position after them, or `MetadataTruncated`.
#[inline]
fn checked_len(block: &[u8], pos: usize) -> Result<(usize, usize), DecodeError> {
    let Some(prefix) = block.get(pos..pos + 4) else { return Err(DecodeError::MetadataTruncated) };
    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if len > block.len() - (pos + 4) {
        return Err(DecodeError::MetadataTruncated);
    }
    Ok((len, pos + 4 + len))
}

/// Pairs read in place: from a wire block or from parsed pairs.
#[derive(Clone)]
enum Entries<'a> {
    Wire { block: &'a [u8], pos: usize, left: usize },
    Parsed(std::slice::Iter<'a, (Bytes, Bytes)>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Wire { block, pos, left } => {
                if *left == 0 {
                    return None;
                }
                let block: &'a [u8] = block;
                let (k, v, next) = pair_at(block, *pos);
                *pos = next;
                *left -= 1;
                Some((&block[k], &block[v]))
            }
            Entries::Parsed(it) => it.next().map(|(k, v)| (k.as_ref(), v.as_ref())),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Entries::Wire { left, .. } => *left,
            Entries::Parsed(it) => it.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Entries<'_> {}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.entries().eq(other.entries())
    }
}

impl Eq for Metadata {}

impl std::hash::Hash for Metadata {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for (k, v) in self.entries() {
            k.hash(state);
            v.hash(state);
        }
    }
}

impl Metadata {
    /// Empty metadata (encodes as `metadataLen = 0`, like Go's nil map).
    pub const fn new() -> Self {
        Self { wire: Bytes::new(), wire_pairs: 0, parsed: OnceLock::new() }
    }

    /// Empty metadata with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        let parsed = OnceLock::from(Pairs { pairs: Vec::with_capacity(n), index: None });
        Self { wire: Bytes::new(), wire_pairs: 0, parsed }
    }

    /// Decode a metadata block (without its length prefix), as the frame decoder does.
    ///
    /// Validates the whole block (every length inside it, at most `max_pairs` pairs on
    /// the wire). A block of at most [`LAZY_MAX`] pairs with no repeated key is kept as
    /// it is, unparsed and without allocating; any other is parsed into pairs and
    /// deduplicated now.
    pub(crate) fn decode(block: Bytes, max_pairs: usize) -> Result<Self, DecodeError> {
        if block.is_empty() {
            return Ok(Self::new());
        }
        let b: &[u8] = &block;
        // (start, len, fingerprint) of each key, for the repeated-key check: keys are
        // compared byte for byte only when length and fingerprint agree.
        let mut keys = [(0u32, 0u32, 0u64); LAZY_MAX];
        let mut n = 0usize;
        let mut pos = 0usize;
        let mut repeated = false;
        while pos < b.len() {
            if n >= max_pairs {
                return Err(DecodeError::TooManyMetadataPairs { max: max_pairs });
            }
            let k = pos + 4;
            let (klen, after_key) = checked_len(b, pos)?;
            let (_, after_value) = checked_len(b, after_key)?;
            pos = after_value;
            if n < LAZY_MAX && !repeated {
                let key = &b[k..after_key];
                let fp = fingerprint(key);
                repeated = keys[..n]
                    .iter()
                    .any(|&(s, l, f)| f == fp && l as usize == klen && &b[s as usize..s as usize + klen] == key);
                // A block is at most u32::MAX bytes (its length prefix).
                keys[n] = (k as u32, klen as u32, fp);
            }
            n += 1;
        }
        if n > LAZY_MAX || repeated {
            let mut pairs = Pairs::from_block(&block, n);
            pairs.dedup();
            return Ok(Self { wire: Bytes::new(), wire_pairs: 0, parsed: OnceLock::from(pairs) });
        }
        Ok(Self { wire: block, wire_pairs: n as u32, parsed: OnceLock::new() })
    }

    /// Whether the pairs are still the unparsed wire block.
    #[inline(always)]
    fn on_wire(&self) -> bool {
        !self.wire.is_empty()
    }

    /// The pairs, parsing the wire block (once) if need be.
    fn pairs(&self) -> &Pairs {
        if self.on_wire() {
            self.parsed.get_or_init(|| Pairs::from_block(&self.wire, self.wire_pairs as usize))
        } else {
            self.parsed.get().unwrap_or(&NO_PAIRS)
        }
    }

    /// The pairs to change: the wire block, if any, is parsed and dropped.
    fn pairs_mut(&mut self) -> &mut Pairs {
        if self.on_wire() {
            let wire = std::mem::take(&mut self.wire);
            if self.parsed.get().is_none() {
                let _ = self.parsed.set(Pairs::from_block(&wire, self.wire_pairs as usize));
            }
            self.wire_pairs = 0;
        } else if self.parsed.get().is_none() {
            let _ = self.parsed.set(Pairs::default());
        }
        self.parsed.get_mut().expect("set above")
    }

    /// Pairs in order, read in place.
    #[inline]
    fn entries(&self) -> Entries<'_> {
        if self.on_wire() {
            Entries::Wire { block: &self.wire, pos: 0, left: self.wire_pairs as usize }
        } else {
            Entries::Parsed(self.parsed.get().unwrap_or(&NO_PAIRS).pairs.iter())
        }
    }

    /// The value of `key` read in place (the wire block holds each key once).
    fn find(&self, key: &[u8]) -> Option<&[u8]> {
        if self.on_wire() {
            self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
        } else {
            let pairs = self.parsed.get()?;
            pairs.position(key).map(|i| pairs.pairs[i].1.as_ref())
        }
    }

    /// The encoded block exactly as received, while the metadata is an untouched decode.
    #[cfg(test)]
    fn wire_block(&self) -> Option<&[u8]> {
        self.on_wire().then_some(&self.wire[..])
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        if self.on_wire() { self.wire_pairs as usize } else { self.parsed.get().map_or(0, |p| p.pairs.len()) }
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set `key` to `value`. An existing key keeps its position and gets the new value,
    /// which is returned.
    pub fn insert(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Option<Bytes> {
        self.pairs_mut().insert(key.into(), value.into())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Bytes> {
        let key = key.as_ref();
        // An absent key parses nothing.
        if self.on_wire() && self.find(key).is_none() {
            return None;
        }
        let pairs = self.pairs();
        pairs.position(key).map(|i| &pairs.pairs[i].1)
    }

    /// The value of `key` as bytes, read in place (unlike [`get`](Self::get), never
    /// builds the pair list of a decoded block).
    pub fn get_slice(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        self.find(key.as_ref())
    }

    /// The value of `key` as UTF-8 text. `Ok(None)` if absent, `Err` if not UTF-8.
    pub fn get_str(&self, key: impl AsRef<[u8]>) -> Result<Option<&str>, std::str::Utf8Error> {
        self.find(key.as_ref()).map(std::str::from_utf8).transpose()
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> bool {
        self.find(key.as_ref()).is_some()
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        let key = key.as_ref();
        if self.on_wire() && self.find(key).is_none() {
            return None;
        }
        let pairs = self.pairs_mut();
        let i = pairs.position(key)?;
        pairs.index = None;
        Some(pairs.pairs.remove(i).1)
    }

    /// Pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Bytes, &Bytes)> + '_ {
        self.pairs().pairs.iter().map(|(k, v)| (k, v))
    }

    /// Pairs whose key and value are both UTF-8, in order; others are skipped.
    pub fn iter_str(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries().filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// Remove every pair.
    pub fn clear(&mut self) {
        self.wire = Bytes::new();
        self.wire_pairs = 0;
        if let Some(pairs) = self.parsed.get_mut() {
            pairs.index = None;
            pairs.pairs.clear();
        }
    }

    /// Length of the encoded block (without its own length prefix).
    #[inline]
    pub fn encoded_len(&self) -> u64 {
        if self.on_wire() {
            return self.wire.len() as u64;
        }
        match self.parsed.get() {
            Some(p) => p.pairs.iter().map(|(k, v)| 8 + k.len() as u64 + v.len() as u64).sum(),
            None => 0,
        }
    }

    /// Append the encoded block (without its own length prefix): an untouched decoded
    /// block as received, else each pair.
    #[inline]
    pub(crate) fn encode_into<B: super::EncodeBuf>(&self, buf: &mut B) {
        if self.on_wire() {
            buf.put_slice(&self.wire);
            return;
        }
        let Some(p) = self.parsed.get() else { return };
        for (k, v) in &p.pairs {
            // Each fits: the whole block fits in u32.
            buf.put_slice(&(k.len() as u32).to_be_bytes());
            buf.put_slice(k);
            buf.put_slice(&(v.len() as u32).to_be_bytes());
            buf.put_slice(v);
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries().map(|(k, v)| (ByteStr(k), ByteStr(v)))).finish()
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

    /// The wire block of `pairs`, in order, repeats included.
    fn block(pairs: &[(&[u8], &[u8])]) -> Bytes {
        let mut b = Vec::new();
        for (k, v) in pairs {
            b.extend_from_slice(&(k.len() as u32).to_be_bytes());
            b.extend_from_slice(k);
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v);
        }
        Bytes::from(b)
    }

    #[test]
    fn decoded_duplicates_last_value_wins() {
        for n in [3usize, 15, 16, 40] {
            let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            let mut pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_bytes(), &b"x"[..])).collect();
            pairs.push((b"k1", b"last"));
            let m = Metadata::decode(block(&pairs), 4096).unwrap();
            assert!(!m.on_wire(), "a repeated key is resolved at decode time");
            assert_eq!(m.len(), n);
            assert_eq!(m.get("k1").unwrap().as_ref(), b"last");
            assert_eq!(m.get_str("k1"), Ok(Some("last")));
            assert_eq!(m.iter().nth(1).unwrap().0.as_ref(), b"k1");
            assert_eq!(m.iter_str().nth(1), Some(("k1", "last")));
        }
    }

    #[test]
    fn small_decoded_blocks_stay_on_the_wire_and_read_the_same() {
        let pairs: [(&[u8], &[u8]); 4] = [(b"b", b"1"), (b"a", b""), (b"", b"empty key"), (b"\xff", b"\xfe")];
        let raw = block(&pairs);
        let m = Metadata::decode(raw.clone(), 4096).unwrap();
        assert!(m.on_wire());
        assert_eq!(m.wire_block(), Some(&raw[..]));
        let built: Metadata =
            pairs.iter().map(|&(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v))).collect();
        assert_eq!(m, built);
        assert_eq!(format!("{m:?}"), format!("{built:?}"));
        let hash = |m: &Metadata| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(m)
        };
        assert_eq!(hash(&m), hash(&built));
        assert_eq!(m.len(), 4);
        assert_eq!(m.encoded_len(), raw.len() as u64);
        assert_eq!(m.encoded_len(), built.encoded_len());
        assert_eq!(m.get_str("b"), Ok(Some("1")));
        assert_eq!(m.get_str(""), Ok(Some("empty key")));
        assert!(m.get_str(b"\xff").is_err());
        assert_eq!(m.get_str("zz"), Ok(None));
        assert!(m.contains_key("a") && !m.contains_key("zz"));
        assert_eq!(m.iter_str().collect::<Vec<_>>(), vec![("b", "1"), ("a", ""), ("", "empty key")]);
        // Misses parse nothing; a hit parses once and keeps the block's order.
        assert!(m.get("zz").is_none());
        assert!(m.parsed.get().is_none());
        assert_eq!(m.get("a").unwrap().as_ref(), b"");
        assert!(m.parsed.get().is_some());
        assert!(m.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).eq(pairs.iter().copied()));
        assert_eq!(m.iter().len(), 4);
        // Values are slices of the block, not copies.
        let v = m.get("b").unwrap();
        assert!(raw.as_ptr_range().contains(&v.as_ptr()));

        let mut changed = m.clone();
        assert_eq!(changed.remove("zz"), None);
        assert!(changed.on_wire());
        assert_eq!(changed.insert("b", "2"), Some(Bytes::from_static(b"1")));
        assert!(!changed.on_wire() && changed.wire_block().is_none());
        assert_eq!(changed.len(), 4);
        assert_eq!(changed.remove("a"), Some(Bytes::new()));
        assert_eq!(changed.iter_str().collect::<Vec<_>>(), vec![("b", "2"), ("", "empty key")]);
        assert_eq!(m.get_str("b"), Ok(Some("1")), "the clone changed, not the original");
        changed.clear();
        assert!(changed.is_empty() && changed.iter().next().is_none());
        assert_eq!(changed, Metadata::new());

        let mut removed = Metadata::decode(raw, 4096).unwrap();
        assert_eq!(removed.remove("b"), Some(Bytes::from_static(b"1")));
        assert_eq!(removed.len(), 3);
        let mut cleared = m.clone();
        cleared.clear();
        assert!(cleared.is_empty() && cleared.encoded_len() == 0 && cleared.get("a").is_none());
    }

    #[test]
    fn keys_alike_at_both_ends_are_still_distinct() {
        let (a, b) = (b"prefix-8-a-suffix-8", b"prefix-8-b-suffix-8");
        assert_eq!(fingerprint(a), fingerprint(b));
        let m = Metadata::decode(block(&[(a, b"1"), (b, b"2")]), 4096).unwrap();
        assert!(m.on_wire());
        assert_eq!(m.len(), 2);
        let m = Metadata::decode(block(&[(a, b"1"), (b, b"2"), (a, b"3")]), 4096).unwrap();
        assert!(!m.on_wire());
        assert_eq!(m.iter_str().collect::<Vec<_>>(), vec![("prefix-8-a-suffix-8", "3"), ("prefix-8-b-suffix-8", "2")]);
    }

    #[test]
    fn malformed_blocks_are_typed_errors() {
        let good = block(&[(b"k", b"v"), (b"k2", b"v2")]);
        for cut in (1..good.len()).filter(|&cut| cut != 10) {
            assert_eq!(
                Metadata::decode(good.slice(..cut), 4096).unwrap_err(),
                DecodeError::MetadataTruncated,
                "cut at {cut}"
            );
        }
        assert_eq!(Metadata::decode(good.clone(), 1).unwrap_err(), DecodeError::TooManyMetadataPairs { max: 1 });
        assert_eq!(Metadata::decode(good.clone(), 2).unwrap().len(), 2);
        assert_eq!(Metadata::decode(good.slice(..10), 4096).unwrap().get_str("k"), Ok(Some("v")));
        // The pair count is checked before each pair is read.
        assert_eq!(
            Metadata::decode(good.slice(..good.len() - 1), 1).unwrap_err(),
            DecodeError::TooManyMetadataPairs { max: 1 }
        );
        assert_eq!(Metadata::decode(good.slice(..5), 0).unwrap_err(), DecodeError::TooManyMetadataPairs { max: 0 });
        let mut huge = vec![0xff; 4];
        huge.extend_from_slice(b"abcd");
        assert_eq!(Metadata::decode(Bytes::from(huge), 4096).unwrap_err(), DecodeError::MetadataTruncated);
    }

    #[test]
    fn large_maps_use_the_index_and_stay_consistent() {
        let mut m = Metadata::new();
        for i in 0..1000 {
            assert_eq!(m.insert(format!("k{i}"), format!("v{i}")), None);
        }
        assert!(m.parsed.get().unwrap().index.is_some());
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
