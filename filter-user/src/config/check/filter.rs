//! `[filter]`: where and how the XDP program runs.

use std::{fmt, net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{Checker, KeyPath, Table, serde_names};

/// `filter.pin_path` default.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/hookwall";
/// Linux interface names are at most IFNAMSIZ - 1 bytes.
const MAX_INTERFACE_NAME: usize = 15;

/// What the filter does with a packet from a source that is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop it.
    Enforce,
    /// Count it as "would drop" and pass it: for trying an allowlist out before enforcing it.
    Monitor,
}

impl Mode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic where the driver has no XDP support.
    Auto,
    /// Native mode only: fail rather than run slower.
    Native,
    /// Generic (SKB) mode: works on every interface, after the kernel has allocated the skb.
    Generic,
}

impl AttachMode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[filter]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// Interfaces to attach to; never empty. Default (key unset or `[]`): the interface of the
    /// default route, from /proc/net/route, else /proc/net/ipv6_route.
    pub interfaces: Vec<String>,
    /// Whether `interfaces` came from the default route rather than the file.
    pub interfaces_from_default_route: bool,
    /// Default: [`Mode::Enforce`].
    pub mode: Mode,
    /// Default: [`AttachMode::Auto`].
    pub attach: AttachMode,
    /// Destination ports (TCP and UDP) the filter judges; sorted, without duplicates, never empty.
    /// Default: the port of `server.listen`.
    pub protected_ports: Vec<u16>,
    /// Absolute bpffs directory for the pinned program and maps. Default: `/sys/fs/bpf/hookwall`.
    pub pin_path: PathBuf,
    /// Drop non-first IP fragments to protected ports from sources not allowed (their ports cannot
    /// be read, so by default they pass). Default: false.
    pub strict_fragments: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawFilter {
    interfaces: Option<Vec<String>>,
    pub(super) mode: Option<String>,
    attach: Option<String>,
    protected_ports: Option<Vec<i64>>,
    pin_path: Option<PathBuf>,
    strict_fragments: Option<bool>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[Table {
    path: "filter",
    array: false,
    keys: serde_names::<RawFilter>,
    secret_refs: &[],
    secret_ref_lists: &[],
}];

impl Checker<'_> {
    pub(super) fn filter(
        &mut self,
        raw: RawFilter,
        mode: Option<Mode>,
        listen: Option<SocketAddr>,
    ) -> Option<FilterConfig> {
        let interfaces = self.interfaces(raw.interfaces);
        let attach = self.choice(&KeyPath::of("filter.attach"), raw.attach, AttachMode::Auto);
        let protected_ports = self.protected_ports(raw.protected_ports, listen);
        let pin_path = self.pin_path(raw.pin_path);
        let (interfaces, interfaces_from_default_route) = interfaces?;
        Some(FilterConfig {
            interfaces,
            interfaces_from_default_route,
            mode: mode?,
            attach: attach?,
            protected_ports: protected_ports?,
            pin_path: pin_path?,
            strict_fragments: raw.strict_fragments.unwrap_or(false),
        })
    }

    /// `filter.pin_path` alone, for `hookwall status` and `hookwall detach`
    /// (`config::partial`): the rest of `[filter]` asks the host about interfaces, or depends on
    /// `[server]`.
    pub(in crate::config) fn filter_pin_path(&mut self, raw: RawFilter) -> Option<PathBuf> {
        self.pin_path(raw.pin_path)
    }

    fn interfaces(&mut self, raw: Option<Vec<String>>) -> Option<(Vec<String>, bool)> {
        let key = KeyPath::of("filter.interfaces");
        let names = raw.unwrap_or_default();
        let present = self.host.interfaces();
        if names.is_empty() {
            return match self.host.default_route_interface() {
                Some(name) => Some((vec![name], true)),
                None => {
                    let message = format!(
                        "no interfaces listed and this host has no default route (read \
                         /proc/net/route and /proc/net/ipv6_route) to take one from: list the \
                         interfaces to guard, e.g. interfaces = [\"eth0\"] ({})",
                        describe_interfaces(&present)
                    );
                    self.error(&key, message);
                    None
                }
            };
        }
        let before = self.errors.len();
        for (index, name) in names.iter().enumerate() {
            let at = key.index(index);
            if names[..index].contains(name) {
                self.error(
                    &at,
                    format!("interface `{name}` is listed twice: remove one"),
                );
            } else if name.is_empty()
                || name.len() > MAX_INTERFACE_NAME
                || name.contains(['/', ':'])
                || name.contains(char::is_whitespace)
            {
                self.error(
                    &at,
                    format!(
                        "`{name}` is not a valid interface name (1 to {MAX_INTERFACE_NAME} \
                         characters, no '/', ':' or spaces): see `ip link` for the names"
                    ),
                );
            } else if !present.contains(name) {
                self.error(
                    &at,
                    format!(
                        "there is no interface `{name}` on this host ({}): fix the name, or leave \
                         interfaces unset to use the default route's",
                        describe_interfaces(&present)
                    ),
                );
            }
        }
        (self.errors.len() == before).then_some((names, false))
    }

    fn protected_ports(
        &mut self,
        raw: Option<Vec<i64>>,
        listen: Option<SocketAddr>,
    ) -> Option<Vec<u16>> {
        let key = KeyPath::of("filter.protected_ports");
        let Some(raw) = raw else {
            let listen = listen?;
            if listen.port() == 0 {
                self.error(
                    &key,
                    "protected_ports defaults to the port of server.listen, which is 0 (picked by \
                     the OS at start, so unknown now): set protected_ports, or give server.listen \
                     a fixed port",
                );
                return None;
            }
            return Some(vec![listen.port()]);
        };
        if raw.is_empty() {
            self.error(
                &key,
                "an empty list protects nothing: remove the key to protect server.listen's port, \
                 or list the ports, e.g. protected_ports = [443]",
            );
            return None;
        }
        let mut ports = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (index, &port) in raw.iter().enumerate() {
            match u16::try_from(port) {
                Ok(port) if port != 0 => ports.push(port),
                _ => {
                    ok = false;
                    self.error(
                        &key.index(index),
                        format!("{port} is not a port: ports are 1 to 65535"),
                    );
                }
            }
        }
        ports.sort_unstable();
        ports.dedup();
        ok.then_some(ports)
    }

    fn pin_path(&mut self, raw: Option<PathBuf>) -> Option<PathBuf> {
        let path = raw.unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_PATH));
        if path.is_absolute() {
            return Some(path);
        }
        self.error(
            &KeyPath::of("filter.pin_path"),
            format!(
                "pin_path `{}` is relative: pins live on the bpf filesystem and outlive the \
                 daemon, so they need an absolute path, e.g. \"{DEFAULT_PIN_PATH}\"",
                path.display()
            ),
        );
        None
    }
}

fn describe_interfaces(present: &[String]) -> String {
    if present.is_empty() {
        "no network interfaces found in this network namespace".to_owned()
    } else {
        format!("this host has: {}", present.join(", "))
    }
}
