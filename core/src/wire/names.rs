//! Service paths and methods known in advance, handed out as static [`Bytes`].

use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

#[derive(Clone, Copy)]
struct Known {
    /// [`words`] of the name: for a name of at most 16 bytes, equal words and lengths
    /// mean equal names.
    words: (u64, u64),
    name: &'static [u8],
}

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
/// Lookups hash the length and the first and last (up to 8) bytes and probe a table at
/// most half full, built once; names of up to 16 bytes compare as two words. The set is
/// shared (cheap to clone).
#[derive(Clone, Default)]
pub struct KnownNames {
    /// Open addressing over a power-of-two table, at most half full; `None` is free.
    slots: Option<Arc<[Option<Known>]>>,
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
        for &name in &names {
            let words = words(name);
            let mut i = slot(name.len(), words, size - 1);
            while slots[i].is_some() {
                i = (i + 1) & (size - 1);
            }
            slots[i] = Some(Known { words, name });
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
    #[inline(always)]
    pub fn get(&self, name: &[u8]) -> Option<Bytes> {
        let slots = self.slots.as_deref()?;
        let mask = slots.len() - 1;
        let w = words(name);
        let mut i = slot(name.len(), w, mask);
        // The table is at most half full, so a free slot ends every probe.
        while let Some(known) = &slots[i] {
            if known.matches(w, name) {
                return Some(Bytes::from_static(known.name));
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The names, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.slots
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .flatten()
            .map(|k| std::str::from_utf8(k.name).expect("built from &str"))
    }
}

/// Slots of the process-wide table of learned names (a power of two).
const LEARNED_SLOTS: usize = 2048;
/// Most names the table learns: half its slots, so every probe ends at a free slot soon.
pub const MAX_LEARNED_NAMES: usize = LEARNED_SLOTS / 2;
/// Longest name the table learns; longer ones are always sliced from the frame.
pub const MAX_LEARNED_NAME_LEN: usize = 64;

/// The names decoders learned ([`DecoderConfig::learn_names`](super::DecoderConfig)):
/// written once per slot, read without locks.
static LEARNED: [OnceLock<Known>; LEARNED_SLOTS] = [const { OnceLock::new() }; LEARNED_SLOTS];
/// Names in [`LEARNED`] (slots reserved; a race can store a name twice, which is harmless).
static LEARNED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// `name` as a static [`Bytes`] from the process-wide table of learned names, learning
/// it if it is new, short enough and the table has room: its bytes are copied once
/// into an allocation kept for the life of the process (at most
/// [`MAX_LEARNED_NAMES`] of at most [`MAX_LEARNED_NAME_LEN`] bytes, 64 KiB in all).
/// `None` when the name is not in the table and cannot be learned.
#[inline]
pub(super) fn learned(name: &[u8]) -> Option<Bytes> {
    if name.is_empty() || name.len() > MAX_LEARNED_NAME_LEN {
        return None;
    }
    let w = words(name);
    let mask = LEARNED_SLOTS - 1;
    let mut i = slot(name.len(), w, mask);
    while let Some(known) = LEARNED[i].get() {
        if known.matches(w, name) {
            return Some(Bytes::from_static(known.name));
        }
        i = (i + 1) & mask;
    }
    learn(name, w)
}

/// Store a name [`learned`] did not find, if the table has room.
#[cold]
#[inline(never)]
fn learn(name: &[u8], w: (u64, u64)) -> Option<Bytes> {
    LEARNED_COUNT
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < MAX_LEARNED_NAMES).then_some(n + 1))
        .ok()?;
    let leaked: &'static [u8] = Box::leak(name.to_vec().into_boxed_slice());
    let new = Known { words: w, name: leaked };
    let mask = LEARNED_SLOTS - 1;
    let mut i = slot(name.len(), w, mask);
    // At most half the slots are reserved, so a free one is found.
    loop {
        match LEARNED[i].set(new) {
            Ok(()) => return Some(Bytes::from_static(leaked)),
            // Another decoder stored the same name first: use its copy (this one stays,
            // unused, within the bound).
            Err(_) if LEARNED[i].get().is_some_and(|k| k.matches(w, name)) => {
                return Some(Bytes::from_static(LEARNED[i].get().expect("set").name));
            }
            Err(_) => i = (i + 1) & mask,
        }
    }
}

impl Known {
    /// Whether this is `name`, whose [`words`] are `w`.
    #[inline(always)]
    fn matches(&self, w: (u64, u64), name: &[u8]) -> bool {
        self.words == w && self.name.len() == name.len() && (name.len() <= 16 || self.name == name)
    }
}

/// Two words that, with the length, tell names of up to 16 bytes apart: the first
/// and the last 8 bytes (overlapping when shorter than 16), or the first and last 4,
/// or the first, middle and last byte.
#[inline(always)]
pub(super) fn words(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")));
    if n >= 8 {
        (word(0), word(n - 8))
    } else if n >= 4 {
        (half(0), half(n - 4))
    } else if n > 0 {
        (u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16, 0)
    } else {
        (0, 0)
    }
}

/// The table slot of a name with this length and these [`words`].
#[inline(always)]
fn slot(len: usize, (a, b): (u64, u64), mask: usize) -> usize {
    let h = (a ^ b.rotate_left(29) ^ len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 40) as usize & mask
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
        // Every length, and names that differ only inside (past the words for > 16 bytes).
        let long: Vec<&'static str> = (1..=40)
            .flat_map(|n| ["a", "b"].map(move |mid| format!("{}{mid}{}", "x".repeat(n / 2), "y".repeat(n - n / 2))))
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect();
        let (odd, even): (Vec<_>, Vec<_>) = long.iter().enumerate().partition(|(i, _)| i % 2 == 1);
        let set = KnownNames::new(even.iter().map(|(_, n)| **n));
        for (_, n) in &even {
            assert_eq!(set.get(n.as_bytes()).unwrap(), n.as_bytes());
        }
        for (_, n) in &odd {
            assert!(set.get(n.as_bytes()).is_none(), "{n:?}");
        }
        let empty = KnownNames::default();
        assert!(empty.is_empty() && empty.get(b"Arith").is_none() && empty.iter().next().is_none());
        assert_eq!(format!("{:?}", KnownNames::from(["Mul"])), r#"{"Mul"}"#);
    }
}
