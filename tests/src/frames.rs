//! Builds Ethernet frames byte by byte from a structured [`Packet`], including broken ones.
//!
//! A [`Packet`] says what the frame carries (VLAN tags, IPv4 with options and fragment fields,
//! IPv6 with any chain of extension headers, TCP, UDP or raw bytes, or a non-IP ethertype);
//! [`Packet::to_bytes`] writes it out with consistent length fields. Frames that no builder
//! would make (too many tags, oversized chains) come from the same types; truncated or patched
//! frames come from [`truncated`] and plain indexing into the bytes.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// TPID of an 802.1Q (customer) VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (service, QinQ outer) VLAN tag.
pub const TPID_8021AD: u16 = 0x88a8;
/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// Length of an untagged Ethernet header.
pub const ETH_HLEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_HLEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
/// Length of the TCP header [`L4::Tcp`] writes (no options).
pub const TCP_HLEN: usize = 20;
/// Length of a UDP header.
pub const UDP_HLEN: usize = 8;

/// IP protocol / IPv6 next-header numbers.
pub mod proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// Mobility header.
    pub const MH: u8 = 135;
    /// Host identity protocol.
    pub const HIP: u8 = 139;
    /// Shim6.
    pub const SHIM6: u8 = 140;
}

/// Destination MAC of every built frame.
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Source MAC of every built frame.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// One frame: Ethernet, VLAN tags in wire order, then the layer-3 payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// VLAN tags, outermost first; any number, so broken stacks can be built too.
    pub vlans: Vec<Vlan>,
    /// What follows the tags.
    pub l3: L3,
}

/// One VLAN tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// Tag protocol identifier ([`TPID_8021Q`] or [`TPID_8021AD`], or anything).
    pub tpid: u16,
    /// Tag control information (priority, DEI, VLAN id).
    pub tci: u16,
}

/// The layer-3 part of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L3 {
    /// IPv4 (ethertype 0x0800).
    V4(Ipv4),
    /// IPv6 (ethertype 0x86dd).
    V6(Ipv6),
    /// Any other ethertype followed by raw bytes (e.g. ARP).
    Other {
        /// The ethertype.
        ether_type: u16,
        /// Bytes after the ethertype.
        payload: Vec<u8>,
    },
}

/// An IPv4 header and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Option bytes, padded with zeros (end of options) to a multiple of 4; at most 40.
    pub options: Vec<u8>,
    /// Fragment offset in 8-byte units (13 bits).
    pub frag_offset: u16,
    /// The MF (more fragments) flag.
    pub more_fragments: bool,
    /// The payload; its protocol number goes into the header.
    pub l4: L4,
}

/// An IPv6 header, its extension headers and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Extension headers in order; each one's next-header field names what follows it.
    pub ext: Vec<Ext>,
    /// The payload after the last extension header.
    pub l4: L4,
}

/// One IPv6 extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options; `(len + 1) * 8` bytes, padded with Pad1.
    HopByHop { len: u8 },
    /// Routing header (type 0, no segments left); `(len + 1) * 8` bytes.
    Routing { len: u8 },
    /// Destination options; `(len + 1) * 8` bytes.
    DestOpts { len: u8 },
    /// Fragment header: offset in 8-byte units (13 bits) and the M flag; 8 bytes.
    Fragment { offset: u16, more: bool },
    /// Authentication header; `(len + 2) * 4` bytes.
    Ah { len: u8 },
    /// Any header with the `(len + 1) * 8` layout under another number (MH, HIP, Shim6, ...).
    Other { protocol: u8, len: u8 },
}

/// The transport part of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    /// A 20-byte TCP header (SYN).
    Tcp { src_port: u16, dst_port: u16 },
    /// An 8-byte UDP header.
    Udp { src_port: u16, dst_port: u16 },
    /// Raw bytes under any protocol number (ICMP, ESP, or the middle of a fragmented payload).
    Raw { protocol: u8, payload: Vec<u8> },
}

/// Source port of the frames built by [`L4::tcp`] and [`L4::udp`].
pub const CLIENT_PORT: u16 = 40000;

impl L4 {
    /// TCP from [`CLIENT_PORT`] to `dst_port`.
    #[must_use]
    pub const fn tcp(dst_port: u16) -> Self {
        Self::Tcp {
            src_port: CLIENT_PORT,
            dst_port,
        }
    }

    /// UDP from [`CLIENT_PORT`] to `dst_port`.
    #[must_use]
    pub const fn udp(dst_port: u16) -> Self {
        Self::Udp {
            src_port: CLIENT_PORT,
            dst_port,
        }
    }

    /// Raw `payload` under protocol number `protocol`.
    #[must_use]
    pub fn raw(protocol: u8, payload: &[u8]) -> Self {
        Self::Raw {
            protocol,
            payload: payload.to_vec(),
        }
    }

    /// The IP protocol number of this payload.
    #[must_use]
    pub const fn protocol(&self) -> u8 {
        match self {
            Self::Tcp { .. } => proto::TCP,
            Self::Udp { .. } => proto::UDP,
            Self::Raw { protocol, .. } => *protocol,
        }
    }

    /// The payload's bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Tcp { src_port, dst_port } => {
                let mut b = Vec::with_capacity(TCP_HLEN);
                b.extend_from_slice(&src_port.to_be_bytes());
                b.extend_from_slice(&dst_port.to_be_bytes());
                b.extend_from_slice(&1u32.to_be_bytes()); // sequence
                b.extend_from_slice(&0u32.to_be_bytes()); // acknowledgment
                b.push(5 << 4); // data offset: 5 words
                b.push(0x02); // SYN
                b.extend_from_slice(&64240u16.to_be_bytes()); // window
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                b
            }
            Self::Udp { src_port, dst_port } => {
                let mut b = Vec::with_capacity(UDP_HLEN);
                b.extend_from_slice(&src_port.to_be_bytes());
                b.extend_from_slice(&dst_port.to_be_bytes());
                b.extend_from_slice(&(UDP_HLEN as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]); // checksum
                b
            }
            Self::Raw { payload, .. } => payload.clone(),
        }
    }
}

impl Ext {
    /// The next-header number that announces this header.
    #[must_use]
    pub const fn protocol(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => proto::HOPOPTS,
            Self::Routing { .. } => proto::ROUTING,
            Self::DestOpts { .. } => proto::DSTOPTS,
            Self::Fragment { .. } => proto::FRAGMENT,
            Self::Ah { .. } => proto::AH,
            Self::Other { protocol, .. } => *protocol,
        }
    }

    /// Size of this header in bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        match *self {
            Self::HopByHop { len }
            | Self::Routing { len }
            | Self::DestOpts { len }
            | Self::Other { len, .. } => (usize::from(len) + 1) * 8,
            Self::Fragment { .. } => 8,
            Self::Ah { len } => (usize::from(len) + 2) * 4,
        }
    }

    /// This header's bytes, announcing `next` as what follows.
    #[must_use]
    pub fn to_bytes(&self, next: u8) -> Vec<u8> {
        let mut b = vec![0u8; self.size()];
        b[0] = next;
        match *self {
            Self::HopByHop { len }
            | Self::Routing { len }
            | Self::DestOpts { len }
            | Self::Other { len, .. }
            | Self::Ah { len } => b[1] = len,
            Self::Fragment { offset, more } => {
                let word = ((offset & 0x1fff) << 3) | u16::from(more);
                b[2..4].copy_from_slice(&word.to_be_bytes());
                b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // identification
            }
        }
        b
    }
}

impl Ipv4 {
    /// An unfragmented IPv4 packet without options from `src` to 192.0.2.1.
    #[must_use]
    pub const fn new(src: Ipv4Addr, l4: L4) -> Self {
        Self {
            src,
            dst: Ipv4Addr::new(192, 0, 2, 1),
            options: Vec::new(),
            frag_offset: 0,
            more_fragments: false,
            l4,
        }
    }

    /// Header length in bytes, options (padded to 4) included.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        IPV4_HLEN + self.options.len().div_ceil(4) * 4
    }

    /// The header and payload bytes.
    ///
    /// # Panics
    /// If the options are longer than 40 bytes (the IHL field cannot say so).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let header_len = self.header_len();
        assert!(header_len <= 60, "IPv4 options longer than 40 bytes");
        let payload = self.l4.to_bytes();
        let total = u16::try_from(header_len + payload.len()).unwrap_or(u16::MAX);
        let frag = (self.frag_offset & 0x1fff) | if self.more_fragments { 0x2000 } else { 0 };
        let mut b = Vec::with_capacity(header_len + payload.len());
        b.push(0x40 | (header_len / 4) as u8);
        b.push(0); // DSCP/ECN
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
        b.extend_from_slice(&frag.to_be_bytes());
        b.push(64); // TTL
        b.push(self.l4.protocol());
        b.extend_from_slice(&[0, 0]); // checksum, filled below
        b.extend_from_slice(&self.src.octets());
        b.extend_from_slice(&self.dst.octets());
        b.extend_from_slice(&self.options);
        b.resize(header_len, 0);
        let sum = ipv4_checksum(&b);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
        b.extend_from_slice(&payload);
        b
    }
}

/// The internet checksum of an IPv4 header.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Ipv6 {
    /// An IPv6 packet without extension headers from `src` to 2001:db8::1.
    #[must_use]
    pub const fn new(src: Ipv6Addr, l4: L4) -> Self {
        Self {
            src,
            dst: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            ext: Vec::new(),
            l4,
        }
    }

    /// Bytes from the start of the IPv6 header to the payload.
    #[must_use]
    pub fn header_len(&self) -> usize {
        IPV6_HLEN + self.ext.iter().map(Ext::size).sum::<usize>()
    }

    /// The header, extension headers and payload bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut rest = Vec::new();
        for (i, ext) in self.ext.iter().enumerate() {
            let next = self
                .ext
                .get(i + 1)
                .map_or(self.l4.protocol(), Ext::protocol);
            rest.extend_from_slice(&ext.to_bytes(next));
        }
        rest.extend_from_slice(&self.l4.to_bytes());
        let first = self.ext.first().map_or(self.l4.protocol(), Ext::protocol);
        let mut b = Vec::with_capacity(IPV6_HLEN + rest.len());
        b.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version, class, flow label
        b.extend_from_slice(&u16::try_from(rest.len()).unwrap_or(u16::MAX).to_be_bytes());
        b.push(first);
        b.push(64); // hop limit
        b.extend_from_slice(&self.src.octets());
        b.extend_from_slice(&self.dst.octets());
        b.extend_from_slice(&rest);
        b
    }
}

impl From<Ipv4> for Packet {
    fn from(ip: Ipv4) -> Self {
        Self {
            vlans: Vec::new(),
            l3: L3::V4(ip),
        }
    }
}

impl From<Ipv6> for Packet {
    fn from(ip: Ipv6) -> Self {
        Self {
            vlans: Vec::new(),
            l3: L3::V6(ip),
        }
    }
}

impl Packet {
    /// An untagged, unfragmented IPv4 packet from `src` carrying `l4`.
    #[must_use]
    pub fn v4(src: Ipv4Addr, l4: L4) -> Self {
        Ipv4::new(src, l4).into()
    }

    /// An untagged IPv6 packet from `src` carrying `l4`, no extension headers.
    #[must_use]
    pub fn v6(src: Ipv6Addr, l4: L4) -> Self {
        Ipv6::new(src, l4).into()
    }

    /// An untagged ARP request (28 bytes of payload).
    #[must_use]
    pub fn arp() -> Self {
        let mut payload = vec![0, 1, 0x08, 0, 6, 4, 0, 1]; // Ethernet/IPv4, request
        payload.extend_from_slice(&SRC_MAC);
        payload.extend_from_slice(&[192, 0, 2, 2]);
        payload.extend_from_slice(&[0; 6]);
        payload.extend_from_slice(&[192, 0, 2, 1]);
        Self {
            vlans: Vec::new(),
            l3: L3::Other {
                ether_type: ETHERTYPE_ARP,
                payload,
            },
        }
    }

    /// This packet with one more (inner) VLAN tag of protocol `tpid`, VLAN id 100 + its depth.
    #[must_use]
    pub fn with_vlan(mut self, tpid: u16) -> Self {
        let vid = 100 + self.vlans.len() as u16;
        self.vlans.push(Vlan { tpid, tci: vid });
        self
    }

    /// The ethertype after the tags.
    #[must_use]
    pub const fn ether_type(&self) -> u16 {
        match &self.l3 {
            L3::V4(_) => ETHERTYPE_IPV4,
            L3::V6(_) => ETHERTYPE_IPV6,
            L3::Other { ether_type, .. } => *ether_type,
        }
    }

    /// Offset of the layer-3 header in the frame.
    #[must_use]
    pub fn l3_offset(&self) -> usize {
        ETH_HLEN + VLAN_HLEN * self.vlans.len()
    }

    /// Offset of the transport header (after IPv4 options or IPv6 extension headers), if IP.
    #[must_use]
    pub fn l4_offset(&self) -> Option<usize> {
        match &self.l3 {
            L3::V4(ip) => Some(self.l3_offset() + ip.header_len()),
            L3::V6(ip) => Some(self.l3_offset() + ip.header_len()),
            L3::Other { .. } => None,
        }
    }

    /// The whole frame, from the destination MAC on.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&DST_MAC);
        b.extend_from_slice(&SRC_MAC);
        for tag in &self.vlans {
            b.extend_from_slice(&tag.tpid.to_be_bytes());
            b.extend_from_slice(&tag.tci.to_be_bytes());
        }
        b.extend_from_slice(&self.ether_type().to_be_bytes());
        match &self.l3 {
            L3::V4(ip) => b.extend_from_slice(&ip.to_bytes()),
            L3::V6(ip) => b.extend_from_slice(&ip.to_bytes()),
            L3::Other { payload, .. } => b.extend_from_slice(payload),
        }
        b
    }
}

/// The first `len` bytes of `frame` (all of it if shorter).
#[must_use]
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len.min(frame.len())].to_vec()
}

/// `frame` as lowercase hex, for failure messages.
#[must_use]
pub fn hex(frame: &[u8]) -> String {
    let mut s = String::with_capacity(frame.len() * 2);
    for b in frame {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tcp_frame_has_the_fields_at_their_offsets() {
        let f = Packet::v4(Ipv4Addr::new(203, 0, 113, 7), L4::tcp(443)).to_bytes();
        assert_eq!(f.len(), ETH_HLEN + IPV4_HLEN + TCP_HLEN);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(&f[16..18], &40u16.to_be_bytes());
        assert_eq!(f[23], proto::TCP);
        assert_eq!(&f[26..30], &[203, 0, 113, 7]);
        assert_eq!(&f[36..38], &443u16.to_be_bytes());
        assert_eq!(ipv4_checksum(&f[14..34]), 0, "header checksum verifies");
    }

    #[test]
    fn ipv6_chain_links_next_headers_and_sizes() {
        let mut ip = Ipv6::new(Ipv6Addr::LOCALHOST, L4::udp(53));
        ip.ext = vec![
            Ext::HopByHop { len: 0 },
            Ext::Ah { len: 1 },
            Ext::Fragment {
                offset: 3,
                more: true,
            },
        ];
        let p = Packet::from(ip).with_vlan(TPID_8021AD);
        let f = p.to_bytes();
        let l3 = p.l3_offset();
        assert_eq!(l3, 18);
        assert_eq!(f[l3 + 6], proto::HOPOPTS);
        assert_eq!(f[l3 + 40], proto::AH);
        assert_eq!(f[l3 + 48], proto::FRAGMENT);
        assert_eq!(f[l3 + 60], proto::UDP);
        assert_eq!(&f[l3 + 62..l3 + 64], &[0, 3 << 3 | 1]);
        assert_eq!(p.l4_offset(), Some(l3 + 40 + 8 + 12 + 8));
        assert_eq!(&f[l3 + 4..l3 + 6], &(8u16 + 12 + 8 + 8).to_be_bytes());
    }
}
