//! `hookwall check`: what it prints for a valid config.

use std::fmt::{self, Write as _};

use ipnet::IpNet;

use crate::config::{
    ClientAddress, Config, Mode, RouteConfig, SecretRef, Sink, Tls, VerifyKind, human,
    without_query,
};

impl Config {
    /// What `hookwall check` prints for a valid config: every resolved setting, the effective
    /// allowlist with the source of each entry, and the routes with where their secrets come
    /// from (never the secrets).
    pub fn render_check(&self) -> String {
        let mut out = format!("{}: valid\n", self.path.display());
        self.render_filter(&mut out);
        self.render_allowlist(&mut out);
        self.render_services(&mut out);
        self.render_routes(&mut out);
        out
    }

    fn render_filter(&self, out: &mut String) {
        let filter = &self.filter;
        let from = if filter.interfaces_from_default_route {
            " (the default route's)"
        } else {
            ""
        };
        let mode = match filter.mode {
            Mode::Enforce => "enforce (packets from sources not allowed are dropped)",
            Mode::Monitor => "monitor (nothing is dropped; would-be drops are counted)",
        };
        let ports: Vec<String> = filter.protected_ports.iter().map(u16::to_string).collect();
        let fragments = if filter.strict_fragments {
            "dropped unless the source is allowed (strict_fragments)"
        } else {
            "passed (their ports cannot be read)"
        };
        section(out, "[filter]");
        row(
            out,
            "interfaces",
            format_args!("{}{from}", filter.interfaces.join(", ")),
        );
        row(out, "mode", mode);
        row(out, "attach", filter.attach);
        row(out, "protected ports", ports.join(", "));
        row(out, "pin path", filter.pin_path.display());
        row(out, "later fragments", fragments);
        if filter.protected_ports.contains(&22) {
            row(
                out,
                "note",
                "port 22 is protected: SSH from sources not allowed will be cut off",
            );
        }
    }

    fn render_allowlist(&self, out: &mut String) {
        let list = &self.allowlist;
        section(
            out,
            format_args!(
                "[allow] {} IPv4 and {} IPv6 prefixes after merging {} entries",
                list.v4.len(),
                list.v6.len(),
                list.entries.len()
            ),
        );
        let nets: Vec<String> = list.entries.iter().map(|e| e.net.to_string()).collect();
        let width = nets.iter().map(String::len).max().unwrap_or(0);
        for (net, entry) in nets.iter().zip(&list.entries) {
            line(out, format_args!("  {net:<width$}  {}", entry.source));
        }
        let allow = &self.allow;
        if let Some(every) = allow.presets_refresh {
            row(
                out,
                "presets refresh",
                format_args!(
                    "every {} from their publishers (the snapshots above until then)",
                    human(every)
                ),
            );
        }
        for source in &allow.sources {
            row(
                out,
                "source",
                format_args!(
                    "{} ({}, every {}; fetched by the daemon, not by check)",
                    without_query(&source.url),
                    source.format.as_str(),
                    human(source.refresh)
                ),
            );
        }
        if allow.presets_refresh.is_some() || !allow.sources.is_empty() {
            row(
                out,
                "fetched lists",
                format_args!(
                    "may shrink by {} at most (max_shrink); last good copies in {}",
                    allow.max_shrink(),
                    allow.cache_dir(&self.store.path).display()
                ),
            );
        }
    }

    fn render_services(&self, out: &mut String) {
        let server = &self.server;
        section(out, "[server]");
        row(out, "listen", server.listen);
        match &server.tls {
            Tls::Files { cert, key } => {
                row(
                    out,
                    "tls",
                    format_args!("{} + {}", cert.display(), key.display()),
                );
            }
            Tls::SelfSigned => row(out, "tls", "self-signed (for a first run only)"),
            Tls::Acme(acme) => {
                row(
                    out,
                    "tls",
                    format_args!("acme: {} from {}", acme.domains.join(", "), acme.directory),
                );
                row(
                    out,
                    "acme http-01",
                    format_args!(
                        "{} (not protected by the filter); cache {}",
                        acme.http_listen,
                        acme.cache.display()
                    ),
                );
            }
        }
        let list = |nets: &[IpNet]| {
            nets.iter()
                .map(IpNet::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        row(
            out,
            "client address",
            match &server.client_address {
                ClientAddress::Peer => "the socket peer".to_owned(),
                ClientAddress::Header {
                    header,
                    trusted_proxies,
                } => format!(
                    "{} from trusted proxies {}",
                    header.name(),
                    list(trusted_proxies)
                ),
                ClientAddress::ProxyProtocol { trusted_proxies } => format!(
                    "PROXY protocol from trusted balancers {}",
                    list(trusted_proxies)
                ),
            },
        );
        let l = &server.limits;
        row(
            out,
            "limits",
            format_args!(
                "{}/s per client (burst {}), {} connections ({} per client), {} in flight \
                 ({} per client), IPv6 clients by /{}, body {} bytes, headers {} ms, body {} ms",
                l.rate_per_second,
                l.rate_burst,
                l.max_connections,
                l.max_connections_per_client,
                l.max_in_flight,
                l.max_in_flight_per_client,
                l.ipv6_prefix,
                l.body_limit_bytes,
                l.header_timeout.as_millis(),
                l.body_timeout.as_millis()
            ),
        );
        section(out, "[store]");
        row(out, "path", self.store.path.display());
        row(
            out,
            "retention",
            format_args!(
                "{} (delivered events older than this are purged)",
                human(self.store.retention)
            ),
        );
        row(
            out,
            "dedupe window",
            format_args!(
                "{} (a purged event's key still recognises a replay for this long)",
                human(self.store.dedupe_window)
            ),
        );
        self.render_delivery(out);
        section(out, "[metrics]");
        row(out, "listen", self.metrics.listen);
        section(out, "[daemon]");
        match &self.daemon.run_as {
            Some(user) => row(
                out,
                "run as",
                format_args!(
                    "{} (uid {}, gid {}) after start, with CAP_BPF only",
                    user.name, user.uid, user.gid
                ),
            ),
            None => row(
                out,
                "run as",
                "root after start, with CAP_BPF only (set run_as to leave uid 0)",
            ),
        }
    }

    fn render_delivery(&self, out: &mut String) {
        section(out, "[delivery]");
        let Some(delivery) = &self.delivery else {
            row(out, "sink", "none (events are stored only)");
            return;
        };
        // Userinfo is refused at load; a query string may still carry a key, so it is not shown.
        match &delivery.sink {
            Sink::Http { url } => row(out, "sink", format_args!("POST {}", without_query(url))),
            Sink::Nats(nats) => {
                row(out, "sink", format_args!("NATS JetStream {}", nats.url));
                row(
                    out,
                    "subject",
                    format_args!(
                        "{} (stream {}, duplicate window {})",
                        nats.subject,
                        nats.stream,
                        human(nats.duplicate_window)
                    ),
                );
                if let Some(token) = &nats.token {
                    row(out, "nats token", format_args!("from {token}"));
                }
            }
        }
        if let Some(secret) = &delivery.secret {
            row(out, "signing secret", format_args!("from {secret}"));
        }
        row(
            out,
            "attempts",
            format_args!(
                "{} per attempt, {} in flight; dead letter after {} attempts or {}",
                human(delivery.timeout),
                delivery.concurrency,
                delivery.max_attempts,
                human(delivery.max_age)
            ),
        );
        row(
            out,
            "backoff",
            format_args!(
                "{} doubling up to {}, with jitter (half to all of it)",
                human(delivery.backoff_initial),
                human(delivery.backoff_max)
            ),
        );
    }

    fn render_routes(&self, out: &mut String) {
        section(out, format_args!("routes: {}", self.routes.len()));
        let width = self.routes.iter().map(|r| r.path.len()).max().unwrap_or(0);
        for route in &self.routes {
            let secrets = match &route.token {
                Some(token) => format!("token from {token}"),
                None if !route.tokens.is_empty() => {
                    let from: Vec<String> = route.tokens.iter().map(SecretRef::to_string).collect();
                    format!("tokens from {}", from.join(", "))
                }
                None => {
                    let from: Vec<String> =
                        route.secrets.iter().map(SecretRef::to_string).collect();
                    format!("secrets from {}", from.join(", "))
                }
            };
            let verify = route.verify.as_str();
            let validation = route
                .validation
                .as_ref()
                .map(|v| {
                    format!(
                        "; validation by {} within {}, else {}",
                        without_query(&v.url),
                        human(v.timeout),
                        v.on_failure
                    )
                })
                .unwrap_or_default();
            line(
                out,
                format_args!(
                    "  {:<width$}  {verify:<17}  {secrets}{validation}",
                    route.path
                ),
            );
            line(
                out,
                format_args!(
                    "  {:<width$}  {:<17}  {}",
                    "",
                    "",
                    self.route_sources(route)
                ),
            );
        }
    }

    /// The sources `route` accepts, in words.
    fn route_sources(&self, route: &RouteConfig) -> String {
        match (&route.allow, route.verify) {
            (Some(allow), _) => format!(
                "allow {} ({} IPv4 and {} IPv6 prefixes after merging)",
                allow.written.join(", "),
                allow.list.v4.len(),
                allow.list.v6.len()
            ),
            (None, VerifyKind::Mpesa) => format!(
                "allow the allowlist, the default for mpesa ({} IPv4 and {} IPv6 prefixes after \
                 merging)",
                self.allowlist.v4.len(),
                self.allowlist.v6.len()
            ),
            (None, _) => "allow any source the filter lets through".to_owned(),
        }
    }
}

/// Appends one line to `out`. Writing to a String cannot fail, hence the ignored result.
fn line(out: &mut String, text: impl fmt::Display) {
    let _ = writeln!(out, "{text}");
}

/// A blank line and a section heading.
fn section(out: &mut String, heading: impl fmt::Display) {
    line(out, format_args!("\n{heading}"));
}

/// An aligned `label  value` row of a section.
fn row(out: &mut String, label: &str, value: impl fmt::Display) {
    line(out, format_args!("  {label:<17} {value}"));
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{BASE_EXAMPLE, MPESA_ROUTE, http_delivery, lines, parse_ok};

    #[test]
    fn render_check_shows_settings_sources_and_secret_origins() {
        let mut text = BASE_EXAMPLE.to_owned();
        text.push_str("\n[[route]]\npath = \"/hooks/gh\"\nverify = \"github\"\nsecrets = [{ file = \"/run/gh\" }, { env = \"GH_OLD\" }]\n");
        let shown = parse_ok(&text).render_check();
        for needle in [
            "/etc/hookwall/hookwall.toml: valid",
            "interfaces        eth0\n",
            "mode              enforce (",
            "attach            auto",
            "protected ports   443",
            "pin path          /sys/fs/bpf/hookwall",
            "[allow] 12 IPv4 and 1 IPv6 prefixes after merging 14 entries",
            "196.201.214.200/32  preset mpesa (Safaricom Daraja documentation, published callback IP whitelist)",
            "203.0.113.0/24      config line 11",
            "2001:db8::/48       config line 11",
            "listen            127.0.0.1:9184",
            "listen            0.0.0.0:443",
            "/mpesa/c2b/confirmation  mpesa              token from env HOOKWALL_MPESA_TOKEN",
            "/hooks/stripe            stripe             secrets from env STRIPE_WEBHOOK_SECRET",
            "/hooks/gh                github             secrets from file /run/gh, env GH_OLD",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        assert!(!shown.contains("port 22"));

        let shown = parse_ok(&lines(&["[filter]", "protected_ports = [22, 443]"])).render_check();
        assert!(
            shown.contains("interfaces        eth0 (the default route's)"),
            "{shown}"
        );
        assert!(
            shown.contains("note              port 22 is protected"),
            "{shown}"
        );
    }

    #[test]
    fn render_check_shows_the_sources_each_route_accepts() {
        let mut text = lines(MPESA_ROUTE);
        text.push_str(&lines(&[
            "[[route]]",
            "path = \"/hooks/gh\"",
            "verify = \"github\"",
            "secrets = [{ env = \"GH\" }]",
            "allow = [\"mpesa-extra\", \"203.0.113.0/24\", \"2001:db8::/48\"]",
            "[[route]]",
            "path = \"/hooks/sw\"",
            "verify = \"standard-webhooks\"",
            "secrets = [{ env = \"SW\" }]",
        ]));
        let shown = parse_ok(&text).render_check();
        let after = |route: &str| {
            let mut lines = shown
                .lines()
                .skip_while(|l| !l.trim_start().starts_with(route));
            lines.nth(1).unwrap_or_default().trim().to_owned()
        };
        assert_eq!(
            after("/mpesa/c2b/confirmation"),
            "allow the allowlist, the default for mpesa (11 IPv4 and 0 IPv6 prefixes after \
             merging)",
            "{shown}"
        );
        assert_eq!(
            after("/hooks/gh"),
            "allow mpesa-extra, 203.0.113.0/24, 2001:db8::/48 (3 IPv4 and 1 IPv6 prefixes after \
             merging)",
            "{shown}"
        );
        assert_eq!(
            after("/hooks/sw"),
            "allow any source the filter lets through",
            "{shown}"
        );
    }

    #[test]
    fn render_check_hides_the_query_of_delivery_and_validation_urls() {
        let mut text = lines(&[
            "[delivery]",
            "url = \"https://app.example/hooks?key=QUERYSECRET1\"",
            "secret = { env = \"HOOKWALL_DELIVERY_SECRET\" }",
        ]);
        text.push_str(&lines(MPESA_ROUTE));
        text.push_str(
            "validation = { url = \"https://app.example/v?key=QUERYSECRET2\", on_failure = \"accept\" }\n",
        );
        let shown = parse_ok(&text).render_check();
        assert!(
            shown.contains("POST https://app.example/hooks?…"),
            "{shown}"
        );
        assert!(
            shown.contains("validation by https://app.example/v?…"),
            "{shown}"
        );
        assert!(!shown.contains("QUERYSECRET"), "{shown}");
    }

    #[test]
    fn render_check_shows_the_delivery_and_validation_routes() {
        let shown = parse_ok("").render_check();
        for needle in [
            "retention         30days (delivered events older than this are purged)",
            "[delivery]\n  sink              none (events are stored only)",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }

        let mut text = http_delivery(&["max_attempts = 10", "backoff_max = \"1h\""]);
        text.push_str(&lines(MPESA_ROUTE));
        text.push_str(
            "validation = { url = \"http://127.0.0.1:8000/v\", timeout = \"2s\", on_failure = \"reject\" }\n",
        );
        let shown = parse_ok(&text).render_check();
        for needle in [
            "sink              POST http://127.0.0.1:8000/hookwall",
            "signing secret    from env HOOKWALL_DELIVERY_SECRET",
            "attempts          10s per attempt, 32 in flight; dead letter after 10 attempts or 3days",
            "backoff           1s doubling up to 1h, with jitter (half to all of it)",
            "mpesa              token from env HOOKWALL_MPESA_TOKEN; validation by \
             http://127.0.0.1:8000/v within 2s, else reject",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }

        let shown = parse_ok(&lines(&[
            "[delivery.nats]",
            "url = \"nats://127.0.0.1:4222\"",
            "token = { file = \"/run/nats-token\" }",
        ]))
        .render_check();
        for needle in [
            "sink              NATS JetStream nats://127.0.0.1:4222",
            "subject           hookwall.events (stream HOOKWALL, duplicate window 2m)",
            "nats token        from file /run/nats-token",
        ] {
            assert!(shown.contains(needle), "{needle:?} missing from:\n{shown}");
        }
        assert!(!shown.contains("signing secret"), "{shown}");
    }
}
