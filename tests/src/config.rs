//! The `hookwall.toml` the end-to-end tests and benchmarks run with, as typed parts that render
//! to TOML.
//!
//! - [`ConfigSpec`]: the whole file: filter, allowlist, server (TLS files, the client address source,
//!   `[server.limits]`), metrics, store, `[delivery]`, the `[[route]]`s and `[daemon]`.
//! - [`DeliverySpec`]: `[delivery]` with an HTTP sink or `[delivery.nats]`.
//! - [`Route`]: one `[[route]]`, its secrets read from files, and the sources it accepts.
//! - [`write_atomic`]: replaces a config the way editors do, so a running daemon never reads
//!   half of it.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::netns::PROTECTED_PORT;

/// The config a test runs with; [`ConfigSpec::render`] writes the TOML.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    /// `filter.interfaces`.
    pub interfaces: Vec<String>,
    /// `filter.mode`: `enforce` or `monitor`.
    pub mode: String,
    /// `filter.attach`.
    pub attach: String,
    /// `filter.protected_ports`.
    pub protected_ports: Vec<u16>,
    /// `filter.pin_path`.
    pub pin_path: PathBuf,
    /// `allow.cidrs` (`allow.presets` is always `[]`: the real provider addresses are never
    /// used with sockets; so `allow.warn_missing_provider` is always `false`).
    pub cidrs: Vec<String>,
    /// Further `[allow]` lines, as TOML (e.g. `sources = [...]`, `max_shrink = 0.5`).
    pub allow_extra: Vec<String>,
    /// `metrics.listen`.
    pub metrics_listen: SocketAddr,
    /// `server.listen`.
    pub server_listen: String,
    /// `server.tls_cert` and `server.tls_key`; without them, `tls = "self-signed"`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The keys of `[server.acme]`, as TOML lines; set, the config says `tls = "acme"` (and
    /// [`ConfigSpec::tls`] is not written).
    pub acme: Option<String>,
    /// `server.client_address`, as TOML (e.g. `{ proxy_protocol = true, trusted_proxies =
    /// ["192.0.2.10"] }`); unset: the default, the socket peer.
    pub client_address: Option<String>,
    /// `[server.limits]`: each key with its value.
    pub limits: Vec<(String, u64)>,
    /// `store.path`.
    pub store_path: PathBuf,
    /// `[delivery]`, if any.
    pub delivery: Option<DeliverySpec>,
    /// The `[[route]]`s.
    pub routes: Vec<Route>,
    /// `daemon.run_as`, if set.
    pub run_as: Option<String>,
}

impl ConfigSpec {
    /// Enforce mode on `interface`, port 8443, auto attach, a self-signed certificate, metrics
    /// on 127.0.0.1:9184, the store in `dir`, no routes.
    #[must_use]
    pub fn new(interface: &str, pin_path: &Path, dir: &Path, cidrs: &[&str]) -> Self {
        Self {
            interfaces: vec![interface.to_owned()],
            mode: "enforce".into(),
            attach: "auto".into(),
            protected_ports: vec![PROTECTED_PORT],
            pin_path: pin_path.to_path_buf(),
            cidrs: cidrs.iter().map(|&c| c.to_owned()).collect(),
            allow_extra: Vec::new(),
            metrics_listen: "127.0.0.1:9184".parse().expect("socket address"),
            server_listen: format!("0.0.0.0:{PROTECTED_PORT}"),
            tls: None,
            acme: None,
            client_address: None,
            limits: Vec::new(),
            store_path: dir.join("events.db"),
            delivery: None,
            routes: Vec::new(),
            run_as: None,
        }
    }

    /// The TOML text.
    #[must_use]
    pub fn render(&self) -> String {
        let ports = self
            .protected_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = String::new();
        let _ = writeln!(s, "[filter]");
        let _ = writeln!(s, "interfaces = [{}]", quoted(&self.interfaces));
        let _ = writeln!(s, "mode = {:?}", self.mode);
        let _ = writeln!(s, "attach = {:?}", self.attach);
        let _ = writeln!(s, "protected_ports = [{ports}]");
        let _ = writeln!(s, "pin_path = {:?}", path_text(&self.pin_path));
        let _ = writeln!(s);
        let _ = writeln!(s, "[allow]");
        let _ = writeln!(s, "presets = []");
        let _ = writeln!(s, "cidrs = [{}]", quoted(&self.cidrs));
        let _ = writeln!(s, "files = []");
        // The routes' providers are never allowed by their presets here (see `cidrs`): the
        // warning about it would be noise in every test's output.
        let _ = writeln!(s, "warn_missing_provider = false");
        for line in &self.allow_extra {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "[server]");
        let _ = writeln!(s, "listen = {:?}", self.server_listen);
        match &self.tls {
            _ if self.acme.is_some() => {
                let _ = writeln!(s, "tls = \"acme\"");
            }
            Some((cert, key)) => {
                let _ = writeln!(s, "tls_cert = {:?}", path_text(cert));
                let _ = writeln!(s, "tls_key = {:?}", path_text(key));
            }
            None => {
                let _ = writeln!(s, "tls = \"self-signed\"");
            }
        }
        if let Some(source) = &self.client_address {
            let _ = writeln!(s, "client_address = {source}");
        }
        if !self.limits.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "[server.limits]");
            for (key, value) in &self.limits {
                let _ = writeln!(s, "{key} = {value}");
            }
        }
        if let Some(acme) = &self.acme {
            let _ = writeln!(s);
            let _ = writeln!(s, "[server.acme]");
            let _ = writeln!(s, "{}", acme.trim_end());
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "[metrics]");
        let _ = writeln!(s, "listen = {:?}", self.metrics_listen.to_string());
        let _ = writeln!(s);
        let _ = writeln!(s, "[store]");
        let _ = writeln!(s, "path = {:?}", path_text(&self.store_path));
        if let Some(delivery) = &self.delivery {
            let _ = writeln!(s);
            delivery.render(&mut s);
        }
        for route in &self.routes {
            let _ = writeln!(s);
            route.render(&mut s);
        }
        if let Some(user) = &self.run_as {
            let _ = writeln!(s);
            let _ = writeln!(s, "[daemon]");
            let _ = writeln!(s, "run_as = {user:?}");
        }
        s
    }

    /// Writes the TOML to `path` atomically (see [`write_atomic`]).
    pub fn write(&self, path: &Path) {
        write_atomic(path, &self.render());
    }
}

/// The `[delivery]` section of a [`ConfigSpec`].
#[derive(Debug, Clone)]
pub struct DeliverySpec {
    /// Where events go.
    pub sink: Sink,
    /// `delivery.timeout` (humantime text).
    pub timeout: String,
    /// `delivery.max_attempts`.
    pub max_attempts: u32,
    /// `delivery.max_age`, if set.
    pub max_age: Option<String>,
    /// `delivery.backoff_initial`.
    pub backoff_initial: String,
    /// `delivery.backoff_max`.
    pub backoff_max: String,
    /// `delivery.concurrency`.
    pub concurrency: usize,
}

/// Where a [`DeliverySpec`] delivers.
#[derive(Debug, Clone)]
pub enum Sink {
    /// `delivery.url`, signed with the secret read from `secret_file` (`{ file = ... }`).
    Http {
        /// `delivery.url`.
        url: String,
        /// The file `delivery.secret` is read from.
        secret_file: PathBuf,
    },
    /// `[delivery.nats]`.
    Nats {
        /// `delivery.nats.url`.
        url: String,
        /// `delivery.nats.subject`.
        subject: String,
        /// `delivery.nats.stream`.
        stream: String,
        /// `delivery.nats.duplicate_window`, if set.
        duplicate_window: Option<String>,
    },
}

impl DeliverySpec {
    /// Delivery to `url` signed with the secret in `secret_file`, with [test-sized
    /// retries](DeliverySpec::with_sink).
    #[must_use]
    pub fn http(url: &str, secret_file: &Path) -> Self {
        Self::with_sink(Sink::Http {
            url: url.to_owned(),
            secret_file: secret_file.to_path_buf(),
        })
    }

    /// Delivery to `sink` with test-sized backoffs (50 ms to 500 ms), a 5 s timeout, 25
    /// attempts, no age limit and 8 in flight.
    #[must_use]
    pub fn with_sink(sink: Sink) -> Self {
        Self {
            sink,
            timeout: "5s".into(),
            max_attempts: 25,
            max_age: None,
            backoff_initial: "50ms".into(),
            backoff_max: "500ms".into(),
            concurrency: 8,
        }
    }

    fn render(&self, s: &mut String) {
        let _ = writeln!(s, "[delivery]");
        if let Sink::Http { url, secret_file } = &self.sink {
            let _ = writeln!(s, "url = {url:?}");
            let _ = writeln!(s, "secret = {{ file = {:?} }}", path_text(secret_file));
        }
        let _ = writeln!(s, "timeout = {:?}", self.timeout);
        let _ = writeln!(s, "max_attempts = {}", self.max_attempts);
        if let Some(max_age) = &self.max_age {
            let _ = writeln!(s, "max_age = {max_age:?}");
        }
        let _ = writeln!(s, "backoff_initial = {:?}", self.backoff_initial);
        let _ = writeln!(s, "backoff_max = {:?}", self.backoff_max);
        let _ = writeln!(s, "concurrency = {}", self.concurrency);
        if let Sink::Nats {
            url,
            subject,
            stream,
            duplicate_window,
        } = &self.sink
        {
            let _ = writeln!(s);
            let _ = writeln!(s, "[delivery.nats]");
            let _ = writeln!(s, "url = {url:?}");
            let _ = writeln!(s, "subject = {subject:?}");
            let _ = writeln!(s, "stream = {stream:?}");
            if let Some(window) = duplicate_window {
                let _ = writeln!(s, "duplicate_window = {window:?}");
            }
        }
    }
}

/// One `[[route]]`: a path, how it is verified (its secrets read from files), and for M-Pesa
/// C2B validation routes, where the question is forwarded.
#[derive(Debug, Clone)]
pub struct Route {
    /// `path`.
    pub path: String,
    /// `verify` and the secrets it checks with.
    pub verify: Verify,
    /// `validation`, if any.
    pub validation: Option<Validation>,
    /// `allow` (preset names and CIDRs), if any.
    pub allow: Option<Vec<String>>,
}

/// How a [`Route`] is verified.
#[derive(Debug, Clone)]
pub enum Verify {
    /// `verify = "mpesa"` with `token = { file = ... }`.
    Mpesa {
        /// The file the token is read from.
        token_file: PathBuf,
    },
    /// `verify = "mpesa"` with `token = { credential = ... }`.
    MpesaCredential {
        /// The systemd credential's name.
        name: String,
    },
    /// `verify = "mpesa"` with `tokens = [{ file = ... }, ...]`: any of them passes.
    MpesaTokens {
        /// The files the tokens are read from.
        token_files: Vec<PathBuf>,
    },
    /// `verify = KIND` (`github`, `stripe`, `standard-webhooks`) with `secrets = [{ file =
    /// ... }, ...]`, the current secret first.
    Signed {
        /// `verify`.
        kind: String,
        /// The files the secrets are read from.
        secret_files: Vec<PathBuf>,
    },
}

/// A route's `validation = { url, timeout, on_failure }`.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Where the question is forwarded.
    pub url: String,
    /// How long the application may take (humantime text).
    pub timeout: String,
    /// `accept` or `reject`: the answer when the application does not give one in time.
    pub on_failure: String,
}

impl Route {
    /// An M-Pesa route at `path` whose token is read from `token_file`.
    #[must_use]
    pub fn mpesa(path: &str, token_file: &Path) -> Self {
        Self {
            path: path.to_owned(),
            verify: Verify::Mpesa {
                token_file: token_file.to_path_buf(),
            },
            validation: None,
            allow: None,
        }
    }

    /// An M-Pesa route at `path` whose token is the systemd credential `name`.
    #[must_use]
    pub fn mpesa_credential(path: &str, name: &str) -> Self {
        Self {
            path: path.to_owned(),
            verify: Verify::MpesaCredential {
                name: name.to_owned(),
            },
            validation: None,
            allow: None,
        }
    }

    /// An M-Pesa route at `path` with several tokens (`tokens = [...]`), read from `token_files`.
    #[must_use]
    pub fn mpesa_tokens(path: &str, token_files: &[PathBuf]) -> Self {
        Self {
            path: path.to_owned(),
            verify: Verify::MpesaTokens {
                token_files: token_files.to_vec(),
            },
            validation: None,
            allow: None,
        }
    }

    /// A route at `path` verified as `kind` with the secrets read from `secret_files`.
    #[must_use]
    pub fn signed(path: &str, kind: &str, secret_files: &[PathBuf]) -> Self {
        Self {
            path: path.to_owned(),
            verify: Verify::Signed {
                kind: kind.to_owned(),
                secret_files: secret_files.to_vec(),
            },
            validation: None,
            allow: None,
        }
    }

    /// This route with its validation questions forwarded to `url`.
    #[must_use]
    pub fn validation(mut self, url: &str, timeout: &str, on_failure: &str) -> Self {
        self.validation = Some(Validation {
            url: url.to_owned(),
            timeout: timeout.to_owned(),
            on_failure: on_failure.to_owned(),
        });
        self
    }

    /// This route accepting only the sources `allow` names (preset names and CIDRs).
    #[must_use]
    pub fn allow(mut self, allow: &[&str]) -> Self {
        self.allow = Some(allow.iter().map(|&a| a.to_owned()).collect());
        self
    }

    fn render(&self, s: &mut String) {
        let _ = writeln!(s, "[[route]]");
        let _ = writeln!(s, "path = {:?}", self.path);
        match &self.verify {
            Verify::Mpesa { token_file } => {
                let _ = writeln!(s, "verify = \"mpesa\"");
                let _ = writeln!(s, "token = {{ file = {:?} }}", path_text(token_file));
            }
            Verify::MpesaCredential { name } => {
                let _ = writeln!(s, "verify = \"mpesa\"");
                let _ = writeln!(s, "token = {{ credential = {name:?} }}");
            }
            Verify::MpesaTokens { token_files } => {
                let files = token_files
                    .iter()
                    .map(|f| format!("{{ file = {:?} }}", path_text(f)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(s, "verify = \"mpesa\"");
                let _ = writeln!(s, "tokens = [{files}]");
            }
            Verify::Signed { kind, secret_files } => {
                let files = secret_files
                    .iter()
                    .map(|f| format!("{{ file = {:?} }}", path_text(f)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(s, "verify = {kind:?}");
                let _ = writeln!(s, "secrets = [{files}]");
            }
        }
        if let Some(allow) = &self.allow {
            let _ = writeln!(s, "allow = [{}]", quoted(allow));
        }
        if let Some(v) = &self.validation {
            let _ = writeln!(
                s,
                "validation = {{ url = {:?}, timeout = {:?}, on_failure = {:?} }}",
                v.url, v.timeout, v.on_failure
            );
        }
    }
}

/// `"a", "b"`: TOML strings for an array.
fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// Replaces `path`'s content atomically: writes a temporary file beside it, then renames it
/// over `path` (what careful editors and config management do). If `path` is a symlink, the
/// file it points to is replaced instead and the symlink kept.
///
/// # Panics
/// If writing or renaming fails.
pub fn write_atomic(path: &Path, contents: &str) {
    let target = match fs::read_link(path) {
        Ok(dest) if dest.is_absolute() => dest,
        Ok(dest) => path.parent().unwrap_or(Path::new(".")).join(dest),
        Err(_) => path.to_path_buf(),
    };
    let tmp = target.with_extension("toml.tmp");
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    fs::rename(&tmp, &target)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), target.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts a test sets appear where hookwall reads them: the limits under
    /// `[server.limits]`, a NATS sink under `[delivery.nats]`, each route in its own table.
    #[test]
    fn renders_the_optional_sections_in_their_tables() {
        let dir = Path::new("/d");
        let mut spec = ConfigSpec::new("veth0", Path::new("/sys/fs/bpf/p"), dir, &["192.0.2.0/24"]);
        spec.tls = Some((dir.join("cert.pem"), dir.join("key.pem")));
        spec.client_address =
            Some(r#"{ header = "forwarded", trusted_proxies = ["198.51.100.20/32"] }"#.into());
        spec.limits = vec![("rate_burst".into(), 2)];
        let mut delivery = DeliverySpec::with_sink(Sink::Nats {
            url: "nats://127.0.0.1:4222".into(),
            subject: "s".into(),
            stream: "S".into(),
            duplicate_window: None,
        });
        delivery.max_age = Some("1h".into());
        spec.delivery = Some(delivery);
        spec.routes = vec![
            Route::mpesa("/m", &dir.join("token")).validation("http://a/v", "1000ms", "reject"),
            Route::signed("/gh", "github", &[dir.join("gh"), dir.join("gh-old")]),
        ];
        let text = spec.render();
        let after = |table: &str| {
            let start = text
                .find(&format!("{table}\n"))
                .unwrap_or_else(|| panic!("no {table} in\n{text}"));
            text[start..]
                .split("\n\n")
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        assert!(!text.contains("self-signed"), "{text}");
        let server = after("[server]");
        assert!(server.contains("tls_cert = \"/d/cert.pem\""), "{server}");
        assert!(
            server.contains(
                "client_address = { header = \"forwarded\", trusted_proxies = \
                 [\"198.51.100.20/32\"] }"
            ),
            "{server}"
        );
        assert_eq!(after("[server.limits]"), "[server.limits]\nrate_burst = 2");
        let delivery = after("[delivery]");
        assert!(delivery.contains("max_age = \"1h\""), "{delivery}");
        assert!(!delivery.contains("url"), "{delivery}");
        assert!(
            after("[delivery.nats]").contains("url = \"nats://127.0.0.1:4222\""),
            "{text}"
        );
        assert_eq!(text.matches("[[route]]").count(), 2, "{text}");
        assert!(
            text.contains(
                "token = { file = \"/d/token\" }\nvalidation = { url = \"http://a/v\", \
                 timeout = \"1000ms\", on_failure = \"reject\" }"
            ),
            "{text}"
        );
        assert!(
            text.contains("secrets = [{ file = \"/d/gh\" }, { file = \"/d/gh-old\" }]"),
            "{text}"
        );
    }

    /// A config without TLS files, limits, delivery or routes is the plain one the filter
    /// tests rewrite line by line.
    #[test]
    fn a_filter_config_has_only_the_base_sections() {
        let spec = ConfigSpec::new("veth0", Path::new("/p"), Path::new("/d"), &[]);
        let text = spec.render();
        assert!(text.contains("tls = \"self-signed\"\n"), "{text}");
        for absent in [
            "client_address",
            "[server.limits]",
            "[delivery]",
            "[[route]]",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }
}
