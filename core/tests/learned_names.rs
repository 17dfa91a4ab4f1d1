//! The process-wide table of learned names (`DecoderConfig::learn_names`) is bounded:
//! a peer that sends ever new names fills it, and from then on new names are sliced
//! from their frames while the learned ones stay static. In a test binary of its own,
//! as the table is the process's.

use bytes::{Bytes, BytesMut};
use rpcx_core::wire::{EncoderConfig, FrameDecoder, MAX_LEARNED_NAMES, Message, SerializeType};

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
fn a_flood_of_new_names_fills_the_table_and_then_is_sliced() {
    let decoder = FrameDecoder::default();
    // Two names per frame: path and method, both new.
    let mut learned = Vec::new();
    for i in 0..MAX_LEARNED_NAMES / 2 {
        let (p, m) = (format!("Svc{i}"), format!("M{i}"));
        let f = frame(&p, &m);
        let msg = decoder.decode_frame(f.clone()).unwrap();
        assert_eq!((&msg.service_path[..], &msg.service_method[..]), (p.as_bytes(), m.as_bytes()));
        assert!(!in_frame(&f, &msg.service_path) && !in_frame(&f, &msg.service_method), "learned: {p}.{m}");
        learned.push((p, m, msg.service_path.as_ptr()));
    }
    // Full: a new name is correct, and a slice of its frame.
    for i in 0..100 {
        let p = format!("Late{i}");
        let f = frame(&p, "M0");
        let msg = decoder.decode_frame(f.clone()).unwrap();
        assert_eq!(&msg.service_path[..], p.as_bytes());
        assert!(in_frame(&f, &msg.service_path), "{p} learned past the bound");
        // M0 was learned before the table filled.
        assert!(!in_frame(&f, &msg.service_method));
    }
    // What was learned stays learned, in the same copy, for every decoder.
    let other = FrameDecoder::default();
    for (p, m, ptr) in &learned {
        let f = frame(p, m);
        let msg = other.decode_frame(f.clone()).unwrap();
        assert_eq!(msg.service_path.as_ptr(), *ptr, "{p}");
        assert!(!in_frame(&f, &msg.service_method), "{m}");
    }
}
