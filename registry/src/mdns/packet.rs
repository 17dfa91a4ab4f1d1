//! The few DNS message parts mDNS service discovery needs (RFC 1035 wire format, RFC
//! 6762 class bits): questions, PTR, SRV, TXT and A records, other records skipped.
//!
//! Decoding treats the packet as hostile: every length is checked against the buffer,
//! name compression pointers must point backwards (no loops) and are followed at most
//! [`MAX_POINTERS`] times, names are at most 255 bytes, the record count is capped at
//! [`MAX_RECORDS`], and any violation is an error, never a panic. Encoding writes
//! names uncompressed (every mDNS stack reads them).

use std::fmt;
use std::net::Ipv4Addr;

/// The largest packet read or written (RFC 6762 §17: 9000 bytes).
pub(crate) const MAX_PACKET: usize = 9000;
/// The most questions plus records accepted in one packet.
pub(crate) const MAX_RECORDS: usize = 256;
/// The most compression pointers followed in one name.
pub(crate) const MAX_POINTERS: usize = 32;
/// The longest name (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_PTR: u16 = 12;
pub(crate) const TYPE_TXT: u16 = 16;
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

    fn rtype(&self) -> u16 {
        match self.data {
            RData::Ptr(_) => TYPE_PTR,
            RData::Srv { .. } => TYPE_SRV,
            RData::Txt(_) => TYPE_TXT,
            RData::A(_) => TYPE_A,
            RData::Other => 0,
        }
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
        let mut out = Vec::with_capacity(512);
        for v in [
            self.id,
            self.flags,
            count(self.questions.len())?,
            count(self.answers.len())?,
            count(self.authority.len())?,
            count(self.additional.len())?,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for q in &self.questions {
            put_name(&mut out, &q.name)?;
            out.extend_from_slice(&q.qtype.to_be_bytes());
            let class = CLASS_IN | if q.unicast { CLASS_TOP_BIT } else { 0 };
            out.extend_from_slice(&class.to_be_bytes());
        }
        for r in self.records() {
            put_record(&mut out, r)?;
        }
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
        let mut r = Reader { buf, pos: 0 };
        let id = r.u16()?;
        let flags = r.u16()?;
        let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
        if counts.iter().map(|&c| usize::from(c)).sum::<usize>() > MAX_RECORDS {
            return Err(PacketError("too many records"));
        }
        let mut m = Message { id, flags, ..Message::default() };
        for _ in 0..counts[0] {
            let name = r.name()?;
            let qtype = r.u16()?;
            let class = r.u16()?;
            m.questions.push(Question { name, qtype, unicast: class & CLASS_TOP_BIT != 0 });
        }
        for (n, section) in [(counts[1], &mut m.answers), (counts[2], &mut m.authority), (counts[3], &mut m.additional)]
        {
            for _ in 0..n {
                section.push(r.record()?);
            }
        }
        Ok(m)
    }
}

fn count(n: usize) -> Result<u16, PacketError> {
    u16::try_from(n).map_err(|_| PacketError("too many records"))
}

/// `a.b.c.` (the trailing dot optional) as labels; empty labels other than the root
/// are refused.
fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), PacketError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut len = 1;
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(PacketError("a label is empty or longer than 63 bytes"));
            }
            len += label.len() + 1;
            if len > MAX_NAME {
                return Err(PacketError("name longer than 255 bytes"));
            }
            out.push(label.len() as u8); // <= 63
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    Ok(())
}

fn put_record(out: &mut Vec<u8>, r: &Record) -> Result<(), PacketError> {
    put_name(out, &r.name)?;
    out.extend_from_slice(&r.rtype().to_be_bytes());
    let class = CLASS_IN | if r.flush { CLASS_TOP_BIT } else { 0 };
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match &r.data {
        RData::Ptr(target) => put_name(out, target)?,
        RData::Srv { port, target } => {
            out.extend_from_slice(&[0, 0, 0, 0]); // priority, weight
            out.extend_from_slice(&port.to_be_bytes());
            put_name(out, target)?;
        }
        RData::Txt(strings) => {
            if strings.is_empty() {
                out.push(0);
            }
            for s in strings {
                let len = u8::try_from(s.len()).map_err(|_| PacketError("TXT string longer than 255 bytes"))?;
                out.push(len);
                out.extend_from_slice(s);
            }
        }
        RData::A(ip) => out.extend_from_slice(&ip.octets()),
        RData::Other => return Err(PacketError("cannot encode an unknown record")),
    }
    let rdlen = u16::try_from(out.len() - len_at - 2).map_err(|_| PacketError("record too large"))?;
    out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PacketError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(PacketError("truncated packet"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, PacketError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PacketError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name at the cursor (which moves past it), compression pointers followed.
    fn name(&mut self) -> Result<String, PacketError> {
        let (name, end) = read_name(self.buf, self.pos)?;
        self.pos = end;
        Ok(name)
    }

    fn record(&mut self) -> Result<Record, PacketError> {
        let name = self.name()?;
        let rtype = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let len = usize::from(self.u16()?);
        let start = self.pos;
        let rdata = self.take(len)?;
        let data = match rtype {
            TYPE_PTR => RData::Ptr(read_name(self.buf, start)?.0),
            TYPE_SRV => {
                if len < 7 {
                    return Err(PacketError("short SRV record"));
                }
                let port = u16::from_be_bytes([rdata[4], rdata[5]]);
                RData::Srv { port, target: read_name(self.buf, start + 6)?.0 }
            }
            TYPE_TXT => {
                let mut strings = Vec::new();
                let mut rest = rdata;
                while let Some((&n, tail)) = rest.split_first() {
                    let n = usize::from(n);
                    if n > tail.len() {
                        return Err(PacketError("TXT string runs past its record"));
                    }
                    strings.push(tail[..n].to_vec());
                    rest = &tail[n..];
                }
                RData::Txt(strings)
            }
            TYPE_A => match <[u8; 4]>::try_from(rdata) {
                Ok(o) => RData::A(Ipv4Addr::from(o)),
                Err(_) => return Err(PacketError("A record is not 4 bytes")),
            },
            _ => RData::Other,
        };
        Ok(Record { name, flush: class & CLASS_TOP_BIT != 0, ttl, data })
    }
}

/// The name at `pos` in dotted form with a trailing dot, and the offset just past it
/// (past the first pointer if compressed).
fn read_name(buf: &[u8], mut pos: usize) -> Result<(String, usize), PacketError> {
    let mut name = String::new();
    let mut end = None;
    let mut pointers = 0;
    let mut wire_len = 1;
    loop {
        let &len = buf.get(pos).ok_or(PacketError("truncated name"))?;
        match len {
            0 => {
                if name.is_empty() {
                    name.push('.');
                }
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            1..=63 => {
                let label = buf.get(pos + 1..pos + 1 + usize::from(len)).ok_or(PacketError("truncated label"))?;
                wire_len += label.len() + 1;
                if wire_len > MAX_NAME {
                    return Err(PacketError("name longer than 255 bytes"));
                }
                if label.iter().any(|&b| b == b'.' || !(0x20..0x7f).contains(&b)) {
                    return Err(PacketError("a label holds a dot or a non-printable byte"));
                }
                // Printable ASCII: one char per byte.
                name.extend(label.iter().map(|&b| char::from(b)));
                name.push('.');
                pos += 1 + label.len();
            }
            0xc0..=0xff => {
                let &low = buf.get(pos + 1).ok_or(PacketError("truncated pointer"))?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                pointers += 1;
                if target >= pos || pointers > MAX_POINTERS {
                    return Err(PacketError("a compression pointer that does not point backwards"));
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(PacketError("unknown label type")),
        }
    }
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
        assert_eq!(Message::decode(&looped), Err(PacketError("a compression pointer that does not point backwards")));
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
        assert_eq!(Message::decode(&long), Err(PacketError("name longer than 255 bytes")));
        // Pseudo-random junk.
        let mut x: u32 = 0x9e37_79b9;
        for len in 0..600 {
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
    }

    #[test]
    fn encoding_refuses_what_does_not_fit() {
        let long = Record::new("a.", false, 1, RData::Txt(vec![vec![b'x'; 256]]));
        assert!(Message::response(vec![long], vec![]).encode().is_err());
        assert!(Message::query(&"a".repeat(64), TYPE_PTR).encode().is_err());
        assert!(Message::query("a..b", TYPE_PTR).encode().is_err());
        assert!(same_name("_rpcxservices.LOCAL.", "_rpcxservices.local"));
    }
}
