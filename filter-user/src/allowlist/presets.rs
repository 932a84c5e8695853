//! Built-in provider address lists (`allow.presets`), each entry with the source it was taken
//! from, so that an operator can check every address hookwall lets in by default.

/// A named, built-in list of provider source addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name used in `allow.presets`.
    pub name: &'static str,
    /// What the list is and when to use it.
    pub description: &'static str,
    /// The addresses, each with its source: the snapshot shipped in the binary.
    pub entries: &'static [PresetEntry],
    /// The day the snapshot was taken from its source (`YYYY-MM-DD`).
    pub snapshot: &'static str,
    /// Where the publisher keeps the list up to date, if it publishes one a program can read:
    /// what `allow.presets_refresh = true` fetches instead of the snapshot.
    pub published: Option<Published>,
}

/// A provider's machine-readable list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The document's URL.
    pub url: &'static str,
    /// How to read it.
    pub format: Format,
}

/// The formats of published address lists hookwall reads (`allow.sources[].format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// GitHub's meta API (`https://api.github.com/meta`): a JSON object whose `hooks` member is
    /// the list of webhook source prefixes.
    GithubMeta,
    /// Stripe's `ips_webhooks.json`: a JSON object whose members are lists of addresses (Stripe
    /// publishes one, `WEBHOOKS`).
    StripeJson,
    /// Text: one address or prefix per line, `#` comments, as `allow.files` reads.
    Lines,
}

impl Format {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::GithubMeta => "github-meta",
            Format::StripeJson => "stripe-json",
            Format::Lines => "lines",
        }
    }
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
const GITHUB_META: &str = "GitHub meta API, `hooks` (docs.github.com, About GitHub's IP addresses)";
const GITHUB_2026: &str = "GitHub meta API, `hooks`; added 2026-10-29 (GitHub changelog, Webhook IP ranges added to the \
     Meta API)";
const STRIPE: &str =
    "Stripe docs, Domains and IP addresses, webhook notifications (docs.stripe.com/ips)";

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

/// GitHub's webhook delivery ranges: the `hooks` member of its meta API.
#[rustfmt::skip]
const GITHUB_HOOKS: &[PresetEntry] = &[
    PresetEntry { cidr: "192.30.252.0/22", source: GITHUB_META },
    PresetEntry { cidr: "185.199.108.0/22", source: GITHUB_META },
    PresetEntry { cidr: "140.82.112.0/20", source: GITHUB_META },
    PresetEntry { cidr: "143.55.64.0/20", source: GITHUB_META },
    PresetEntry { cidr: "9.234.98.160/28", source: GITHUB_2026 },
    PresetEntry { cidr: "9.234.98.176/28", source: GITHUB_2026 },
    PresetEntry { cidr: "9.234.106.48/28", source: GITHUB_2026 },
    PresetEntry { cidr: "2a0a:a440::/29", source: GITHUB_META },
    PresetEntry { cidr: "2606:50c0::/32", source: GITHUB_META },
];

/// Stripe's webhook source addresses.
#[rustfmt::skip]
const STRIPE_WEBHOOKS: &[PresetEntry] = &[
    PresetEntry { cidr: "3.18.12.63/32", source: STRIPE },
    PresetEntry { cidr: "3.69.109.8/32", source: STRIPE },
    PresetEntry { cidr: "3.120.168.93/32", source: STRIPE },
    PresetEntry { cidr: "3.130.192.231/32", source: STRIPE },
    PresetEntry { cidr: "13.235.14.237/32", source: STRIPE },
    PresetEntry { cidr: "13.235.122.149/32", source: STRIPE },
    PresetEntry { cidr: "18.211.135.69/32", source: STRIPE },
    PresetEntry { cidr: "35.154.171.200/32", source: STRIPE },
    PresetEntry { cidr: "35.157.207.129/32", source: STRIPE },
    PresetEntry { cidr: "52.15.183.38/32", source: STRIPE },
    PresetEntry { cidr: "54.88.130.119/32", source: STRIPE },
    PresetEntry { cidr: "54.88.130.237/32", source: STRIPE },
    PresetEntry { cidr: "54.187.174.169/32", source: STRIPE },
    PresetEntry { cidr: "54.187.205.235/32", source: STRIPE },
    PresetEntry { cidr: "54.187.216.72/32", source: STRIPE },
];

/// Every built-in preset, in the order `hookwall presets` prints them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "mpesa",
        description: "Safaricom M-Pesa (Daraja) callback addresses, as published by Safaricom \
                      (the default)",
        entries: MPESA,
        snapshot: "2026-12-05",
        published: None,
    },
    Preset {
        name: "mpesa-extra",
        description: "opt-in: further M-Pesa callback addresses reported by a third-party \
                      library but not published by Safaricom; add it only if you see \
                      callbacks from them",
        entries: MPESA_EXTRA,
        snapshot: "2026-12-05",
        published: None,
    },
    Preset {
        name: "github-hooks",
        description: "GitHub webhook deliveries (github.com, every plan), the `hooks` ranges of \
                      GitHub's meta API, IPv4 and IPv6",
        entries: GITHUB_HOOKS,
        snapshot: "2026-10-29",
        published: Some(Published {
            url: "https://api.github.com/meta",
            format: Format::GithubMeta,
        }),
    },
    Preset {
        name: "stripe-webhooks",
        description: "Stripe webhook notifications, the addresses Stripe publishes for them",
        entries: STRIPE_WEBHOOKS,
        snapshot: "2026-05-15",
        published: Some(Published {
            url: "https://stripe.com/files/ips/ips_webhooks.json",
            format: Format::StripeJson,
        }),
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
                assert_eq!(net.to_string(), entry.cidr);
            }
        }
    }

    #[test]
    fn every_snapshot_passes_the_checks_a_fetched_list_must_pass() {
        for preset in PRESETS {
            let nets: Vec<IpNet> = preset
                .entries
                .iter()
                .map(|e| crate::allowlist::parse_entry(e.cidr).unwrap())
                .collect();
            crate::allowlist::sources::check_breadth(&nets)
                .unwrap_or_else(|e| panic!("{}: {e}", preset.name));
            assert_eq!(preset.snapshot.len(), 10, "{}", preset.name);
        }
    }

    #[test]
    fn github_hooks_holds_both_families_and_the_2026_ranges() {
        let github = find("github-hooks").unwrap();
        let cidrs: Vec<&str> = github.entries.iter().map(|e| e.cidr).collect();
        for want in [
            "192.30.252.0/22",
            "140.82.112.0/20",
            "9.234.98.160/28",
            "9.234.106.48/28",
            "2a0a:a440::/29",
            "2606:50c0::/32",
        ] {
            assert!(cidrs.contains(&want), "{want} missing from {cidrs:?}");
        }
        let published = github.published.unwrap();
        assert_eq!(published.url, "https://api.github.com/meta");
        assert_eq!(published.format, Format::GithubMeta);
        let stripe = find("stripe-webhooks").unwrap();
        assert_eq!(stripe.entries.len(), 15);
        assert_eq!(stripe.published.unwrap().format, Format::StripeJson);
        assert!(find("mpesa").unwrap().published.is_none());
    }

    #[test]
    fn find_by_name() {
        assert_eq!(find("mpesa").map(|p| p.name), Some("mpesa"));
        assert_eq!(find("mpesa-extra").map(|p| p.name), Some("mpesa-extra"));
        assert!(find("MPESA").is_none());
        assert!(find("stripe").is_none());
        assert_eq!(
            names().collect::<Vec<_>>(),
            ["mpesa", "mpesa-extra", "github-hooks", "stripe-webhooks"]
        );
    }
}
