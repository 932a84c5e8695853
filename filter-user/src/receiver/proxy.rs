//! The PROXY protocol (v1 text, v2 binary) in front of TLS, for
//! `server.client_address = { proxy_protocol = true, trusted_proxies = [...] }`: an L4 balancer
//! (HAProxy, a cloud NLB) opens each connection with a header naming the client it accepted.
//!
//! A trusted balancer must send one, complete and well formed, before the TLS handshake; any
//! other peer is its own client and is refused if it sends one (it would be naming a client of
//! its choosing). Parsing is the `ppp` crate's; the read is bounded by the handshake deadline
//! the caller sets and by [`MAX_HEADER`].

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};

use ipnet::IpNet;
use ppp::{PartialResult as _, v1, v2};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::client::{ProxiedClient, is_trusted};

/// The first bytes of a v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The first bytes of a v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest header read: a v1 header is at most 107 bytes; a v2 header is 16 bytes plus its
/// addresses and TLVs, which balancers keep to a few hundred bytes.
const MAX_HEADER: usize = 4096;
/// The first byte of every TLS record (a handshake record): what a connection without a PROXY
/// header starts with.
const TLS_HANDSHAKE: u8 = 0x16;

/// Why a connection was closed before TLS; the `reason` label of
/// `hookwall_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// A peer not in `trusted_proxies` sent a PROXY header.
    #[error("a PROXY protocol header from a peer that is not a trusted proxy")]
    Untrusted,
    /// A trusted balancer sent TLS (or nothing, or closed) instead of a PROXY header.
    #[error("no PROXY protocol header from a trusted proxy")]
    Missing,
    /// A trusted balancer's PROXY header could not be parsed or was too long.
    #[error("a malformed PROXY protocol header from a trusted proxy")]
    Malformed,
}

impl Refused {
    /// The stable label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Untrusted => "proxy_header_untrusted",
            Self::Missing => "proxy_header_missing",
            Self::Malformed => "proxy_header_malformed",
        }
    }
}

/// Whether `bytes` (the first bytes of a connection) begin a PROXY header, as far as they go.
fn starts_like_a_header(bytes: &[u8]) -> bool {
    let begins = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        n > 0 && bytes[..n] == signature[..n]
    };
    begins(V1_SIGNATURE) || begins(V2_SIGNATURE)
}

/// Whether `peer` is one of the balancers whose PROXY header is believed.
pub(crate) fn is_trusted_peer(trusted: &[IpNet], peer: SocketAddr) -> bool {
    is_trusted(trusted, peer.ip().to_canonical())
}

/// Reads the PROXY header, if any, that `peer` sends first. `Ok(None)` for a peer not in
/// `trusted` that sends none: it is its own client. The returned stream replays whatever was
/// read past the header (the start of the TLS handshake).
///
/// # Errors
/// [`Refused`]; the caller closes the connection.
pub(crate) async fn read_header(
    mut tcp: TcpStream,
    peer: SocketAddr,
    trusted: &[IpNet],
) -> Result<(Rewind<TcpStream>, Option<ProxiedClient>), Refused> {
    if !is_trusted_peer(trusted, peer) {
        let mut first = [0_u8; V2_SIGNATURE.len()];
        // Peeked, not read: the bytes stay for the TLS handshake.
        let n = tcp.peek(&mut first).await.map_err(|_| Refused::Missing)?;
        if starts_like_a_header(&first[..n]) {
            return Err(Refused::Untrusted);
        }
        return Ok((Rewind::new(Vec::new(), tcp), None));
    }
    let mut buf = Vec::with_capacity(256);
    loop {
        let mut chunk = [0_u8; 512];
        let n = tcp.read(&mut chunk).await.map_err(|_| Refused::Missing)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Refused::Missing
            } else {
                Refused::Malformed
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if !starts_like_a_header(&buf) {
            return Err(if buf[0] == TLS_HANDSHAKE {
                Refused::Missing
            } else {
                Refused::Malformed
            });
        }
        if let Some((len, client)) = parse(&buf)? {
            let rest = buf.split_off(len);
            return Ok((Rewind::new(rest, tcp), Some(client)));
        }
        if buf.len() >= MAX_HEADER {
            return Err(Refused::Malformed);
        }
    }
}

/// The header at the start of `buf`: its length and what it says about the client, or `None`
/// if more bytes are needed.
fn parse(buf: &[u8]) -> Result<Option<(usize, ProxiedClient)>, Refused> {
    if buf.starts_with(&V2_SIGNATURE[..buf.len().min(V2_SIGNATURE.len())]) {
        let header = v2::Header::try_from(buf);
        if header.is_incomplete() {
            return Ok(None);
        }
        let header = header.map_err(|_| Refused::Malformed)?;
        let source = match (header.command, header.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
            }
            // LOCAL (the balancer's own health check), an unspecified family, a UNIX socket.
            _ => None,
        };
        return Ok(Some((
            header.len(),
            source.map_or(ProxiedClient::Local, ProxiedClient::Source),
        )));
    }
    let header = v1::Header::try_from(buf);
    if header.is_incomplete() {
        return Ok(None);
    }
    let header = header.map_err(|_| Refused::Malformed)?;
    let source = match header.addresses {
        v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        v1::Addresses::Unknown => None,
    };
    Ok(Some((
        header.header.len(),
        source.map_or(ProxiedClient::Local, ProxiedClient::Source),
    )))
}

/// A stream with bytes already read from it put back in front.
pub(crate) struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2_and_says_how_long_they_are() {
        let v1 = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 443\r\n\x16\x03\x01";
        let (len, client) = parse(v1).unwrap().unwrap();
        assert_eq!(&v1[len..], b"\x16\x03\x01");
        assert_eq!(
            client,
            ProxiedClient::Source("198.51.100.7:40000".parse().unwrap())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Some((15, ProxiedClient::Local))
        );
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 198, 51, 100, 7, 192, 0, 2, 1, 0x9c, 0x40, 1, 0xbb,
        ]);
        let full = v2.len();
        v2.push(TLS_HANDSHAKE);
        assert_eq!(
            parse(&v2).unwrap(),
            Some((
                full,
                ProxiedClient::Source("198.51.100.7:40000".parse().unwrap())
            ))
        );
        // LOCAL: the balancer's own connection.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap(), Some((16, ProxiedClient::Local)));
    }

    #[test]
    fn partial_headers_wait_and_bad_ones_are_refused() {
        assert_eq!(parse(b"PROXY TCP4 198.51").unwrap(), None);
        assert_eq!(parse(&V2_SIGNATURE[..5]).unwrap(), None);
        assert_eq!(
            parse(b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n"),
            Err(Refused::Malformed)
        );
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x99, 0x11, 0, 0]);
        assert_eq!(parse(&v2), Err(Refused::Malformed));
    }

    #[test]
    fn recognises_the_start_of_a_header() {
        assert!(starts_like_a_header(b"P"));
        assert!(starts_like_a_header(b"PROXY TCP4"));
        assert!(starts_like_a_header(b"\r\n\r\n"));
        assert!(!starts_like_a_header(&[TLS_HANDSHAKE, 3, 1]));
        assert!(!starts_like_a_header(b""));
        assert!(!starts_like_a_header(b"GET / HTTP/1.1"));
    }
}
