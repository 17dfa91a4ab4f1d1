//! Heap allocations per frame in the wire codec, counted by a counting global allocator
//! (a binary of its own, so nothing else shares the counter), and the best of several
//! timed rounds as a quick cross-check of the criterion figures.
//!
//! Run with `cargo bench -p rpcx-benches --bench wire_allocs`. For each metadata
//! variant it decodes [`BATCH`] frames from one buffer (as `decode` in the `wire` bench
//! does) and reports allocations and bytes allocated per decoded frame, then the same
//! for encoding into a reused buffer. The buffer's one promotion to a shared allocation
//! (the first `split_to`) is counted too and shows as 1/BATCH per frame.
//! Exits non-zero if decoding the benchmark frames allocates more than that.

#![allow(clippy::print_stdout)]

use bytes::BytesMut;
use rpcx_benches::{BATCH, bench_message, encoded_batch};
use rpcx_core::wire::{DecoderConfig, EncoderConfig, FrameDecoder, KnownNames};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static GLOBAL: rpcx_benches::CountingAlloc = rpcx_benches::CountingAlloc;

fn counted<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let (a, b) = rpcx_benches::allocated();
    let r = f();
    let (a2, b2) = rpcx_benches::allocated();
    (r, a2 - a, b2 - b)
}

const ROUNDS: usize = 2000;

/// Best and mean round of [`ROUNDS`] timed runs of `round` (each over [`BATCH`]
/// frames; `setup` untimed), in M frames/s.
fn rates<S>(mut setup: impl FnMut() -> S, mut round: impl FnMut(&mut S)) -> (f64, f64) {
    let (mut best, mut total) = (f64::MAX, 0.0);
    for _ in 0..ROUNDS {
        let mut s = setup();
        let t = Instant::now();
        round(&mut s);
        let d = t.elapsed().as_secs_f64();
        best = best.min(d);
        total += d;
    }
    (BATCH as f64 / best / 1e6, (BATCH * ROUNDS) as f64 / total / 1e6)
}

fn main() {
    let plain = FrameDecoder::default();
    let named = FrameDecoder::new(DecoderConfig {
        known_names: KnownNames::new(["Hello", "Say"]),
        learn_names: false,
        ..Default::default()
    });
    let sliced = FrameDecoder::new(DecoderConfig { learn_names: false, ..Default::default() });
    // The default decoder learns `Hello` and `Say` on its first frame (one allocation
    // each, for the life of the process); learn them before counting.
    let _ = plain.decode_frame(encoded_batch(1, 0));
    let decode_all = |decoder: &FrameDecoder, buf: &mut BytesMut| {
        let mut n = 0;
        while let Some(msg) = decoder.decode(buf).expect("valid frames") {
            black_box(&msg);
            n += 1;
        }
        assert_eq!(n, BATCH);
    };
    let mut failed = false;
    let row = |label: &str, op: &str, allocs: u64, bytes: u64, (best, mean): (f64, f64)| {
        let per = |n: u64| n as f64 / BATCH as f64;
        println!("{label:18} {op:12} {:12.4} {:11.2} {best:9.2} {mean:9.2}", per(allocs), per(bytes));
    };
    println!("{BATCH} frames per round, {ROUNDS} rounds; M frames/s of the best and the mean round");
    println!("{:18} {:12} {:>12} {:>11} {:>9} {:>9}", "variant", "op", "allocs/frame", "bytes/frame", "best", "mean");
    for (name, pairs) in [("581B", 0), ("581B+4md", 4)] {
        let encoded = encoded_batch(BATCH, pairs);
        for (decoder, suffix) in [(&plain, ""), (&named, "+names"), (&sliced, "+sliced")] {
            let label = format!("{name}{suffix}");
            // Decoding a buffer as read from a socket (the copy into it untimed).
            let mut buf = BytesMut::from(&encoded[..]);
            let ((), allocs, bytes) = counted(|| decode_all(decoder, &mut buf));
            // The one promotion of the buffer to shared storage is all that is allowed.
            failed |= allocs > 1;
            row(&label, "decode", allocs, bytes, rates(|| BytesMut::from(&encoded[..]), |b| decode_all(decoder, b)));
            // The copy into a reused buffer timed too, as Go's decoder reads into its own.
            let mut reused = BytesMut::with_capacity(encoded.len());
            let copy_decode = |buf: &mut BytesMut| {
                buf.extend_from_slice(&encoded);
                decode_all(decoder, buf);
            };
            copy_decode(&mut reused);
            let ((), allocs, bytes) = counted(|| copy_decode(&mut reused));
            failed |= allocs > 0;
            let slot = Cell::new(Some(reused));
            let r = rates(
                || slot.take().expect("put back"),
                |b| {
                    copy_decode(b);
                    slot.set(Some(std::mem::take(b)));
                },
            );
            row(&label, "copy+decode", allocs, bytes, r);
        }

        let cfg = EncoderConfig::default();
        let msg = bench_message(1, pairs);
        let encode_all = |out: &mut BytesMut| {
            out.clear();
            for _ in 0..BATCH {
                black_box(&msg).encode(&cfg, out).expect("encodes");
            }
            black_box(&out);
        };
        let mut out = BytesMut::with_capacity(BATCH * 1024);
        encode_all(&mut out);
        let ((), allocs, bytes) = counted(|| encode_all(&mut out));
        let slot = Cell::new(Some(out));
        let r = rates(
            || slot.take().expect("put back"),
            |b| {
                encode_all(b);
                slot.set(Some(std::mem::take(b)));
            },
        );
        row(name, "encode", allocs, bytes, r);
    }
    if failed {
        eprintln!("decoding allocated more than the buffer's one promotion to shared storage");
        std::process::exit(1);
    }
}
