//! Hash math for the consistent-hash selector: FNV-1a-64, Google's jump consistent
//! hash (bit-for-bit as `dgryski/go-jump`), Go's key string, and a doublejump table.

use super::discovery::ServerKey;
use std::collections::HashMap;

/// FNV-1a, 64 bit (Go's `hash/fnv.New64a`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Jump consistent hash (Lamping & Veach), with the paper's floating-point step as in
/// `dgryski/go-jump` and rpcx's `client.Hash`: a bucket in `0..buckets`. `buckets == 0`
/// is treated as 1 (rpcx's `buckets <= 0 → 1`), so the result is always a valid index
/// for a non-empty table.
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let n = i64::from(buckets.max(1));
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The multiplier doublejump applies to a key before probing its compact table.
pub const COMPACT_KEY_MULTIPLIER: u64 = 0xc6a4_a793_5bd1_e995;

/// Go's consistent-hash key string: `"/" + servicePath + "/" + serviceMethod + "/" +
/// argString`, where Go's `argString` is `fmt.Sprintf("%v", args)` (e.g. `&{10 20}`).
/// A Rust caller cannot reproduce `%v` of arbitrary Go values; pass whatever string
/// both sides agree on. Hash it with [`fnv1a64`].
pub fn go_hash_key(service_path: &str, method: &str, arg_string: &str) -> String {
    format!("/{service_path}/{method}/{arg_string}")
}

/// `edwingeng/doublejump`: jump hashing that tolerates removals.
///
/// Two tables: a *loose* one where a removed server leaves a hole, and a *compact* one
/// where the last server moves into the hole. `get(key)` takes
/// `loose[jump(key, loose.len())]`, or on a hole
/// `compact[jump(key * 0xc6a4a7935bd1e995, compact.len())]`. Adding fills a hole if one
/// exists, else appends. So adding a server moves only the keys that now land on it, and
/// removing one moves only the keys that were on it.
///
/// One refinement over Go: a server re-added while its old hole is still free takes
/// that hole back (a server whose breaker opened and closed again gets its own keys
/// back); otherwise the most recent hole is reused, as in doublejump.
#[derive(Debug, Clone, Default)]
pub(crate) struct DoubleJump {
    loose: Vec<LooseSlot>,
    /// Indices of holes in `loose`, most recent last.
    free: Vec<usize>,
    compact: Vec<ServerKey>,
    /// Server → (loose index, compact index).
    index: HashMap<ServerKey, (usize, usize)>,
}

#[derive(Debug, Clone)]
struct LooseSlot {
    current: Option<ServerKey>,
    /// Who held the slot last (to hand it back on re-add).
    last: ServerKey,
}

impl DoubleJump {
    pub(crate) fn len(&self) -> usize {
        self.compact.len()
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: &ServerKey) -> bool {
        self.index.contains_key(key)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &ServerKey> {
        self.compact.iter()
    }

    pub(crate) fn clear(&mut self) {
        *self = DoubleJump::default();
    }

    pub(crate) fn add(&mut self, key: &ServerKey) {
        if self.index.contains_key(key) {
            return;
        }
        let pos = self.free.iter().rposition(|&i| self.loose[i].last == *key).or(self.free.len().checked_sub(1));
        let li = match pos {
            Some(p) => {
                let i = self.free.remove(p);
                self.loose[i] = LooseSlot { current: Some(key.clone()), last: key.clone() };
                i
            }
            None => {
                self.loose.push(LooseSlot { current: Some(key.clone()), last: key.clone() });
                self.loose.len() - 1
            }
        };
        self.compact.push(key.clone());
        self.index.insert(key.clone(), (li, self.compact.len() - 1));
    }

    pub(crate) fn remove(&mut self, key: &ServerKey) {
        let Some((li, ci)) = self.index.remove(key) else { return };
        self.loose[li].current = None;
        self.free.push(li);
        self.compact.swap_remove(ci);
        if let Some(moved) = self.compact.get(ci) {
            if let Some(e) = self.index.get_mut(moved) {
                e.1 = ci;
            }
        }
    }

    pub(crate) fn get(&self, key: u64) -> Option<&ServerKey> {
        if self.compact.is_empty() {
            return None;
        }
        let i = jump(key, len_u32(self.loose.len())) as usize;
        match &self.loose[i].current {
            Some(k) => Some(k),
            None => {
                let j = jump(key.wrapping_mul(COMPACT_KEY_MULTIPLIER), len_u32(self.compact.len())) as usize;
                Some(&self.compact[j])
            }
        }
    }
}

/// A table length as a bucket count (tables never approach `u32::MAX` servers).
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn doublejump_holes_and_readd() {
        let keys: Vec<ServerKey> = ["a", "b", "c"].into_iter().map(ServerKey::new).collect();
        let mut dj = DoubleJump::default();
        keys.iter().for_each(|k| dj.add(k));
        let before: Vec<_> = (0..1000u64).map(|k| dj.get(k.wrapping_mul(0x9e3779b97f4a7c15)).cloned()).collect();
        dj.remove(&keys[1]);
        assert_eq!(dj.len(), 2);
        assert!(!dj.contains(&keys[1]));
        for (k, b) in (0..1000u64).zip(&before) {
            let now = dj.get(k.wrapping_mul(0x9e3779b97f4a7c15)).cloned();
            assert_ne!(now.as_ref(), Some(&keys[1]));
            if b.as_ref() != Some(&keys[1]) {
                assert_eq!(&now, b);
            }
        }
        dj.add(&keys[1]);
        let after: Vec<_> = (0..1000u64).map(|k| dj.get(k.wrapping_mul(0x9e3779b97f4a7c15)).cloned()).collect();
        assert_eq!(before, after);
    }
}
