//! Property tests: encode/decode round trip of arbitrary messages, and chunking
//! invariance of the stream decoder.

use bytes::Bytes;
use proptest::prelude::*;
use rpcx_core::wire::{CompressType, EncoderConfig, Header, Message, Metadata, StreamDecoder};

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

prop_compose! {
    fn arb_metadata()(pairs in prop::collection::vec((bytes_up_to(12), bytes_up_to(24)), 0..6)) -> Metadata {
        pairs.into_iter().collect()
    }
}

prop_compose! {
    /// Any header bits, compress restricted to None/Gzip so the message can be encoded.
    fn arb_message()(
        hdr in any::<[u8; 12]>(),
        gzip in any::<bool>(),
        path in bytes_up_to(20),
        method in bytes_up_to(20),
        metadata in arb_metadata(),
        payload in prop_oneof![bytes_up_to(64), bytes_up_to(3000)],
    ) -> Message {
        let mut b = hdr;
        b[0] = 0x08;
        let mut header = Header::from_bytes(&b);
        header.set_compress_type(if gzip && !payload.is_empty() { CompressType::GZIP } else { CompressType::NONE });
        Message { header, service_path: path, service_method: method, metadata, payload }
    }
}

fn encode_all(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        m.encode(&EncoderConfig::default(), &mut out).unwrap();
    }
    out
}

proptest! {
    #[test]
    fn round_trip(m in arb_message()) {
        let bytes = encode_all(std::slice::from_ref(&m));
        let mut d = StreamDecoder::default();
        d.feed(&bytes);
        let got = d.next_message().unwrap().expect("whole frame");
        prop_assert_eq!(got, m);
        prop_assert_eq!(d.next_message().unwrap(), None);
        prop_assert!(d.finish().is_ok());
    }

    #[test]
    fn any_chunking_yields_the_same_messages(
        msgs in prop::collection::vec(arb_message(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let stream = encode_all(&msgs);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut d = StreamDecoder::default();
        let mut got = Vec::new();
        for w in points.windows(2) {
            d.feed(&stream[w[0]..w[1]]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        prop_assert!(d.finish().is_ok());
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        let mut d = StreamDecoder::default();
        for c in data.chunks(chunk) {
            d.feed(c);
            while let Ok(Some(_)) = d.next_message() {}
        }
        let _ = d.finish();
    }
}
