//! Wire-format benchmarks: encoding and decoding the rpcx benchmark frame (`Hello.Say`,
//! 581-byte payload, 621 bytes on the wire without metadata), and payload codecs.
//!
//! Run with `cargo bench -p rpcx-benches --bench wire`. Frame benchmarks process
//! [`BATCH`] frames per iteration and report both frames/s and bytes/s; codec
//! benchmarks report operations/s.

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use rpcx_benches::{Args, BATCH, bench_message, encoded_batch};
use rpcx_core::codec;
use rpcx_core::wire::{DecoderConfig, EncoderConfig, FrameDecoder, KnownNames, SerializeType};
use std::hint::black_box;
use std::time::Duration;

/// Metadata variants: the plain benchmark frame, and the same frame with four pairs.
const VARIANTS: [(&str, usize); 2] = [("581B", 0), ("581B+4md", 4)];

fn short(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
}

fn batch_throughput(encoded: &Bytes) -> Throughput {
    Throughput::ElementsAndBytes { elements: BATCH as u64, bytes: encoded.len() as u64 }
}

/// Encode [`BATCH`] copies of the frame into one reused buffer per iteration (the
/// buffer keeps its capacity, so nothing is allocated in the loop).
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    short(&mut group);
    let cfg = EncoderConfig::default();
    for (name, pairs) in VARIANTS {
        let msg = bench_message(1, pairs);
        group.throughput(batch_throughput(&encoded_batch(BATCH, pairs)));
        let mut buf = BytesMut::with_capacity(BATCH * 1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                for _ in 0..BATCH {
                    black_box(&msg).encode(&cfg, &mut buf).expect("encodes");
                }
                black_box(&buf);
            })
        });
    }
    group.finish();
}

/// Decode a buffer of [`BATCH`] frames with `FrameDecoder::decode`.
///
/// `decode`: the buffer is copied in untimed setup, as if it had just been read from a
/// socket; only decoding (and dropping the messages) is timed. The `+names` variants
/// decode with `Hello` and `Say` in the decoder's `known_names` (as a server that lists
/// the names it serves would), so path and method are static, not slices of the frame.
/// The plain variants decode with the defaults, which learn the names into the
/// process-wide table on the first frame (`DecoderConfig::learn_names`); the `+sliced`
/// variants turn learning off, so path and method are slices of the frame.
/// `decode_with_copy`: the copy into a reused `BytesMut` is timed too.
fn decode(c: &mut Criterion) {
    let decode_all = |decoder: &FrameDecoder, buf: &mut BytesMut| {
        let mut n = 0;
        while let Some(msg) = decoder.decode(buf).expect("valid frames") {
            black_box(msg);
            n += 1;
        }
        assert_eq!(n, BATCH);
    };
    let plain = FrameDecoder::default();
    let named = FrameDecoder::new(DecoderConfig {
        known_names: KnownNames::new(["Hello", "Say"]),
        learn_names: false,
        ..Default::default()
    });
    let sliced = FrameDecoder::new(DecoderConfig { learn_names: false, ..Default::default() });

    let mut group = c.benchmark_group("decode");
    short(&mut group);
    for (decoder, suffix) in [(&plain, ""), (&named, "+names"), (&sliced, "+sliced")] {
        for (name, pairs) in VARIANTS {
            let encoded = encoded_batch(BATCH, pairs);
            group.throughput(batch_throughput(&encoded));
            group.bench_function(format!("{name}{suffix}"), |b| {
                b.iter_batched_ref(
                    || BytesMut::from(&encoded[..]),
                    |buf| decode_all(decoder, buf),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("decode_with_copy");
    short(&mut group);
    for (name, pairs) in VARIANTS {
        let encoded = encoded_batch(BATCH, pairs);
        group.throughput(batch_throughput(&encoded));
        // Every frame split off the buffer is dropped before the next iteration, so
        // `extend_from_slice` reclaims the same allocation each time.
        let mut buf = BytesMut::with_capacity(encoded.len());
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.extend_from_slice(&encoded);
                decode_all(&plain, &mut buf);
            })
        });
    }
    group.finish();
}

/// Serialize and deserialize `Args{A, B}` with the payload codecs.
fn codecs(c: &mut Criterion) {
    let args = Args { A: 10, B: 20 };
    let mut group = c.benchmark_group("codec");
    short(&mut group);
    group.throughput(Throughput::Elements(1));
    for (name, st) in [("msgpack", SerializeType::MSGPACK), ("json", SerializeType::JSON)] {
        let mut out = Vec::with_capacity(64);
        group.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| {
                out.clear();
                codec::write_payload(st, black_box(&args), &mut out).expect("serializes");
                black_box(&out);
            })
        });
        let payload = codec::to_payload(st, &args).expect("serializes");
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| codec::from_payload::<Args>(st, black_box(&payload)).expect("deserializes"))
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode, codecs);
criterion_main!(benches);
