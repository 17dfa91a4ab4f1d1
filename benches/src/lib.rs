//! Shared fixtures for the criterion benchmarks (`cargo bench -p rpcx-benches`).

use bytes::Bytes;
use rpcx_core::wire::{Message, SerializeType};

/// The rpcx benchmark message shape: `Hello.Say`, 581-byte payload, no metadata.
pub fn bench_message(seq: u64, metadata_pairs: usize) -> Message {
    let mut m = Message::request(SerializeType::MSGPACK, seq, "Hello", "Say");
    m.payload = Bytes::from(vec![b'x'; 581]);
    for i in 0..metadata_pairs {
        m.metadata.insert(Bytes::from(format!("key-{i}")), Bytes::from(format!("value-{i}")));
    }
    m
}
