//! Who is calling: the client address a request is judged by (a route's sources, the rate
//! limit, the audit line's `client`), from the one source `server.client_address` names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::{ClientAddress, ForwardedHeader};

/// The client address of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    /// The source named the client.
    Known(IpAddr),
    /// A trusted proxy named no usable client: its header was missing or held an entry that is
    /// not an address, or its PROXY header said `UNKNOWN` / `LOCAL`. A route that checks the
    /// source refuses the request (reason [`Unknown::reason`]); the rate limit and the audit
    /// line count it under the proxy's own address, which is never judged as the client.
    Unknown {
        /// The socket peer (the proxy).
        proxy: IpAddr,
        why: Unknown,
    },
}

/// Why a trusted proxy's request has no client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// The configured header is absent.
    Missing,
    /// An entry of the header, from the right up to the client, is not an address
    /// (`unknown`, an obfuscated name, garbage).
    Malformed,
    /// The connection's PROXY header carried no source address (`UNKNOWN`, `LOCAL`).
    ProxyLocal,
}

impl Unknown {
    /// The audit line's `reason` when a route that checks the source refuses the request.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Missing => "client_address_missing",
            Self::Malformed => "client_address_malformed",
            Self::ProxyLocal => "client_address_unknown",
        }
    }
}

impl Client {
    /// The address the rate limit and the audit line count the request under.
    pub(crate) fn addr(self) -> IpAddr {
        match self {
            Self::Known(ip) | Self::Unknown { proxy: ip, .. } => ip,
        }
    }
}

/// What the connection layer learned about a connection's client before any request: set as a
/// request extension on connections that a trusted balancer opened with a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxiedClient {
    /// The PROXY header's source address.
    Source(SocketAddr),
    /// `UNKNOWN` (v1) or `LOCAL` / an unspecified family (v2): the balancer's own connection.
    Local,
}

/// Whether `ip` is in `trusted`.
pub(crate) fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client of a request from the socket `peer` under `source`.
///
/// - `"peer"`: the peer.
/// - a header: a peer that is not a trusted proxy is the client (its header is never read);
///   from a trusted proxy, the configured header's entries (every line, in order) are walked
///   from the right, skipping trusted proxies; the first untrusted entry is the client, and if
///   every entry is trusted the left-most is. The other forwarding header is never read. A
///   missing header or an entry that is not an address ends in [`Client::Unknown`], never in
///   the proxy's own address.
/// - PROXY protocol: `proxied`, which the connection layer set from the balancer's header;
///   a connection without it came from an untrusted peer, which is the client.
///
/// IPv4-mapped IPv6 addresses are judged as IPv4.
pub(crate) fn client_addr(
    source: &ClientAddress,
    peer: IpAddr,
    headers: &HeaderMap,
    proxied: Option<ProxiedClient>,
) -> Client {
    let peer = peer.to_canonical();
    match source {
        ClientAddress::Peer => Client::Known(peer),
        ClientAddress::ProxyProtocol { .. } => match proxied {
            None => Client::Known(peer),
            Some(ProxiedClient::Source(addr)) => Client::Known(addr.ip().to_canonical()),
            Some(ProxiedClient::Local) => Client::Unknown {
                proxy: peer,
                why: Unknown::ProxyLocal,
            },
        },
        ClientAddress::Header {
            header,
            trusted_proxies,
        } => {
            if !is_trusted(trusted_proxies, peer) {
                return Client::Known(peer);
            }
            let unknown = |why| Client::Unknown { proxy: peer, why };
            let Some(values) = headers
                .get_all(header.name())
                .iter()
                .map(|v| v.to_str().ok())
                .collect::<Option<Vec<&str>>>()
            else {
                return unknown(Unknown::Malformed);
            };
            if values.is_empty() {
                return unknown(Unknown::Missing);
            }
            let entries = values
                .iter()
                .flat_map(|v| v.split(','))
                .map(|entry| match header {
                    ForwardedHeader::XForwardedFor => xff_entry(entry),
                    ForwardedHeader::Forwarded => forwarded_for(entry),
                });
            let mut client = None;
            for entry in entries.rev() {
                let Some(ip) = entry else {
                    return unknown(Unknown::Malformed);
                };
                let ip = ip.to_canonical();
                client = Some(ip);
                if !is_trusted(trusted_proxies, ip) {
                    break;
                }
            }
            client.map_or(unknown(Unknown::Missing), Client::Known)
        }
    }
}

/// One `X-Forwarded-For` entry: a bare address (IPv6 without brackets, as nginx and most
/// balancers write it); anything else is `None`.
fn xff_entry(entry: &str) -> Option<IpAddr> {
    entry.trim().parse().ok()
}

/// The `for=` address of one element of a `Forwarded` header (RFC 7239); `None` for an element
/// whose `for` is missing, `unknown`, obfuscated or unparsable. Forms: `for=192.0.2.60`,
/// `for="192.0.2.60:4711"`, `for="[2001:db8::17]"`, `for="[2001:db8::17]:4711"`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let node = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })?;
    if let Some(rest) = node.strip_prefix('[') {
        let (v6, _port) = rest.split_once(']')?;
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    // IPv4 with or without a port (a bare IPv6 is not valid here: it must be bracketed).
    let host = node.split_once(':').map_or(node, |(host, _port)| host);
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests;
