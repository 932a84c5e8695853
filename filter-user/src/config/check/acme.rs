//! `[server.acme]`: the HTTPS certificate ordered from an ACME CA (RFC 8555) with HTTP-01, for
//! `server.tls = "acme"`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use super::{Checker, KeyPath, Table, serde_names};
use crate::config::{FilterConfig, MetricsConfig, ServerConfig, Tls};

/// `server.acme.directory` default: Let's Encrypt's production directory.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// `server.acme.cache` default.
pub const DEFAULT_ACME_CACHE: &str = "/var/lib/hookwall/acme";
/// `server.acme.http_listen` default: HTTP-01 validators connect to port 80, always.
pub const DEFAULT_ACME_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
/// A DNS name is at most 253 characters (RFC 1035, without the trailing dot).
const MAX_DOMAIN: usize = 253;

/// `[server.acme]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// `domains`: the names on the certificate, lower case, never empty, no wildcard.
    pub domains: Vec<String>,
    /// `contact`: a `mailto:` URI the CA may write to about the account; `None`: no contact.
    pub contact: Option<String>,
    /// `directory`: the CA's directory URL. Default: [`DEFAULT_ACME_DIRECTORY`].
    pub directory: String,
    /// `directory_ca`: a PEM file with the root the directory's own HTTPS certificate is
    /// verified against, instead of the system's roots (for a test CA); `None`: the system's.
    pub directory_ca: Option<PathBuf>,
    /// `cache`: the directory for the account key and the certificate. Default:
    /// [`DEFAULT_ACME_CACHE`].
    pub cache: PathBuf,
    /// `http_listen`: the plain-HTTP address the HTTP-01 challenges are answered on. Default:
    /// [`DEFAULT_ACME_HTTP_LISTEN`].
    pub http_listen: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawAcme {
    domains: Option<Vec<String>>,
    contact: Option<String>,
    directory: Option<String>,
    directory_ca: Option<PathBuf>,
    cache: Option<PathBuf>,
    http_listen: Option<String>,
}

/// The tables of this section in the schema.
pub(crate) const TABLES: &[Table] = &[Table {
    path: "server.acme",
    array: false,
    keys: serde_names::<RawAcme>,
    secret_refs: &[],
    secret_ref_lists: &[],
}];

impl Checker<'_> {
    pub(super) fn acme(&mut self, raw: RawAcme) -> Option<AcmeConfig> {
        let table = KeyPath::of("server.acme");
        let domains = self.acme_domains(&table.key("domains"), raw.domains);
        let contact = match raw.contact {
            None => Some(None),
            Some(contact) => self.acme_contact(&table.key("contact"), contact).map(Some),
        };
        let directory = match raw.directory {
            None => Some(DEFAULT_ACME_DIRECTORY.to_owned()),
            Some(url) => self.acme_directory(&table.key("directory"), url),
        };
        let http_listen = self.socket_addr(
            &table.key("http_listen"),
            raw.http_listen,
            DEFAULT_ACME_HTTP_LISTEN,
        );
        let cache = raw
            .cache
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ACME_CACHE));
        Some(AcmeConfig {
            domains: domains?,
            contact: contact?,
            directory: directory?,
            directory_ca: raw.directory_ca.map(|ca| self.beside_config(&ca)),
            cache: self.beside_config(&cache),
            http_listen: http_listen?,
        })
    }

    /// The HTTP-01 listener must be reachable by the CA's validators, which are on no
    /// allowlist: its port must not be one the filter protects, nor a port another listener
    /// of hookwall serves.
    pub(super) fn acme_port_unprotected(
        &mut self,
        server: &ServerConfig,
        filter: &FilterConfig,
        metrics: Option<&MetricsConfig>,
    ) {
        let Tls::Acme(acme) = &server.tls else { return };
        let key = KeyPath::of("server.acme.http_listen");
        let listen = acme.http_listen;
        let port = listen.port();
        if port == 0 {
            self.error(
                &key,
                "port 0 is picked by the OS at start, but the CA's validators connect to one \
                 fixed port (80 for a public CA): write e.g. http_listen = \"0.0.0.0:80\"",
            );
            return;
        }
        if filter.protected_ports.contains(&port) {
            self.error(
                &key,
                format!(
                    "port {port} of the HTTP-01 listener ({listen}) is in filter.protected_ports \
                     ({:?}): the CA's validators connect from addresses on no allowlist, so the \
                     filter would drop them and no certificate would ever be issued; remove \
                     {port} from filter.protected_ports (the listener answers only \
                     /.well-known/acme-challenge/ and 404 to anything else)",
                    filter.protected_ports
                ),
            );
            return;
        }
        let others = [
            Some(("server.listen", server.listen)),
            metrics.map(|m| ("metrics.listen", m.listen)),
        ];
        for (name, other) in others.into_iter().flatten() {
            if other.port() == port
                && (other.ip().is_unspecified()
                    || listen.ip().is_unspecified()
                    || other.ip().to_canonical() == listen.ip().to_canonical())
            {
                self.error(
                    &key,
                    format!(
                        "{listen} is also {name} ({other}): the HTTP-01 listener needs a port \
                         of its own, e.g. \"0.0.0.0:80\""
                    ),
                );
                return;
            }
        }
    }

    fn acme_domains(&mut self, key: &KeyPath, raw: Option<Vec<String>>) -> Option<Vec<String>> {
        let names = match raw {
            Some(names) if !names.is_empty() => names,
            _ => {
                self.error(
                    key,
                    "the certificate needs at least one name: list the names the providers call, \
                     e.g. domains = [\"hooks.example.com\"]",
                );
                return None;
            }
        };
        let mut domains: Vec<String> = Vec::with_capacity(names.len());
        let mut ok = true;
        for (index, name) in names.iter().enumerate() {
            let lower = name.trim_end_matches('.').to_ascii_lowercase();
            let problem = domain_problem(&lower);
            if let Some(problem) = problem {
                self.error(&key.index(index), format!("\"{name}\" {problem}"));
                ok = false;
            } else if domains.contains(&lower) {
                self.error(
                    &key.index(index),
                    format!("\"{name}\" is listed twice: remove one"),
                );
                ok = false;
            } else {
                domains.push(lower);
            }
        }
        ok.then_some(domains)
    }

    fn acme_contact(&mut self, key: &KeyPath, contact: String) -> Option<String> {
        let address = contact.strip_prefix("mailto:").unwrap_or_default();
        if address.contains('@') && !address.contains(char::is_whitespace) {
            return Some(contact);
        }
        self.error(
            key,
            format!(
                "\"{contact}\" is not a mailto: URI: write e.g. contact = \
                 \"mailto:ops@example.com\" (the CA writes there about the account), or remove \
                 the key"
            ),
        );
        None
    }

    fn acme_directory(&mut self, key: &KeyPath, url: String) -> Option<String> {
        let url = self.http_url(key, url, DEFAULT_ACME_DIRECTORY)?;
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Some(url);
        }
        self.error(
            key,
            format!(
                "\"{url}\" is plain HTTP: RFC 8555 requires HTTPS for the directory (the account \
                 key signs what is sent, but the answers would be unauthenticated); write the \
                 https:// URL, e.g. \"{DEFAULT_ACME_DIRECTORY}\""
            ),
        );
        None
    }
}

/// Why `name` (lower case, without a trailing dot) cannot be on an HTTP-01 certificate, if it
/// cannot.
fn domain_problem(name: &str) -> Option<String> {
    if name.starts_with("*.") {
        return Some(
            "is a wildcard: HTTP-01 cannot prove one (only DNS-01 can); list each name".to_owned(),
        );
    }
    if name.parse::<IpAddr>().is_ok() {
        return Some(
            "is an address: ACME CAs issue for DNS names; list the name the providers call"
                .to_owned(),
        );
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if name.is_empty() || name.len() > MAX_DOMAIN || !labels_ok || !name.contains('.') {
        return Some(
            "is not a DNS name: labels of letters, digits and '-' separated by dots, e.g. \
             \"hooks.example.com\" (write an internationalised name in its xn-- form)"
                .to_owned(),
        );
    }
    None
}
