//! The process-wide table of learned names (`DecoderConfig::learn_names`) is bounded:
//! a peer that sends ever new names fills it, and from then on new names are sliced
//! from their frames while the learned ones stay static. Decoders on several threads
//! learning the same names at once agree on them. One test in a binary of its own, as
//! the table is the process's and the test counts what it holds.

use bytes::{Bytes, BytesMut};
use rpcx_core::wire::{EncoderConfig, FrameDecoder, MAX_LEARNED_NAMES, Message, SerializeType};
use std::sync::Barrier;

fn frame(path: &str, method: &str) -> Bytes {
    let mut wire = BytesMut::new();
    Message::request(SerializeType::MSGPACK, 1, path.to_owned(), method.to_owned())
        .encode(&EncoderConfig::default(), &mut wire)
        .unwrap();
    wire.freeze()
}

fn in_frame(frame: &Bytes, b: &Bytes) -> bool {
    frame.as_ptr_range().contains(&b.as_ptr())
}

#[test]
fn names_are_learned_once_across_threads_up_to_the_bound_then_sliced() {
    // 1. Four threads learn the same eight names at the same moment.
    const RACERS: usize = 4;
    let names: Vec<(String, String)> = (0..4).map(|i| (format!("Race{i}"), format!("Run{i}"))).collect();
    let barrier = Barrier::new(RACERS);
    std::thread::scope(|s| {
        for _ in 0..RACERS {
            s.spawn(|| {
                let decoder = FrameDecoder::default();
                barrier.wait();
                for (p, m) in &names {
                    let f = frame(p, m);
                    let msg = decoder.decode_frame(f.clone()).unwrap();
                    assert_eq!((&msg.service_path[..], &msg.service_method[..]), (p.as_bytes(), m.as_bytes()));
                    assert!(!in_frame(&f, &msg.service_path) && !in_frame(&f, &msg.service_method), "{p}.{m}");
                }
            });
        }
    });
    // Every racer may have stored its own copy of a name (a harmless duplicate): at
    // most RACERS entries per name are used.
    let raced = names.len() * 2;

    // 2. A flood of new names (path and method both new in every frame) fills the rest.
    let decoder = FrameDecoder::default();
    let mut learned = Vec::new();
    let mut first_sliced = None;
    for i in 0..MAX_LEARNED_NAMES {
        let (p, m) = (format!("Svc{i}"), format!("M{i}"));
        let f = frame(&p, &m);
        let msg = decoder.decode_frame(f.clone()).unwrap();
        assert_eq!((&msg.service_path[..], &msg.service_method[..]), (p.as_bytes(), m.as_bytes()));
        let static_path = !in_frame(&f, &msg.service_path);
        let static_method = !in_frame(&f, &msg.service_method);
        if static_path {
            learned.push((p.clone(), msg.service_path.as_ptr()));
        }
        if static_method {
            learned.push((m.clone(), msg.service_method.as_ptr()));
        }
        match first_sliced {
            None if !(static_path && static_method) => first_sliced = Some(i),
            // Once full, full for good.
            Some(_) => assert!(!static_path && !static_method, "{p}.{m} learned after the table was full"),
            None => {}
        }
    }
    assert!(first_sliced.is_some(), "the table took {} names without filling", MAX_LEARNED_NAMES * 2);
    let total = raced + learned.len();
    assert!(total <= MAX_LEARNED_NAMES, "{total} names learned, bound {MAX_LEARNED_NAMES}");
    assert!(
        total + raced * (RACERS - 1) >= MAX_LEARNED_NAMES,
        "only {total} names learned before the table said full (bound {MAX_LEARNED_NAMES})"
    );

    // 3. A name learned earlier (M0, Race0) is still static in a full table; a new one
    //    (Late*) is a correct slice of its frame.
    for i in 0..100 {
        let p = format!("Late{i}");
        let f = frame(&p, "M0");
        let msg = decoder.decode_frame(f.clone()).unwrap();
        assert_eq!(&msg.service_path[..], p.as_bytes());
        assert!(in_frame(&f, &msg.service_path), "{p} learned past the bound");
        assert!(!in_frame(&f, &msg.service_method), "M0 forgotten");
    }
    let f = frame("Race0", "Run0");
    let msg = FrameDecoder::default().decode_frame(f.clone()).unwrap();
    assert!(!in_frame(&f, &msg.service_path) && !in_frame(&f, &msg.service_method));

    // 4. What the flood taught stays, in the same copy, for every decoder.
    let other = FrameDecoder::default();
    for (name, ptr) in &learned {
        let f = frame(name, "M0");
        let msg = other.decode_frame(f.clone()).unwrap();
        assert_eq!(msg.service_path.as_ptr(), *ptr, "{name}");
    }
}
