//! Built-in provider address lists (`allow.presets`), each entry with the source it was taken
//! from, so that an operator can check every address hookwall lets in by default.

/// A named, built-in list of provider source addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name used in `allow.presets`.
    pub name: &'static str,
    /// What the list is and when to use it.
    pub description: &'static str,
    /// The addresses, each with its source.
    pub entries: &'static [PresetEntry],
}

/// One address or prefix of a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresetEntry {
    /// The prefix in CIDR notation, host bits clear.
    pub cidr: &'static str,
    /// Where this address was published: the citation `hookwall check` and `hookwall presets`
    /// print.
    pub source: &'static str,
}

const DARAJA: &str = "Safaricom Daraja documentation, published callback IP whitelist";
const MPESAKIT: &str = "listed by the Python library mpesakit, not in Safaricom's published list";

/// Safaricom's published M-Pesa callback addresses.
#[rustfmt::skip]
const MPESA: &[PresetEntry] = &[
    PresetEntry { cidr: "196.201.214.200/32", source: DARAJA },
    PresetEntry { cidr: "196.201.214.206/32", source: DARAJA },
    PresetEntry { cidr: "196.201.214.207/32", source: DARAJA },
    PresetEntry { cidr: "196.201.214.208/32", source: DARAJA },
    PresetEntry { cidr: "196.201.213.114/32", source: DARAJA },
    PresetEntry { cidr: "196.201.213.44/32", source: DARAJA },
    PresetEntry { cidr: "196.201.212.127/32", source: DARAJA },
    PresetEntry { cidr: "196.201.212.138/32", source: DARAJA },
    PresetEntry { cidr: "196.201.212.129/32", source: DARAJA },
    PresetEntry { cidr: "196.201.212.136/32", source: DARAJA },
    PresetEntry { cidr: "196.201.212.74/32", source: DARAJA },
    PresetEntry { cidr: "196.201.212.69/32", source: DARAJA },
];

/// Addresses seen in a third-party client library but not in Safaricom's own list: kept apart so
/// that nobody widens their allowlist with them without choosing to.
#[rustfmt::skip]
const MPESA_EXTRA: &[PresetEntry] = &[
    PresetEntry { cidr: "196.201.212.128/32", source: MPESAKIT },
    PresetEntry { cidr: "196.201.212.132/32", source: MPESAKIT },
];

/// Every built-in preset, in the order `hookwall presets` prints them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "mpesa",
        description: "Safaricom M-Pesa (Daraja) callback addresses, as published by Safaricom \
                      (the default)",
        entries: MPESA,
    },
    Preset {
        name: "mpesa-extra",
        description: "opt-in: further M-Pesa callback addresses reported by a third-party \
                      library but not published by Safaricom; add it only if you see \
                      callbacks from them",
        entries: MPESA_EXTRA,
    },
];

/// The preset called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

/// The names of all presets, for error messages that list what exists.
pub fn names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|preset| preset.name)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::Ipv4Addr};

    use ipnet::{IpNet, Ipv4Net};

    use super::*;

    const PUBLISHED: [&str; 12] = [
        "196.201.214.200",
        "196.201.214.206",
        "196.201.214.207",
        "196.201.214.208",
        "196.201.213.114",
        "196.201.213.44",
        "196.201.212.127",
        "196.201.212.138",
        "196.201.212.129",
        "196.201.212.136",
        "196.201.212.74",
        "196.201.212.69",
    ];

    fn v4_hosts(preset: &Preset) -> Vec<Ipv4Addr> {
        preset
            .entries
            .iter()
            .map(|entry| {
                let net: Ipv4Net = entry.cidr.parse().unwrap();
                assert_eq!(net.prefix_len(), 32, "{} is not a /32", entry.cidr);
                net.addr()
            })
            .collect()
    }

    #[test]
    fn mpesa_is_exactly_safaricoms_published_list() {
        let mpesa = find("mpesa").unwrap();
        let got = v4_hosts(mpesa);
        let want: Vec<Ipv4Addr> = PUBLISHED.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(got, want);
        assert!(mpesa.entries.iter().all(|e| e.source == DARAJA));
    }

    #[test]
    fn mpesa_extra_is_the_two_mpesakit_addresses() {
        let extra = find("mpesa-extra").unwrap();
        let got: Vec<String> = v4_hosts(extra).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["196.201.212.128", "196.201.212.132"]);
        assert!(extra.entries.iter().all(|e| e.source.contains("mpesakit")));
        assert!(extra.description.starts_with("opt-in"));
    }

    #[test]
    fn no_duplicates_within_or_across_presets() {
        let mut seen = HashSet::new();
        for preset in PRESETS {
            for entry in preset.entries {
                assert!(seen.insert(entry.cidr), "{} listed twice", entry.cidr);
            }
        }
    }

    #[test]
    fn every_entry_passes_the_allowlist_parser_unchanged() {
        for preset in PRESETS {
            for entry in preset.entries {
                let net = crate::allowlist::parse_entry(entry.cidr).unwrap();
                assert!(matches!(net, IpNet::V4(_)));
                assert_eq!(net.to_string(), entry.cidr);
            }
        }
    }

    #[test]
    fn find_by_name() {
        assert_eq!(find("mpesa").map(|p| p.name), Some("mpesa"));
        assert_eq!(find("mpesa-extra").map(|p| p.name), Some("mpesa-extra"));
        assert!(find("MPESA").is_none());
        assert!(find("stripe").is_none());
        assert_eq!(names().collect::<Vec<_>>(), ["mpesa", "mpesa-extra"]);
    }
}
