//! The allowlist: every allowed source prefix with where it came from, and the merged per-family
//! prefix sets that are loaded into the kernel's LPM maps.
//!
//! Entries are normalised strictly: a CIDR with host bits set is refused rather than truncated,
//! because silently widening `203.0.113.5/24` to the whole /24 would let in 255 addresses nobody
//! asked for.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub mod presets;
pub mod sources;

/// Where an allowlist entry came from, so `hookwall check` can justify every prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A built-in provider list (see [`presets`]).
    Preset {
        /// The preset's name, e.g. `mpesa`.
        name: String,
        /// Where the preset's authors got this address from.
        citation: String,
    },
    /// `allow.cidrs` in the config file.
    Config {
        /// 1-based line of the entry in the config file.
        line: usize,
    },
    /// A line of a file listed in `allow.files`.
    File {
        /// The file, as resolved against the config file's directory; shared by all its
        /// entries (a file may hold 100,000 of them).
        path: Arc<Path>,
        /// 1-based line of the entry in that file.
        line: usize,
    },
    /// A list fetched from its publisher (`allow.sources`, or a preset refreshed under
    /// `allow.presets_refresh`).
    Fetched {
        /// The preset's name or the source's URL (without its query), shared by all its entries.
        from: Arc<str>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Preset { name, citation } => write!(f, "preset {name} ({citation})"),
            Source::Config { line } => write!(f, "config line {line}"),
            Source::File { path, line } => write!(f, "{}:{line}", path.display()),
            Source::Fetched { from } => write!(f, "fetched: {from}"),
        }
    }
}

/// One allowed prefix as written (after normalisation), with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The normalised prefix: host bits clear, IPv4-mapped IPv6 turned into IPv4.
    pub net: IpNet,
    /// Where it came from.
    pub source: Source,
}

/// The effective allowlist: the input entries for reporting, and the merged prefixes for the
/// kernel maps and for userspace checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Every input entry, normalised, in input order (duplicates kept: each has its own source).
    pub entries: Vec<Entry>,
    /// IPv4 prefixes after merging adjacent and contained ones, sorted by address.
    pub v4: Vec<Ipv4Net>,
    /// IPv6 prefixes after merging adjacent and contained ones, sorted by address.
    pub v6: Vec<Ipv6Net>,
}

impl Allowlist {
    /// Builds the merged prefix sets from `entries`.
    ///
    /// Entries are expected to come from [`parse_entry`]; an IPv4-mapped IPv6 prefix that slips
    /// through is still judged as IPv4, so that the kernel's IPv4 map sees it.
    pub fn from_entries(mut entries: Vec<Entry>) -> Self {
        for entry in &mut entries {
            if let Some(v4) = mapped_to_v4(entry.net) {
                entry.net = IpNet::V4(v4);
            }
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in &entries {
            match entry.net {
                IpNet::V4(net) => v4.push(net),
                IpNet::V6(net) => v6.push(net),
            }
        }
        let mut v4 = Ipv4Net::aggregate(&v4);
        let mut v6 = Ipv6Net::aggregate(&v6);
        // contains() relies on this order for its binary search.
        v4.sort_unstable();
        v6.sort_unstable();
        Self { entries, v4, v6 }
    }

    /// Whether `ip` is inside an allowed prefix. An IPv4-mapped IPv6 address (what a dual-stack
    /// socket reports for an IPv4 peer) is judged as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let in_v4 = |ip| contains_sorted(&self.v4, ip, Ipv4Net::network, |n, ip| n.contains(&ip));
        match ip {
            IpAddr::V4(ip) => in_v4(ip),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => in_v4(v4),
                None => contains_sorted(&self.v6, ip, Ipv6Net::network, |n, ip| n.contains(&ip)),
            },
        }
    }

    /// Whether no prefix at all is allowed (in enforce mode that would drop every packet).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// How much of `net` is allowed: `(all of it, any of it)`. `net` is expected normalised
    /// (as [`parse_entry`] makes it); an IPv6 prefix never covers IPv4 addresses.
    pub fn covers(&self, net: IpNet) -> (bool, bool) {
        match net {
            IpNet::V4(net) => covers_sorted(&self.v4, &net, Ipv4Net::network, Ipv4Net::broadcast),
            IpNet::V6(net) => covers_sorted(&self.v6, &net, Ipv6Net::network, Ipv6Net::broadcast),
        }
    }
}

/// [`Allowlist::covers`] over merged prefixes, which are disjoint, sorted and as few as can be:
/// a prefix wholly inside their union is inside one of them (prefixes that together make up
/// `net` exactly would have been merged into it).
fn covers_sorted<N, A: Ord + Copy>(
    nets: &[N],
    net: &N,
    network: impl Fn(&N) -> A,
    broadcast: impl Fn(&N) -> A,
) -> (bool, bool) {
    let (first, last) = (network(net), broadcast(net));
    let after = nets.partition_point(|n| network(n) <= first);
    let before = after.checked_sub(1).map(|i| &nets[i]);
    // Prefixes either nest or are disjoint: the one starting at or before `net` holds all of it
    // or ends before it.
    let all = before.is_some_and(|n| broadcast(n) >= last);
    let any = before.is_some_and(|n| broadcast(n) >= first)
        || nets.get(after).is_some_and(|n| network(n) <= last);
    (all, any)
}

/// Looks `ip` up in merged prefixes, which are disjoint and sorted: only the last prefix that
/// starts at or before `ip` can contain it.
fn contains_sorted<N, A: Ord + Copy>(
    nets: &[N],
    ip: A,
    network: impl Fn(&N) -> A,
    contains: impl Fn(&N, A) -> bool,
) -> bool {
    let after = nets.partition_point(|net| network(net) <= ip);
    after.checked_sub(1).is_some_and(|i| contains(&nets[i], ip))
}

/// The IPv4 prefix an IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/n`, n >= 96) stands for.
fn mapped_to_v4(net: IpNet) -> Option<Ipv4Net> {
    let IpNet::V6(net) = net else { return None };
    let v4 = net.addr().to_ipv4_mapped()?;
    let len = net.prefix_len().checked_sub(96)?;
    Ipv4Net::new(v4, len).ok()
}

/// Parses one allowlist entry: an address (made a /32 or /128) or a CIDR prefix.
///
/// Surrounding whitespace is ignored. IPv4-mapped IPv6 (`::ffff:a.b.c.d/n`, n >= 96) becomes the
/// IPv4 prefix `/(n-96)`. Refused, with a message that says how to write it instead: a prefix with
/// host bits set, a mapped prefix shorter than /96, a prefix length beyond the family's width.
pub fn parse_entry(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "empty entry: write an address (198.51.100.7) or a prefix (203.0.113.0/24)".into(),
        );
    }
    let (addr_text, len_text) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| not_an_address(text))?;
    let max_len = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match len_text {
        None => max_len,
        Some(len) => parse_prefix_len(text, len, max_len)?,
    };
    let net = IpNet::new(addr, len).map_err(|_| not_an_address(text))?;

    let net = match net {
        IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() => {
            if len < 96 {
                return Err(format!(
                    "{text} is an IPv4-mapped prefix shorter than /96, so it reaches beyond the \
                     IPv4-mapped range: write the IPv4 prefix (e.g. 203.0.113.0/24) or a plain \
                     IPv6 prefix instead"
                ));
            }
            IpNet::V4(mapped_to_v4(net).ok_or_else(|| not_an_address(text))?)
        }
        net => net,
    };
    if net.trunc() != net {
        return Err(host_bits_message(text, net));
    }
    Ok(net)
}

/// The prefix length after the '/', digits only (so "+8" or " 8" are not silently accepted).
fn parse_prefix_len(text: &str, len: &str, max_len: u8) -> Result<u8, String> {
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_an_address(text));
    }
    match len.parse::<u8>() {
        Ok(len) if len <= max_len => Ok(len),
        _ => Err(format!(
            "{text}: prefix length /{len} is longer than the address (at most /{max_len})"
        )),
    }
}

fn not_an_address(text: &str) -> String {
    format!(
        "`{text}` is not an IP address or CIDR prefix: write e.g. 198.51.100.7, 203.0.113.0/24 \
         or 2001:db8::/48"
    )
}

fn host_bits_message(text: &str, net: IpNet) -> String {
    let one = IpNet::from(net.addr());
    format!(
        "{text} has host bits set: write {} for the network or {one} for the one address",
        net.trunc()
    )
}

/// Why an allowlist file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadFileError {
    /// The file could not be read at all (missing, unreadable, not UTF-8).
    #[error("cannot read allowlist file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read, but some lines are not valid entries.
    #[error("allowlist file {} has {} bad line(s)", path.display(), lines.len())]
    BadLines {
        /// The file.
        path: PathBuf,
        /// Every bad line: 1-based line number and why.
        lines: Vec<(usize, String)>,
    },
}

/// Reads an allowlist file: one address or CIDR per line, `#` starts a comment (whole line or
/// trailing), blank lines are ignored. Every bad line is reported, not just the first.
pub fn read_file(path: &Path) -> Result<Vec<Entry>, ReadFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file_text(path, &text).map_err(|lines| ReadFileError::BadLines {
        path: path.to_path_buf(),
        lines,
    })
}

/// Parses the text of an allowlist file; `path` only names the entries' source.
pub fn parse_file_text(path: &Path, text: &str) -> Result<Vec<Entry>, Vec<(usize, String)>> {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    let shared: Arc<Path> = Arc::from(path);
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if content.is_empty() {
            continue;
        }
        match parse_entry(content) {
            Ok(net) => entries.push(Entry {
                net,
                source: Source::File {
                    path: shared.clone(),
                    line,
                },
            }),
            Err(message) => bad.push((line, message)),
        }
    }
    if bad.is_empty() {
        Ok(entries)
    } else {
        Err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        parse_entry(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn config_entry(text: &str) -> Entry {
        Entry {
            net: net(text),
            source: Source::Config { line: 1 },
        }
    }

    fn allowlist(texts: &[&str]) -> Allowlist {
        Allowlist::from_entries(texts.iter().map(|t| config_entry(t)).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn bare_addresses_become_host_prefixes() {
        assert_eq!(net("198.51.100.7").to_string(), "198.51.100.7/32");
        assert_eq!(net("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(net("  203.0.113.0/24 \t").to_string(), "203.0.113.0/24");
    }

    #[test]
    fn boundary_prefix_lengths_are_accepted() {
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("::/0").to_string(), "::/0");
        assert_eq!(net("203.0.113.9/32").to_string(), "203.0.113.9/32");
        assert_eq!(net("2001:db8::9/128").to_string(), "2001:db8::9/128");
    }

    #[test]
    fn host_bits_are_an_error_that_says_what_to_write() {
        let err = parse_entry("203.0.113.5/24").unwrap_err();
        assert_eq!(
            err,
            "203.0.113.5/24 has host bits set: write 203.0.113.0/24 for the network or \
             203.0.113.5/32 for the one address"
        );
        let err = parse_entry("2001:db8::1/64").unwrap_err();
        assert!(err.contains("write 2001:db8::/64 for the network"), "{err}");
        assert!(err.contains("2001:db8::1/128 for the one address"), "{err}");
    }

    #[test]
    fn ipv4_mapped_ipv6_becomes_ipv4() {
        assert_eq!(net("::ffff:203.0.113.7").to_string(), "203.0.113.7/32");
        assert_eq!(net("::ffff:203.0.113.0/120").to_string(), "203.0.113.0/24");
        assert_eq!(net("::ffff:0.0.0.0/96").to_string(), "0.0.0.0/0");
        assert_eq!(net("::ffff:cb00:7100/120").to_string(), "203.0.113.0/24");
    }

    #[test]
    fn mapped_with_host_bits_suggests_the_ipv4_forms() {
        let err = parse_entry("::ffff:203.0.113.5/120").unwrap_err();
        assert!(
            err.starts_with("::ffff:203.0.113.5/120 has host bits set"),
            "{err}"
        );
        assert!(
            err.contains("write 203.0.113.0/24 for the network"),
            "{err}"
        );
        assert!(err.contains("203.0.113.5/32 for the one address"), "{err}");
    }

    #[test]
    fn mapped_prefix_shorter_than_96_is_an_error() {
        let err = parse_entry("::ffff:0.0.0.0/80").unwrap_err();
        assert!(err.contains("shorter than /96"), "{err}");
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in [
            "",
            "   ",
            "example.com",
            "203.0.113.0/",
            "203.0.113.0/+8",
            "203.0.113.0/ 8",
            "203.0.113.0/24/8",
            "203.0.113.256",
            "fe80::1%eth0",
            "203.0.113.0-203.0.113.9",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad:?} was accepted");
        }
        let err = parse_entry("203.0.113.0/33").unwrap_err();
        assert!(err.contains("at most /32"), "{err}");
        let err = parse_entry("2001:db8::/129").unwrap_err();
        assert!(err.contains("at most /128"), "{err}");
        let err = parse_entry("example.com").unwrap_err();
        assert!(err.contains("`example.com` is not an IP address"), "{err}");
    }

    #[test]
    fn adjacent_prefixes_merge_and_contained_ones_disappear() {
        let list = allowlist(&[
            "203.0.113.0/25",
            "203.0.113.128/25",
            "198.51.100.0/24",
            "198.51.100.7",
            "2001:db8::/48",
            "2001:db8:0:1::/64",
        ]);
        let v4: Vec<String> = list.v4.iter().map(ToString::to_string).collect();
        let v6: Vec<String> = list.v6.iter().map(ToString::to_string).collect();
        assert_eq!(v4, ["198.51.100.0/24", "203.0.113.0/24"]);
        assert_eq!(v6, ["2001:db8::/48"]);
        // Every input stays listed with its source, even when merged away.
        assert_eq!(list.entries.len(), 6);
    }

    #[test]
    fn merged_prefixes_are_sorted() {
        let list = allowlist(&["203.0.113.1", "10.0.0.1", "192.0.2.1", "2001:db8::2", "::1"]);
        assert!(list.v4.windows(2).all(|w| w[0] < w[1]));
        assert!(list.v6.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn from_entries_turns_stray_mapped_entries_into_ipv4() {
        let entry = Entry {
            net: "::ffff:203.0.113.0/120".parse().unwrap(),
            source: Source::Config { line: 3 },
        };
        let list = Allowlist::from_entries(vec![entry]);
        assert_eq!(list.v4, ["203.0.113.0/24".parse::<Ipv4Net>().unwrap()]);
        assert!(list.v6.is_empty());
        assert_eq!(list.entries[0].net.to_string(), "203.0.113.0/24");
    }

    #[test]
    fn contains_checks_each_family() {
        let list = allowlist(&["203.0.113.0/24", "198.51.100.7", "2001:db8::/48"]);
        assert!(list.contains(ip("203.0.113.0")));
        assert!(list.contains(ip("203.0.113.255")));
        assert!(!list.contains(ip("203.0.114.0")));
        assert!(!list.contains(ip("203.0.112.255")));
        assert!(list.contains(ip("198.51.100.7")));
        assert!(!list.contains(ip("198.51.100.8")));
        assert!(!list.contains(ip("198.51.100.6")));
        assert!(list.contains(ip("2001:db8::1")));
        assert!(list.contains(ip("2001:db8:0:ffff::1")));
        assert!(!list.contains(ip("2001:db9::1")));
        assert!(!list.contains(ip("1.1.1.1")));
        assert!(!list.contains(ip("::1")));
    }

    #[test]
    fn contains_judges_mapped_addresses_as_ipv4() {
        let list = allowlist(&["203.0.113.0/24"]);
        assert!(list.contains(ip("::ffff:203.0.113.9")));
        assert!(!list.contains(ip("::ffff:198.51.100.9")));
        // An IPv6 prefix never admits an IPv4 peer through its mapped form.
        let list = allowlist(&["::/0"]);
        assert!(list.contains(ip("2001:db8::1")));
        assert!(!list.contains(ip("::ffff:203.0.113.9")));
        assert!(!list.contains(ip("203.0.113.9")));
    }

    #[test]
    fn contains_at_the_boundaries() {
        let everything = allowlist(&["0.0.0.0/0", "::/0"]);
        assert!(everything.contains(ip("0.0.0.0")));
        assert!(everything.contains(ip("255.255.255.255")));
        assert!(everything.contains(ip("::")));
        assert!(everything.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));

        let host = allowlist(&[
            "255.255.255.255/32",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ]);
        assert!(host.contains(ip("255.255.255.255")));
        assert!(!host.contains(ip("255.255.255.254")));
        assert!(host.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!host.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")));

        let low = allowlist(&["0.0.0.0/32", "::/128"]);
        assert!(low.contains(ip("0.0.0.0")));
        assert!(!low.contains(ip("0.0.0.1")));
        assert!(low.contains(ip("::")));
        assert!(!low.contains(ip("::2")));
    }

    #[test]
    fn covers_tells_all_part_and_none() {
        let list = allowlist(&[
            "203.0.113.0/25",
            "203.0.113.128/26",
            "198.51.100.7",
            "2001:db8::/48",
        ]);
        // Merged into 203.0.113.0/25 + .128/26: the /24 is only partly covered.
        assert_eq!(list.covers(net("203.0.113.0/24")), (false, true));
        assert_eq!(list.covers(net("203.0.113.0/25")), (true, true));
        assert_eq!(list.covers(net("203.0.113.64/26")), (true, true));
        assert_eq!(list.covers(net("203.0.113.192/26")), (false, false));
        assert_eq!(list.covers(net("198.51.100.7")), (true, true));
        assert_eq!(list.covers(net("198.51.100.0/24")), (false, true));
        assert_eq!(list.covers(net("192.0.2.0/24")), (false, false));
        assert_eq!(list.covers(net("0.0.0.0/0")), (false, true));
        assert_eq!(list.covers(net("2001:db8:0:5::/64")), (true, true));
        assert_eq!(list.covers(net("2001:db8::/32")), (false, true));
        assert_eq!(list.covers(net("2001:db9::/48")), (false, false));
        // Adjacent halves merge, so together they cover the whole.
        let halves = allowlist(&["192.0.2.0/25", "192.0.2.128/25"]);
        assert_eq!(halves.covers(net("192.0.2.0/24")), (true, true));
        assert_eq!(
            Allowlist::default().covers(net("192.0.2.1")),
            (false, false)
        );
    }

    #[test]
    fn empty_allowlist() {
        let list = Allowlist::from_entries(Vec::new());
        assert!(list.is_empty());
        assert!(!list.contains(ip("203.0.113.1")));
        assert!(!allowlist(&["::1"]).is_empty());
        assert!(!allowlist(&["127.0.0.1"]).is_empty());
    }

    #[test]
    fn file_text_with_comments_and_blank_lines() {
        let path = Path::new("/etc/hookwall/extra.txt");
        let text =
            "# partners\n\n203.0.113.0/24   # office\n  2001:db8::/48\n#198.51.100.1\n198.51.100.7";
        let entries = parse_file_text(path, text).unwrap();
        let got: Vec<(String, String)> = entries
            .iter()
            .map(|e| (e.net.to_string(), e.source.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("203.0.113.0/24".into(), "/etc/hookwall/extra.txt:3".into()),
                ("2001:db8::/48".into(), "/etc/hookwall/extra.txt:4".into()),
                ("198.51.100.7/32".into(), "/etc/hookwall/extra.txt:6".into()),
            ]
        );
    }

    #[test]
    fn file_text_reports_every_bad_line_with_its_number() {
        let text =
            "203.0.113.0/24\nnot-an-ip\n\n203.0.113.5/24 # oops\n198.51.100.7\r\n10.0.0.0/33\n";
        let bad = parse_file_text(Path::new("x.txt"), text).unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 4, 6]);
        assert!(bad[1].1.contains("host bits set"), "{}", bad[1].1);
    }

    #[test]
    fn empty_file_is_an_empty_list() {
        assert_eq!(parse_file_text(Path::new("x"), "").unwrap(), []);
        assert_eq!(
            parse_file_text(Path::new("x"), "# nothing yet\n\n").unwrap(),
            []
        );
    }

    #[test]
    fn read_file_reads_from_disk_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "203.0.113.0/24\n2001:db8::1\n").unwrap();
        let entries = read_file(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1].source,
            Source::File {
                path: Arc::from(path.as_path()),
                line: 2
            }
        );

        std::fs::write(&path, "bad\n").unwrap();
        match read_file(&path) {
            Err(ReadFileError::BadLines { lines, .. }) => assert_eq!(lines[0].0, 1),
            other => panic!("expected bad lines, got {other:?}"),
        }

        let missing = dir.path().join("missing.txt");
        match read_file(&missing) {
            Err(err @ ReadFileError::Io { .. }) => {
                assert!(err.to_string().contains("missing.txt"), "{err}");
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn source_display() {
        let preset = Source::Preset {
            name: "mpesa".into(),
            citation: "Safaricom Daraja documentation".into(),
        };
        assert_eq!(
            preset.to_string(),
            "preset mpesa (Safaricom Daraja documentation)"
        );
        assert_eq!(Source::Config { line: 12 }.to_string(), "config line 12");
        let file = Source::File {
            path: Arc::from(Path::new("/etc/x.txt")),
            line: 3,
        };
        assert_eq!(file.to_string(), "/etc/x.txt:3");
    }

    proptest::proptest! {
        /// The merged sets admit exactly the addresses that some input entry admits.
        #[test]
        fn merging_preserves_membership(
            nets in proptest::collection::vec((proptest::prelude::any::<u32>(), 16u8..=32), 0..12),
            probe in proptest::prelude::any::<u32>(),
        ) {
            let entries: Vec<Entry> = nets
                .iter()
                .map(|&(addr, len)| Entry {
                    net: IpNet::V4(Ipv4Net::new(addr.into(), len).unwrap().trunc()),
                    source: Source::Config { line: 1 },
                })
                .collect();
            let probe = IpAddr::V4(probe.into());
            let expected = entries.iter().any(|e| e.net.contains(&probe));
            let list = Allowlist::from_entries(entries.clone());
            proptest::prop_assert_eq!(list.contains(probe), expected);
            // And each input's own network address is always admitted.
            for entry in &entries {
                proptest::prop_assert!(list.contains(entry.net.network()));
            }
        }
    }
}
