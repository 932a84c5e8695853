//! `[metrics]`: the Prometheus listener.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::{Checker, KeyPath, Table, serde_names};

/// `metrics.listen` default: loopback only, so metrics never face the internet by default.
const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9184);

/// `[metrics]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Default: `127.0.0.1:9184`. Never the public listener.
    pub listen: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawMetrics {
    listen: Option<String>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[Table {
    path: "metrics",
    array: false,
    keys: serde_names::<RawMetrics>,
    secret_refs: &[],
    secret_ref_lists: &[],
}];

impl Checker<'_> {
    pub(super) fn metrics(
        &mut self,
        raw: RawMetrics,
        server: Option<SocketAddr>,
    ) -> Option<MetricsConfig> {
        let key = KeyPath::of("metrics.listen");
        let listen = self.socket_addr(&key, raw.listen, DEFAULT_METRICS_LISTEN)?;
        if let Some(server) = server.filter(|&server| listeners_overlap(listen, server)) {
            self.error(
                &key,
                format!(
                    "{listen} would put metrics on the public listener (server.listen = {server}): \
                     metrics must never be served there; use another port, e.g. \
                     \"{DEFAULT_METRICS_LISTEN}\""
                ),
            );
            return None;
        }
        Some(MetricsConfig { listen })
    }
}

/// Whether binding both addresses would serve on the same socket address: same port, and the
/// same IP or one of them the wildcard (which on Linux also covers the other family for `[::]`).
fn listeners_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip().is_unspecified()
            || b.ip().is_unspecified()
            || a.ip().to_canonical() == b.ip().to_canonical())
}
