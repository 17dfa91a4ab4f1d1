//! Service paths and methods known in advance, handed out as static [`Bytes`].

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Service paths and methods a [`FrameDecoder`](super::FrameDecoder) returns as static
/// [`Bytes`] instead of slices of the frame.
///
/// A slice of the frame costs an atomic reference-count increment when it is cut and a
/// decrement when it is dropped, and it keeps the frame's buffer alive; a static name
/// costs neither. A server that lists the names it serves (and a client the names it
/// calls, which responses echo) saves four atomic operations per decoded frame. Names
/// not in the set are sliced from the frame as before; the decoded bytes are the same
/// either way.
///
/// Lookups are one hash of the length and the first and last bytes and a probe of a
/// table at most half full, built once; the set is shared (cheap to clone).
#[derive(Clone, Default)]
pub struct KnownNames {
    /// Open addressing over a power-of-two table, at most half full; `None` is free.
    slots: Option<Arc<[Option<&'static [u8]>]>>,
    len: usize,
}

impl KnownNames {
    /// The set of `names` (repeats and empty names are ignored).
    pub fn new<I: IntoIterator<Item = &'static str>>(names: I) -> Self {
        let mut names: Vec<&'static [u8]> = names.into_iter().map(str::as_bytes).filter(|n| !n.is_empty()).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Self::default();
        }
        let size = (names.len() * 2).next_power_of_two();
        let mut slots = vec![None; size];
        for name in &names {
            let mut i = slot(name, size - 1);
            while slots[i].is_some() {
                i = (i + 1) & (size - 1);
            }
            slots[i] = Some(*name);
        }
        Self { slots: Some(slots.into()), len: names.len() }
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `name` as a static [`Bytes`], if it is in the set.
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<Bytes> {
        let slots = self.slots.as_deref()?;
        let mask = slots.len() - 1;
        let mut i = slot(name, mask);
        // The table is at most half full, so a free slot ends every probe.
        while let Some(known) = slots[i] {
            if known == name {
                return Some(Bytes::from_static(known));
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The names, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.slots.as_deref().unwrap_or(&[]).iter().flatten().map(|n| std::str::from_utf8(n).expect("built from &str"))
    }
}

/// The table slot `name` hashes to: its length and first and last bytes, mixed.
#[inline]
fn slot(name: &[u8], mask: usize) -> usize {
    let ends = match name {
        [] => 0,
        [first, .., last] => u32::from(*first) << 8 | u32::from(*last),
        [only] => u32::from(*only) << 8 | u32::from(*only),
    };
    let h = (name.len() as u32).wrapping_mul(0x9E37_79B1) ^ ends.wrapping_mul(0x85EB_CA6B);
    (h ^ (h >> 15)) as usize & mask
}

impl fmt::Debug for KnownNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<const N: usize> From<[&'static str; N]> for KnownNames {
    fn from(names: [&'static str; N]) -> Self {
        Self::new(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_name_and_nothing_else() {
        let names: Vec<&'static str> = (0..200).map(|i| &*Box::leak(format!("Svc{i}.M").into_boxed_str())).collect();
        let set = KnownNames::new(names.iter().copied().chain(["Arith", "Mul", "Arith", ""]));
        assert_eq!(set.len(), 202);
        for n in names.iter().copied().chain(["Arith", "Mul"]) {
            let b = set.get(n.as_bytes()).expect("known");
            assert_eq!(b, n.as_bytes());
            assert_eq!(b.as_ptr(), set.get(n.as_bytes()).unwrap().as_ptr(), "static, not copied");
        }
        for n in ["", "Arit", "Arithh", "arith", "Svc200.M", "Svc1.N"] {
            assert!(set.get(n.as_bytes()).is_none(), "{n:?}");
        }
        let mut listed: Vec<_> = set.iter().collect();
        listed.sort_unstable();
        assert_eq!(listed.len(), 202);
        let empty = KnownNames::default();
        assert!(empty.is_empty() && empty.get(b"Arith").is_none() && empty.iter().next().is_none());
        assert_eq!(format!("{:?}", KnownNames::from(["Mul"])), r#"{"Mul"}"#);
    }
}
