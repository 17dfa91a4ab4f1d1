//! pcap and pcapng input for `rpcx decode`: TCP segments reassembled per flow (in
//! sequence order, retransmissions and overlaps trimmed, out-of-order segments held
//! until the gap fills), each flow's byte stream decoded as rpcx frames.

use crate::decode::print_frame;
use crate::frame::FrameReader;
use crate::{Failure, Outcome};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

/// Whether the bytes start like a pcap or pcapng file.
pub(crate) fn is_capture(b: &[u8]) -> bool {
    matches!(
        b.get(..4),
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] | [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d])
            | Some([0x0a, 0x0d, 0x0d, 0x0a])
    )
}

/// One direction of one TCP connection.
struct Flow {
    /// Sequence number of the stream's first byte.
    isn: u32,
    /// Stream bytes delivered so far.
    next: u64,
    /// Segments past a gap, by stream offset.
    pending: BTreeMap<u64, Vec<u8>>,
    reader: FrameReader,
    /// A malformed frame stopped this flow's decoding.
    broken: bool,
}

struct Capture<'o, W: Write> {
    flows: HashMap<String, Flow>,
    order: Vec<String>,
    json: bool,
    out: &'o mut W,
    schema: Option<prost_reflect::DescriptorPool>,
    frames: usize,
    errors: Vec<String>,
}

impl<W: Write> Capture<'_, W> {
    fn packet(&mut self, link: DataLink, data: &[u8]) -> std::io::Result<()> {
        let sliced = match link {
            DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
            DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
            // BSD loopback: a 4-byte address family, then IP.
            DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..).unwrap_or_default()),
            _ => return Ok(()),
        };
        let Ok(p) = sliced else { return Ok(()) };
        let (src, dst) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                (ip.header().source_addr().to_string(), ip.header().destination_addr().to_string())
            }
            Some(NetSlice::Ipv6(ip)) => {
                (format!("[{}]", ip.header().source_addr()), format!("[{}]", ip.header().destination_addr()))
            }
            _ => return Ok(()),
        };
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else { return Ok(()) };
        let key = format!("{src}:{}->{dst}:{}", tcp.source_port(), tcp.destination_port());
        let seq = tcp.sequence_number();
        let payload = tcp.payload();
        if !self.flows.contains_key(&key) {
            if payload.is_empty() && !tcp.syn() {
                return Ok(());
            }
            // A SYN takes one sequence number; a capture started mid-stream begins here.
            let isn = if tcp.syn() { seq.wrapping_add(1) } else { seq };
            let flow = Flow {
                isn,
                next: 0,
                pending: BTreeMap::new(),
                reader: FrameReader::new(self.schema.clone()),
                broken: false,
            };
            self.flows.insert(key.clone(), flow);
            self.order.push(key.clone());
        }
        if payload.is_empty() {
            return Ok(());
        }
        let start = if tcp.syn() { seq.wrapping_add(1) } else { seq };
        let flow = self.flows.get_mut(&key).expect("inserted above");
        let at = u64::from(start.wrapping_sub(flow.isn));
        flow.pending
            .entry(at)
            .and_modify(|v| {
                if payload.len() > v.len() {
                    *v = payload.to_vec();
                }
            })
            .or_insert_with(|| payload.to_vec());
        // Deliver every segment that now continues the stream.
        while let Some((&at, _)) = flow.pending.first_key_value() {
            if at > flow.next {
                break;
            }
            let seg = flow.pending.pop_first().map(|(_, v)| v).unwrap_or_default();
            let end = at + seg.len() as u64;
            if end <= flow.next {
                continue;
            }
            let fresh = &seg[(flow.next - at) as usize..];
            flow.next = end;
            if flow.broken {
                continue;
            }
            flow.reader.feed(fresh);
            loop {
                match flow.reader.next_frame() {
                    Ok(Some(view)) => {
                        let extra = [("flow", key.clone().into()), ("frame", self.frames.into())];
                        print_frame(self.out, &view, self.json, &format!("[{key}] "), &extra)?;
                        self.frames += 1;
                        if let Some(e) = &view.payload_error {
                            self.errors.push(format!("{key}: frame at byte offset {}: {e}", view.offset));
                        }
                    }
                    Ok(None) => break,
                    Err(m) => {
                        self.errors.push(format!("{key}: {m}"));
                        flow.broken = true;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        for key in &self.order {
            let flow = &self.flows[key];
            if let Some((&at, _)) = flow.pending.first_key_value() {
                self.errors.push(format!(
                    "{key}: {} bytes missing from the capture at byte offset {}",
                    at - flow.next,
                    flow.next
                ));
            } else if !flow.broken {
                if let Err(m) = flow.reader.finish() {
                    self.errors.push(format!("{key}: {m}"));
                }
            }
        }
    }
}

/// Decode every rpcx frame in a pcap or pcapng capture.
pub(crate) fn decode_capture(bytes: &[u8], json: bool, schema: Option<prost_reflect::DescriptorPool>) -> Outcome {
    let mut stdout = std::io::stdout().lock();
    let mut cap = Capture {
        flows: HashMap::new(),
        order: Vec::new(),
        json,
        out: &mut stdout,
        schema,
        frames: 0,
        errors: Vec::new(),
    };
    let io = |e: std::io::Error| Failure::failed(format!("writing: {e}"));
    let bad = |e: pcap_file::PcapError| Failure::failed(format!("capture: {e}"));
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(bytes).map_err(bad)?;
        // Link types of the current section's interfaces, in order.
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = r.next_block() {
            use pcap_file::pcapng::Block;
            let (interface, data) = match block.map_err(bad)? {
                Block::SectionHeader(_) => {
                    links.clear();
                    continue;
                }
                Block::InterfaceDescription(i) => {
                    links.push(i.linktype);
                    continue;
                }
                Block::EnhancedPacket(p) => (p.interface_id as usize, p.data.into_owned()),
                Block::SimplePacket(p) => (0, p.data.into_owned()),
                _ => continue,
            };
            let Some(&link) = links.get(interface) else {
                return Err(Failure::failed(format!("capture: packet of undeclared interface {interface}")));
            };
            cap.packet(link, &data).map_err(io)?;
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(bytes).map_err(bad)?;
        let link = r.header().datalink;
        while let Some(p) = r.next_packet() {
            let p = p.map_err(bad)?;
            cap.packet(link, &p.data).map_err(io)?;
        }
    }
    cap.finish();
    cap.out.flush().map_err(io)?;
    let (frames, errors) = (cap.frames, std::mem::take(&mut cap.errors));
    drop(stdout);
    if let Some((last, before)) = errors.split_last() {
        for e in before {
            eprintln!("rpcx: {e}");
        }
        return Err(Failure::failed(last.clone()));
    }
    if frames == 0 {
        return Err(Failure::failed("no rpcx frame in the capture's TCP streams"));
    }
    Ok(())
}
