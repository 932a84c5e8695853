//! `route[].allow`: the sources one route accepts, by preset name or CIDR, and the warning for
//! entries the kernel's allowlist would drop before the route ever sees them.

use std::fmt;

use ipnet::IpNet;

use super::{Checker, KeyPath, closest, filter::Mode};
use crate::{
    allowlist::{self, Allowlist, Entry, Source, presets},
    config::{ClientAddress, Config},
};

/// A route's `allow`, resolved: what was written, and the merged prefixes the receiver checks
/// the client address against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAllow {
    /// The entries as written (preset names and CIDRs), in order.
    pub written: Vec<String>,
    /// Every prefix they stand for, each with its source (the preset, or the config line), and
    /// the merged sets.
    pub list: Allowlist,
}

impl Checker<'_> {
    /// `allow`: `Some(None)` if absent; `None` after an error.
    pub(super) fn route_allow(
        &mut self,
        at: &KeyPath,
        raw: Option<Vec<String>>,
    ) -> Option<Option<RouteAllow>> {
        let Some(written) = raw else {
            return Some(None);
        };
        let key = at.key("allow");
        if written.is_empty() {
            self.error(
                &key,
                "an empty list would refuse every request on this route: name the sources it \
                 accepts, e.g. allow = [\"mpesa\", \"203.0.113.0/24\"], or remove `allow` to \
                 accept every source the filter lets through",
            );
            return None;
        }
        let before = self.errors.len();
        let mut entries = Vec::new();
        for (index, item) in written.iter().enumerate() {
            entries.extend(self.route_allow_item(&key.index(index), item));
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Some(RouteAllow {
            written,
            list: Allowlist::from_entries(entries),
        }))
    }

    /// One entry: a preset's prefixes, or one CIDR, read like `allow.presets` and `allow.cidrs`.
    fn route_allow_item(&mut self, key: &KeyPath, item: &str) -> Vec<Entry> {
        if let Some(preset) = presets::find(item) {
            return preset
                .entries
                .iter()
                .filter_map(|entry| match allowlist::parse_entry(entry.cidr) {
                    Ok(net) => Some(Entry {
                        net,
                        source: Source::Preset {
                            name: preset.name.to_owned(),
                            citation: entry.source.to_owned(),
                        },
                    }),
                    // The presets are tested to parse; this only guards against a bad edit.
                    Err(message) => {
                        self.error(key, format!("built-in preset is broken: {message}"));
                        None
                    }
                })
                .collect();
        }
        // Preset names are words and dashes: anything with a digit first, a dot, a colon or a
        // slash is meant as an address, and gets the address parser's message.
        let looks_like_address = item.trim_start().starts_with(|c: char| c.is_ascii_digit())
            || item.contains(['.', ':', '/']);
        if looks_like_address {
            return match allowlist::parse_entry(item) {
                Ok(net) => vec![Entry {
                    net,
                    source: Source::Config {
                        line: self.line(key).unwrap_or(0),
                    },
                }],
                Err(message) => {
                    self.error(key, message);
                    Vec::new()
                }
            };
        }
        let hint = closest(item, presets::names())
            .map(|n| format!(" (did you mean \"{n}\"?)"))
            .unwrap_or_default();
        let known = presets::names().collect::<Vec<_>>().join(", ");
        self.error(
            key,
            format!(
                "unknown preset \"{item}\"{hint}: an entry is a preset ({known}; see `hookwall \
                 presets`) or an address or CIDR prefix such as 203.0.113.0/24"
            ),
        );
        Vec::new()
    }
}

/// A route's `allow` entry that the kernel's allowlist does not cover, wholly or in part: the
/// filter drops those sources on the protected port before the route could accept them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAllowGap {
    /// The route's path.
    pub route: String,
    /// The prefix not (wholly) on the allowlist.
    pub net: IpNet,
    /// Where it came from: the preset or the config line.
    pub source: Source,
    /// Whether part of it is on the allowlist.
    pub partly: bool,
}

impl fmt::Display for RouteAllowGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.partly {
            "is only partly on"
        } else {
            "is not on"
        };
        write!(
            f,
            "route \"{}\" allows {} ({}), which {how} the allowlist: in enforce mode the filter \
             drops those sources on the protected port before the route sees them; add it to \
             [allow] (presets, cidrs or files) or remove it from the route's allow",
            self.route, self.net, self.source
        )
    }
}

impl Config {
    /// The `allow` entries of routes that the filter would drop before the route sees them: in
    /// enforce mode, when `server.listen`'s port is protected and the client is the socket peer
    /// (behind a trusted proxy the filter judges the proxy, not the client). In config order.
    #[must_use]
    pub fn route_allow_gaps(&self) -> Vec<RouteAllowGap> {
        let filtered = self.filter.mode == Mode::Enforce
            && self
                .filter
                .protected_ports
                .contains(&self.server.listen.port())
            && self.server.client_address == ClientAddress::Peer;
        if !filtered {
            return Vec::new();
        }
        let mut gaps = Vec::new();
        for route in &self.routes {
            let Some(allow) = &route.allow else { continue };
            for entry in &allow.list.entries {
                let (covered, overlaps) = self.allowlist.covers(entry.net);
                if !covered {
                    gaps.push(RouteAllowGap {
                        route: route.path.clone(),
                        net: entry.net,
                        source: entry.source.clone(),
                        partly: overlaps,
                    });
                }
            }
        }
        gaps
    }
}
