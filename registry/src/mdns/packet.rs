//! The few DNS message parts mDNS service discovery needs (RFC 1035 wire format, RFC
//! 6762 class bits): questions, PTR, SRV, TXT and A records, other records skipped.
//!
//! The wire format is read and written by `hickory-proto` (its `Message`, built without
//! resolver, runtime or DNSSEC features); this module maps it to the small types the
//! responder and browser use, keeping each TXT character-string as raw bytes (Go's rpcx
//! reads the first one).
//!
//! Decoding treats the packet as hostile. Before the crate parses anything the packet
//! is at most [`MAX_PACKET`] bytes and the header's question and record counts add up
//! to at most [`MAX_RECORDS`]; the crate then checks every length against the buffer,
//! follows only compression pointers that point backwards (no loops) and refuses names
//! over 255 bytes; labels must be printable ASCII without dots. Any violation is a
//! [`PacketError`], never a panic. The crate does not cap how many pointers one name
//! follows (each is a recursive call), so the threads that decode get a
//! [`DECODE_STACK`] large enough for the longest chain a [`MAX_PACKET`] packet holds.
//!
//! The mDNS top bit of a class (cache-flush in records, unicast-response in questions)
//! is carried as the raw class value (`0x8001`, which the crate keeps as an unknown
//! class), so no `mdns` crate feature is needed. Encoding compresses repeated names,
//! which every mDNS stack reads.

use hickory_proto::op::{Header, Message as Wire, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData as WireData, Record as WireRecord, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::fmt;
use std::net::Ipv4Addr;

/// The largest packet read or written (RFC 6762 §17: 9000 bytes).
pub(crate) const MAX_PACKET: usize = 9000;
/// The most questions plus records accepted in one packet.
pub(crate) const MAX_RECORDS: usize = 256;
/// The stack of a thread that decodes packets. The crate follows each compression
/// pointer with a recursive call, and a hostile packet of [`MAX_PACKET`] bytes can chain
/// about 4,500 of them (each must point backwards); Rust's default 2 MiB thread stack
/// overflows on that in a debug build, 8 MiB holds it (see the junk test). Only the
/// pages touched are committed.
pub(crate) const DECODE_STACK: usize = 16 * 1024 * 1024;
/// The longest TXT character-string.
const MAX_TXT_STRING: usize = 255;

pub(crate) const TYPE_PTR: u16 = 12;
pub(crate) const TYPE_SRV: u16 = 33;
pub(crate) const TYPE_ANY: u16 = 255;
pub(crate) const CLASS_IN: u16 = 1;
/// The top bit of a class: cache-flush in records, unicast-response in questions.
pub(crate) const CLASS_TOP_BIT: u16 = 0x8000;
/// QR: the message is a response. AA: authoritative.
pub(crate) const FLAGS_RESPONSE: u16 = 0x8400;

/// Why a packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PacketError(pub(crate) &'static str);

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Question {
    pub(crate) name: String,
    pub(crate) qtype: u16,
    /// The top bit (unicast response wanted) is in `unicast`.
    pub(crate) unicast: bool,
}

/// The data of a record this module understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RData {
    Ptr(String),
    Srv {
        port: u16,
        target: String,
    },
    /// The character strings, each at most 255 bytes.
    Txt(Vec<Vec<u8>>),
    A(Ipv4Addr),
    /// Any other type: skipped.
    Other,
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) flush: bool,
    pub(crate) ttl: u32,
    pub(crate) data: RData,
}

impl Record {
    pub(crate) fn new(name: &str, flush: bool, ttl: u32, data: RData) -> Self {
        Record { name: name.to_owned(), flush, ttl, data }
    }
}

/// A DNS message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) id: u16,
    pub(crate) flags: u16,
    pub(crate) questions: Vec<Question>,
    pub(crate) answers: Vec<Record>,
    pub(crate) authority: Vec<Record>,
    pub(crate) additional: Vec<Record>,
}

impl Message {
    /// A query (Go's zeroconf form: id 0, no flags, class IN).
    pub(crate) fn query(name: &str, qtype: u16) -> Self {
        Message { questions: vec![Question { name: name.to_owned(), qtype, unicast: false }], ..Message::default() }
    }

    /// An unsolicited or solicited response (QR and AA set, no questions).
    pub(crate) fn response(answers: Vec<Record>, additional: Vec<Record>) -> Self {
        Message { flags: FLAGS_RESPONSE, answers, additional, ..Message::default() }
    }

    pub(crate) fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// Every record, answers first.
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> {
        self.answers.iter().chain(&self.authority).chain(&self.additional)
    }

    /// The wire form. Fails if a name or string does not fit its length limit or the
    /// message exceeds [`MAX_PACKET`].
    pub(crate) fn encode(&self) -> Result<Vec<u8>, PacketError> {
        for n in [self.questions.len(), self.answers.len(), self.authority.len(), self.additional.len()] {
            u16::try_from(n).map_err(|_| PacketError("too many records"))?;
        }
        let mut wire = Wire::new();
        wire.set_header(header(self.id, self.flags));
        for q in &self.questions {
            let mut query = Query::query(to_name(&q.name)?, RecordType::from(q.qtype));
            query.set_query_class(class(q.unicast));
            wire.add_query(query);
        }
        for r in &self.answers {
            wire.add_answer(to_record(r)?);
        }
        for r in &self.authority {
            wire.add_name_server(to_record(r)?);
        }
        for r in &self.additional {
            wire.add_additional(to_record(r)?);
        }
        let out = wire.to_vec().map_err(|_| PacketError("message cannot be encoded"))?;
        if out.len() > MAX_PACKET {
            return Err(PacketError("message too large"));
        }
        Ok(out)
    }

    /// Parse a packet (see the module docs for the bounds).
    pub(crate) fn decode(buf: &[u8]) -> Result<Message, PacketError> {
        if buf.len() > MAX_PACKET {
            return Err(PacketError("packet too large"));
        }
        let head = Header::read(&mut BinDecoder::new(buf)).map_err(|_| PacketError("truncated packet"))?;
        let counts = [head.query_count(), head.answer_count(), head.name_server_count(), head.additional_count()];
        if counts.iter().map(|&c| usize::from(c)).sum::<usize>() > MAX_RECORDS {
            return Err(PacketError("too many records"));
        }
        let mut wire = Wire::from_vec(buf).map_err(|_| PacketError("malformed DNS message"))?;
        let mut m = Message { id: head.id(), flags: flags(&head), ..Message::default() };
        for q in wire.take_queries() {
            let unicast = u16::from(q.query_class()) & CLASS_TOP_BIT != 0;
            m.questions.push(Question { name: from_name(q.name())?, qtype: q.query_type().into(), unicast });
        }
        for (records, section) in [
            (wire.take_answers(), &mut m.answers),
            (wire.take_name_servers(), &mut m.authority),
            (wire.take_additionals(), &mut m.additional),
        ] {
            for r in &records {
                section.push(from_record(r)?);
            }
        }
        Ok(m)
    }
}

/// Header bits as the crate's header (the reserved Z bit is always 0).
fn header(id: u16, flags: u16) -> Header {
    let bit = |b: u16| flags & b != 0;
    let mut h = Header::new();
    h.set_id(id)
        .set_message_type(if bit(0x8000) { MessageType::Response } else { MessageType::Query })
        .set_op_code(OpCode::from_u8(((flags >> 11) & 0xf) as u8))
        .set_authoritative(bit(0x0400))
        .set_truncated(bit(0x0200))
        .set_recursion_desired(bit(0x0100))
        .set_recursion_available(bit(0x0080))
        .set_authentic_data(bit(0x0020))
        .set_checking_disabled(bit(0x0010))
        .set_response_code(ResponseCode::from_low((flags & 0xf) as u8));
    h
}

/// The inverse of [`header`].
fn flags(h: &Header) -> u16 {
    let bit = |on: bool, b: u16| if on { b } else { 0 };
    bit(h.message_type() == MessageType::Response, 0x8000)
        | (u16::from(u8::from(h.op_code()) & 0xf) << 11)
        | bit(h.authoritative(), 0x0400)
        | bit(h.truncated(), 0x0200)
        | bit(h.recursion_desired(), 0x0100)
        | bit(h.recursion_available(), 0x0080)
        | bit(h.authentic_data(), 0x0020)
        | bit(h.checking_disabled(), 0x0010)
        | u16::from(h.response_code().low() & 0xf)
}

/// Class IN, with the mDNS top bit when `top` (kept by the crate as a raw class).
fn class(top: bool) -> DNSClass {
    DNSClass::from(CLASS_IN | if top { CLASS_TOP_BIT } else { 0 })
}

/// `a.b.c.` (the trailing dot optional) as a name of raw labels; the crate refuses
/// empty labels, labels over 63 bytes and names over 255 bytes.
fn to_name(name: &str) -> Result<Name, PacketError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Ok(Name::root());
    }
    Name::from_labels(trimmed.split('.').map(str::as_bytes))
        .map_err(|_| PacketError("a label is empty or longer than 63 bytes, or the name is longer than 255"))
}

/// A name in dotted form with a trailing dot; labels must be printable ASCII without dots.
fn from_name(name: &Name) -> Result<String, PacketError> {
    let mut out = String::new();
    for label in name.iter() {
        if label.iter().any(|&b| b == b'.' || !(0x20..0x7f).contains(&b)) {
            return Err(PacketError("a label holds a dot or a non-printable byte"));
        }
        // Printable ASCII: one char per byte.
        out.extend(label.iter().map(|&b| char::from(b)));
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    Ok(out)
}

fn to_record(r: &Record) -> Result<WireRecord, PacketError> {
    let data = match &r.data {
        RData::Ptr(target) => WireData::PTR(PTR(to_name(target)?)),
        RData::Srv { port, target } => WireData::SRV(SRV::new(0, 0, *port, to_name(target)?)),
        RData::Txt(strings) => {
            if strings.iter().any(|s| s.len() > MAX_TXT_STRING) {
                return Err(PacketError("TXT string longer than 255 bytes"));
            }
            // No strings is written as one empty string (RFC 6763 §6.1).
            let strings: Vec<&[u8]> =
                if strings.is_empty() { vec![&[]] } else { strings.iter().map(Vec::as_slice).collect() };
            WireData::TXT(TXT::from_bytes(strings))
        }
        RData::A(ip) => WireData::A(A(*ip)),
        RData::Other => return Err(PacketError("cannot encode an unknown record")),
    };
    let mut record = WireRecord::from_rdata(to_name(&r.name)?, r.ttl, data);
    record.set_dns_class(class(r.flush));
    Ok(record)
}

fn from_record(r: &WireRecord) -> Result<Record, PacketError> {
    let data = match r.data() {
        WireData::PTR(target) => RData::Ptr(from_name(&target.0)?),
        WireData::SRV(srv) => RData::Srv { port: srv.port(), target: from_name(srv.target())? },
        WireData::TXT(txt) => RData::Txt(txt.txt_data().iter().map(|s| s.to_vec()).collect()),
        WireData::A(ip) => RData::A(ip.0),
        // An empty RDATA: the crate keeps it as an update placeholder.
        WireData::Update0(RecordType::TXT) => RData::Txt(Vec::new()),
        WireData::Update0(RecordType::PTR | RecordType::SRV | RecordType::A) => {
            return Err(PacketError("a PTR, SRV or A record without data"));
        }
        _ => RData::Other,
    };
    let flush = u16::from(r.dns_class()) & CLASS_TOP_BIT != 0;
    Ok(Record { name: from_name(r.name())?, flush, ttl: r.ttl(), data })
}

/// Whether two names are equal, ASCII case-insensitively, trailing dots ignored.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message::response(
            vec![Record::new("_rpcxservices.local.", false, 120, RData::Ptr("h._rpcxservices.local.".into()))],
            vec![
                Record::new("h._rpcxservices.local.", true, 120, RData::Srv { port: 8972, target: "h.local.".into() }),
                Record::new("h._rpcxservices.local.", true, 120, RData::Txt(vec![b"%5B%5D".to_vec()])),
                Record::new("h.local.", true, 120, RData::A(Ipv4Addr::new(10, 0, 0, 5))),
            ],
        )
    }

    #[test]
    fn messages_round_trip() {
        let m = sample();
        assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
        let q = Message::query("_rpcxservices.local.", TYPE_PTR);
        let wire = q.encode().unwrap();
        // id 0, flags 0, one question, class IN without the unicast bit (Go's form).
        assert_eq!(&wire[..12], &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&wire[wire.len() - 4..], &[0, 12, 0, 1]);
        assert_eq!(Message::decode(&wire).unwrap(), q);
    }

    #[test]
    fn compressed_names_are_followed() {
        // Header, then question "a.local." at 12, then a PTR answer whose name points
        // at 12 and whose data is "x" + pointer to 12.
        let mut p = vec![0, 0, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&[1, b'a', 5, b'l', b'o', b'c', b'a', b'l', 0, 0, 12, 0, 1]);
        p.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xc0, 12]);
        let m = Message::decode(&p).unwrap();
        assert_eq!(m.answers[0].name, "a.local.");
        assert_eq!(m.answers[0].data, RData::Ptr("x.a.local.".into()));
    }

    #[test]
    fn junk_and_truncated_packets_are_errors_not_panics() {
        let good = sample().encode().unwrap();
        // Every truncation of a good packet.
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n]).is_err(), "truncated at {n}");
        }
        // Every single-byte corruption: never a panic (most still parse).
        for i in 0..good.len() {
            for b in [0x00, 0x3f, 0x40, 0xc0, 0xff] {
                let mut p = good.clone();
                p[i] = b;
                let _ = Message::decode(&p);
            }
        }
        // A pointer loop, a forward pointer, a huge count, an oversize packet.
        let mut looped = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(Message::decode(&looped).is_err());
        let mut forward = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        forward.extend_from_slice(&[0xc0, 20, 0, 1, 0, 1, 0, 0, 0, 0]);
        assert!(Message::decode(&forward).is_err());
        assert_eq!(Message::decode(&[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0]), Err(PacketError("too many records")));
        assert!(Message::decode(&vec![0; MAX_PACKET + 1]).is_err());
        // A name of 200 labels of 1 byte is longer than 255 bytes.
        let mut long = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..200 {
            long.extend_from_slice(&[1, b'a']);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(Message::decode(&long).is_err());
        // A chain of 4000 pointers, each to the one before it, hidden in the data of a
        // record of an unknown type, and a second record named by the last pointer: read
        // in a thread with the stack the responder and browser get, it is a name or an
        // error, not a stack overflow.
        let n = 4470u16;
        let mut chain = vec![0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        chain.extend_from_slice(&[0, 0xff, 0, 0, 1, 0, 0, 0, 0]);
        chain.extend_from_slice(&(3 + 2 * n).to_be_bytes());
        chain.extend_from_slice(&[1, b'a', 0]); // "a." at 23
        for i in 0..n {
            let target = if i == 0 { 23 } else { 26 + 2 * (i - 1) };
            chain.extend_from_slice(&(0xc000 | target).to_be_bytes());
        }
        chain.extend_from_slice(&(0xc000 | (26 + 2 * (n - 1))).to_be_bytes());
        chain.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 10, 0, 0, 1]);
        assert!(chain.len() <= MAX_PACKET);
        let reader = std::thread::Builder::new().stack_size(DECODE_STACK);
        let read = reader.spawn(move || Message::decode(&chain)).unwrap().join().unwrap();
        if let Ok(m) = read {
            assert_eq!(m.answers[1], Record::new("a.", false, 1, RData::A(Ipv4Addr::new(10, 0, 0, 1))));
        }
        // Labels with a dot or a control byte.
        let mut dotted = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'.', b'b', 0, 0, 1, 0, 1];
        assert_eq!(Message::decode(&dotted), Err(PacketError("a label holds a dot or a non-printable byte")));
        dotted[14] = 0x07;
        assert_eq!(Message::decode(&dotted), Err(PacketError("a label holds a dot or a non-printable byte")));
        // Pseudo-random junk.
        let mut x: u32 = 0x9e37_79b9;
        for len in (0..600).chain((0..2000).map(|i| 12 + i % 700)) {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = Message::decode(&junk);
        }
        // Random junk behind a plausible header (a few records of each section).
        for _ in 0..2000 {
            let mut p = vec![0, 0, 0x84, 0, 0, 1, 0, 2, 0, 1, 0, 2];
            let len = (x % 300) as usize;
            p.extend((0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as u8
            }));
            let _ = Message::decode(&p);
        }
    }

    #[test]
    fn mdns_bits_are_on_the_wire() {
        // Response flags 0x8400, the cache-flush bit on the classes of flushed records.
        let wire = sample().encode().unwrap();
        assert_eq!(&wire[..12], &[0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 3]);
        let m = Message::decode(&wire).unwrap();
        assert!(m.is_response());
        // The PTR answer comes first: name, type 12, class IN without the bit, TTL 120.
        let ptr = 12 + "_rpcxservices.local.".len() + 1;
        assert_eq!(&wire[ptr..ptr + 8], &[0, 12, 0, 1, 0, 0, 0, 120]);
        // Each flushed record has class 0x8001 followed by TTL 120.
        let flushed = wire.windows(6).filter(|w| w == &[0x80, 0x01, 0, 0, 0, 120]).count();
        assert_eq!(flushed, 3);
        // The unicast-response bit in a question.
        let mut q = Message::query("_rpcxservices.local.", TYPE_PTR);
        q.questions[0].unicast = true;
        let wire = q.encode().unwrap();
        assert_eq!(&wire[wire.len() - 4..], &[0, 12, 0x80, 1]);
        assert_eq!(Message::decode(&wire).unwrap(), q);
        // Empty TXT data reads as no strings; an empty list is written as one empty string.
        let empty = Message::response(vec![Record::new("a.", true, 1, RData::Txt(vec![]))], vec![]);
        let wire = empty.encode().unwrap();
        assert_eq!(&wire[wire.len() - 3..], &[0, 1, 0]);
        let n = wire.len();
        let mut no_data = wire[..n - 3].to_vec();
        no_data.extend_from_slice(&[0, 0]);
        assert_eq!(Message::decode(&no_data).unwrap().answers[0].data, RData::Txt(vec![]));
    }

    #[test]
    fn encoding_refuses_what_does_not_fit() {
        let long = Record::new("a.", false, 1, RData::Txt(vec![vec![b'x'; 256]]));
        assert!(Message::response(vec![long], vec![]).encode().is_err());
        assert!(Message::query(&"a".repeat(64), TYPE_PTR).encode().is_err());
        assert!(Message::query("a..b", TYPE_PTR).encode().is_err());
        // Over MAX_PACKET, and over the crate's 64 KiB buffer: errors, not panics.
        for n in [40, 300] {
            let big: Vec<Record> =
                (0..n).map(|i| Record::new(&format!("r{i}."), false, 1, RData::Txt(vec![vec![b'x'; 255]]))).collect();
            assert!(Message::response(big, vec![]).encode().is_err());
        }
        assert!(same_name("_rpcxservices.LOCAL.", "_rpcxservices.local"));
    }
}
