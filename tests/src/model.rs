//! A plain-Rust reference classifier: the counter the XDP program must move for a frame.
//!
//! Written from the policy stated in `filter-ebpf/src/main.rs`'s header comment and the test
//! brief, not from the program's code: a straightforward byte parser and a linear scan of the
//! allowed prefixes. The policy, in full:
//!
//! - Ethernet, then at most two VLAN tags (TPID 0x8100 or 0x88a8); a third tag is malformed.
//! - A non-IP ethertype passes (unprotected).
//! - IPv4: version 4, IHL ≥ 5, the whole header with its options present. TCP and UDP have a
//!   port; any other protocol passes (unprotected).
//! - IPv6: version 6, the 40-byte header present, then at most 8 extension headers (hop-by-hop,
//!   routing, destination options, MH, HIP, Shim6: `(len + 1) * 8` bytes; AH: `(len + 2) * 4`;
//!   fragment: 8). A 9th extension header, or a chain whose end lies past [`MAX_OFFSET`], is
//!   malformed. Anything else (ICMPv6, ESP, no next header, ...) passes (unprotected).
//! - Only the 4 bytes of ports are read; the destination port is at transport offset + 2. A
//!   read that starts past [`MAX_OFFSET`] or runs past the frame is malformed, and so are ports
//!   that lie past the IP packet's own length (IPv4 total length, which may not be shorter than
//!   the header; IPv6 40 + payload length).
//! - A non-first fragment (IPv4 offset ≠ 0; IPv6 fragment header offset ≠ 0), of any protocol,
//!   passes as a fragment, or with strict fragments on is judged by source alone (refusal
//!   reason: fragment).
//! - A first fragment (offset 0, more fragments set) too short to show its port is judged by
//!   source alone (refusal reason: fragment), as if its port were protected (RFC 1858).
//! - A packet to a protected port passes if its source is in an allowed prefix, else it is
//!   refused (not allowed); to any other port it passes (unprotected).
//! - Refusals (not allowed, fragment, malformed) drop in enforce mode and count as monitor
//!   otherwise ([`Counter::refused`]). Malformed frames are refused whatever their source.

use std::net::{Ipv4Addr, Ipv6Addr};

use filter_common::{Counter, Reason, Settings};
use ipnet::{Ipv4Net, Ipv6Net};

/// No read may start further than this from the frame's first byte.
pub const MAX_OFFSET: usize = 1024;
/// Extension headers an IPv6 packet may carry before it is called malformed.
pub const MAX_EXT_HEADERS: usize = 8;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const TPIDS: [u16; 2] = [0x8100, 0x88a8];

const TCP: u8 = 6;
const UDP: u8 = 17;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
/// Extension headers laid out as next header, length in 8-octet units beyond the first 8.
const EIGHT_OCTET_EXT: [u8; 6] = [0, 43, 60, 135, 139, 140];

/// The counter the program must move for `frame`, given the maps' contents.
#[must_use]
pub fn classify(
    frame: &[u8],
    allow_v4: &[Ipv4Net],
    allow_v6: &[Ipv6Net],
    ports: &[u16],
    settings: Settings,
) -> Counter {
    let enforce = settings.enforce();
    let strict = settings.strict_fragments();
    let policy = Policy {
        allow_v4,
        allow_v6,
        ports,
        strict,
    };
    match policy.decide(&Bytes(frame)) {
        Ok(counter) => counter,
        Err(reason) => Counter::refused(reason, enforce),
    }
}

/// The frame, read with the program's bounds: every read starts at most at [`MAX_OFFSET`].
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn get(&self, at: usize, n: usize) -> Result<&[u8], Reason> {
        if at > MAX_OFFSET {
            return Err(Reason::Malformed);
        }
        self.0.get(at..at + n).ok_or(Reason::Malformed)
    }

    fn u8(&self, at: usize) -> Result<u8, Reason> {
        Ok(self.get(at, 1)?[0])
    }

    fn u16(&self, at: usize) -> Result<u16, Reason> {
        let b = self.get(at, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// The source address of an IP packet.
#[derive(Clone, Copy)]
enum Source {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// Where a parsed IP packet's ports are, if it has any worth judging.
enum Transport {
    /// Not TCP or UDP: never judged.
    None,
    /// TCP or UDP header at `at`, the IP packet ending at `end`; `first_fragment` if more
    /// fragments follow.
    Ports {
        at: usize,
        end: usize,
        first_fragment: bool,
    },
    /// A non-first fragment: no ports in it.
    LaterFragment,
}

struct Policy<'a> {
    allow_v4: &'a [Ipv4Net],
    allow_v6: &'a [Ipv6Net],
    ports: &'a [u16],
    strict: bool,
}

impl Policy<'_> {
    /// The counter for a passed frame, or the reason it is refused.
    fn decide(&self, f: &Bytes) -> Result<Counter, Reason> {
        let mut at = 12;
        let mut ether_type = f.u16(at)?;
        let mut tags = 0;
        while TPIDS.contains(&ether_type) {
            if tags == 2 {
                return Err(Reason::Malformed);
            }
            tags += 1;
            at += 4;
            ether_type = f.u16(at)?;
        }
        let l3 = at + 2;
        let (source, transport) = match ether_type {
            ETH_P_IP => ipv4(f, l3)?,
            ETH_P_IPV6 => ipv6(f, l3)?,
            _ => return Ok(Counter::PassUnprotected),
        };
        match transport {
            Transport::None => Ok(Counter::PassUnprotected),
            Transport::LaterFragment if !self.strict => Ok(Counter::PassFragment),
            Transport::LaterFragment => self.by_source(source, Reason::Fragment),
            Transport::Ports {
                at,
                end,
                first_fragment,
            } => match f.u16(at + 2).and_then(|port| {
                if at + 4 <= end {
                    Ok(port)
                } else {
                    Err(Reason::Malformed)
                }
            }) {
                Ok(port) if self.ports.contains(&port) => {
                    self.by_source(source, Reason::NotAllowed)
                }
                Ok(_) => Ok(Counter::PassUnprotected),
                Err(_) if first_fragment => self.by_source(source, Reason::Fragment),
                Err(e) => Err(e),
            },
        }
    }

    fn by_source(&self, source: Source, refusal: Reason) -> Result<Counter, Reason> {
        let allowed = match source {
            Source::V4(a) => self.allow_v4.iter().any(|n| n.contains(&a)),
            Source::V6(a) => self.allow_v6.iter().any(|n| n.contains(&a)),
        };
        if allowed {
            Ok(Counter::PassAllowed)
        } else {
            Err(refusal)
        }
    }
}

fn ipv4(f: &Bytes, l3: usize) -> Result<(Source, Transport), Reason> {
    let first = f.u8(l3)?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return Err(Reason::Malformed);
    }
    let header = f.get(l3, 20)?;
    // The options' last byte must be there too.
    f.get(l3 + ihl - 1, 1)?;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len < ihl {
        return Err(Reason::Malformed);
    }
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let offset = flags_offset & 0x1fff;
    let more = flags_offset & 0x2000 != 0;
    let source = Source::V4(Ipv4Addr::new(
        header[12], header[13], header[14], header[15],
    ));
    let transport = match header[9] {
        _ if offset != 0 => Transport::LaterFragment,
        TCP | UDP => Transport::Ports {
            at: l3 + ihl,
            end: l3 + total_len,
            first_fragment: more,
        },
        _ => Transport::None,
    };
    Ok((source, transport))
}

fn ipv6(f: &Bytes, l3: usize) -> Result<(Source, Transport), Reason> {
    if f.u8(l3)? >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let header = f.get(l3, 40)?;
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let source = Source::V6(Ipv6Addr::from(src));
    let mut next = header[6];
    let end = l3 + 40 + usize::from(u16::from_be_bytes([header[4], header[5]]));
    let mut at = l3 + 40;
    let mut first_fragment = false;
    let mut walked = 0;
    loop {
        let size = match next {
            TCP | UDP => {
                return Ok((
                    source,
                    Transport::Ports {
                        at,
                        end,
                        first_fragment,
                    },
                ));
            }
            _ if !is_extension(next) => return Ok((source, Transport::None)),
            _ if walked == MAX_EXT_HEADERS => return Err(Reason::Malformed),
            FRAGMENT => {
                let h = f.get(at, 8)?;
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                if offset != 0 {
                    return Ok((source, Transport::LaterFragment));
                }
                first_fragment = h[3] & 1 == 1;
                next = h[0];
                8
            }
            AH => {
                let h = f.get(at, 2)?;
                next = h[0];
                (usize::from(h[1]) + 2) * 4
            }
            _ => {
                let h = f.get(at, 2)?;
                next = h[0];
                (usize::from(h[1]) + 1) * 8
            }
        };
        walked += 1;
        at += size;
        if at > MAX_OFFSET {
            return Err(Reason::Malformed);
        }
    }
}

fn is_extension(next: u8) -> bool {
    next == FRAGMENT || next == AH || EIGHT_OCTET_EXT.contains(&next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{Ext, Ipv6, L4, Packet};

    fn enforce() -> Settings {
        Settings::new(true, false)
    }

    #[test]
    fn a_protected_port_from_outside_the_allowlist_is_dropped() {
        let allow: Ipv4Net = "203.0.113.0/24".parse().unwrap();
        let f = Packet::v4(Ipv4Addr::new(198, 51, 100, 1), L4::tcp(443)).to_bytes();
        assert_eq!(
            classify(&f, &[allow], &[], &[443], enforce()),
            Counter::DropNotAllowed
        );
        let f = Packet::v4(Ipv4Addr::new(203, 0, 113, 1), L4::tcp(443)).to_bytes();
        assert_eq!(
            classify(&f, &[allow], &[], &[443], enforce()),
            Counter::PassAllowed
        );
    }

    #[test]
    fn nine_extension_headers_are_malformed_eight_are_not() {
        let mut ip = Ipv6::new(Ipv6Addr::LOCALHOST, L4::tcp(443));
        ip.ext = vec![Ext::DestOpts { len: 0 }; 8];
        let eight = Packet::from(ip.clone()).to_bytes();
        ip.ext.push(Ext::DestOpts { len: 0 });
        let nine = Packet::from(ip).to_bytes();
        assert_eq!(
            classify(&eight, &[], &[], &[443], enforce()),
            Counter::DropNotAllowed
        );
        assert_eq!(
            classify(&nine, &[], &[], &[443], enforce()),
            Counter::DropMalformed
        );
    }
}
