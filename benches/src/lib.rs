//! Shared fixtures for the criterion benchmarks (`cargo bench -p rpcx-benches`).

use bytes::{Bytes, BytesMut};
use rpcx_core::wire::{EncoderConfig, Message, SerializeType};
use serde::{Deserialize, Serialize};

/// Frames per iteration in the batch benchmarks: enough to amortise the per-iteration
/// overhead, small enough (about 620 KB) to stay in a large L2 or in L3.
pub const BATCH: usize = 1000;

/// The rpcx benchmark message shape: `Hello.Say`, 581-byte payload, no metadata.
pub fn bench_message(seq: u64, metadata_pairs: usize) -> Message {
    let mut m = Message::request(SerializeType::MSGPACK, seq, "Hello", "Say");
    m.payload = Bytes::from(vec![b'x'; 581]);
    for i in 0..metadata_pairs {
        m.metadata.insert(Bytes::from(format!("key-{i}")), Bytes::from(format!("value-{i}")));
    }
    m
}

/// `n` frames of [`bench_message`] (seq `0..n`) back to back, as a decoder reads them
/// from a connection.
pub fn encoded_batch(n: usize, metadata_pairs: usize) -> Bytes {
    let cfg = EncoderConfig::default();
    let mut buf = BytesMut::new();
    for seq in 0..n as u64 {
        bench_message(seq, metadata_pairs).encode(&cfg, &mut buf).expect("the bench message encodes");
    }
    buf.freeze()
}

/// The argument of Go's `Arith.Mul` example, with Go's field names (MsgPack encodes
/// it as `82 a1 41 .. a1 42 ..`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_snake_case)]
pub struct Args {
    /// The first factor.
    pub A: i64,
    /// The second factor.
    pub B: i64,
}

/// A global allocator that counts allocations (`alloc`, `alloc_zeroed`, `realloc`) and
/// their bytes, forwarding every call to the system allocator. A bench binary installs
/// it with `#[global_allocator] static A: CountingAlloc = CountingAlloc;` and reads
/// [`allocated`].
pub struct CountingAlloc;

static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ALLOC_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count(bytes: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    ALLOCS.fetch_add(1, Relaxed);
    ALLOC_BYTES.fetch_add(bytes as u64, Relaxed);
}

/// Allocations and bytes counted by [`CountingAlloc`] so far (all threads).
pub fn allocated() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed))
}

#[allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition
// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// plain atomics.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}
