//! The warning about a provider's route whose published addresses are not on the allowlist: a
//! `stripe`, `github` or `mpesa` route served on a protected port, without the provider's
//! preset (or a source of its published list), has its callbacks dropped in the kernel before
//! any of hookwall's checks sees them. A warning, not an error: the addresses may be allowed
//! another way (`allow.cidrs`, `allow.files`), which `allow.warn_missing_provider = false`
//! tells hookwall.

use crate::{
    allowlist::presets::Format,
    config::{Config, VerifyKind},
};

/// The preset of each provider a verifier implies, and the format of its published list.
fn provider(kind: VerifyKind) -> Option<(&'static str, &'static str, Option<Format>)> {
    match kind {
        VerifyKind::Mpesa => Some(("M-Pesa", "mpesa", None)),
        VerifyKind::Stripe => Some(("Stripe", "stripe-webhooks", Some(Format::StripeJson))),
        VerifyKind::Github => Some(("GitHub", "github-hooks", Some(Format::GithubMeta))),
        _ => None,
    }
}

impl Config {
    /// One warning for each provider whose routes are served on a protected port while its
    /// preset is not allowed; none with `allow.warn_missing_provider = false`.
    #[must_use]
    pub fn provider_warnings(&self) -> Vec<String> {
        if !self.allow.warn_missing_provider {
            return Vec::new();
        }
        let port = self.server.listen.port();
        if !self.filter.protected_ports.contains(&port) {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        let mut warned: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some((who, preset, format)) = provider(route.verify) else {
                continue;
            };
            let allowed = self.allow.presets.iter().any(|p| p == preset)
                || format.is_some_and(|f| self.allow.sources.iter().any(|s| s.format == f));
            if allowed || warned.contains(&preset) {
                continue;
            }
            warned.push(preset);
            let routes: Vec<String> = self
                .routes
                .iter()
                .filter(|r| r.verify == route.verify)
                .map(|r| format!("\"{}\"", r.path))
                .collect();
            warnings.push(format!(
                "{}: route {} (verify = \"{}\") is served on port {port}, which the filter \
                 protects, but the allowlist has no {preset} preset: {who}'s callbacks would be \
                 dropped in the kernel. Add \"{preset}\" to allow.presets, or set \
                 allow.warn_missing_provider = false if {who}'s addresses are allowed another \
                 way (allow.cidrs, allow.files)",
                self.path.display(),
                routes.join(", "),
                route.verify.as_str(),
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse_ok;

    const STRIPE_ROUTE: &str = r#"
[[route]]
path = "/stripe"
verify = "stripe"
secrets = [{ env = "STRIPE" }]
"#;

    #[test]
    fn a_stripe_route_without_its_preset_is_warned_about() {
        let config = parse_ok(&format!("[allow]\npresets = [\"mpesa\"]\n{STRIPE_ROUTE}"));
        let warnings = config.provider_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert!(w.contains("route \"/stripe\" (verify = \"stripe\")"), "{w}");
        assert!(w.contains("no stripe-webhooks preset"), "{w}");
        assert!(
            w.contains("Add \"stripe-webhooks\" to allow.presets"),
            "{w}"
        );
        assert!(w.contains("allow.warn_missing_provider = false"), "{w}");
    }

    #[test]
    fn the_preset_a_source_of_its_format_or_the_key_silence_it() {
        for allow in [
            "presets = [\"mpesa\", \"stripe-webhooks\"]",
            "presets = [\"mpesa\"]\nsources = [{ url = \"https://stripe.com/files/ips/ips_webhooks.json\", format = \"stripe-json\" }]",
            "presets = [\"mpesa\"]\nwarn_missing_provider = false",
        ] {
            let config = parse_ok(&format!("[allow]\n{allow}\n{STRIPE_ROUTE}"));
            assert_eq!(config.provider_warnings(), Vec::<String>::new(), "{allow}");
        }
    }

    #[test]
    fn a_route_on_a_port_the_filter_does_not_protect_is_not_warned_about() {
        let config = parse_ok(&format!(
            "[filter]\nprotected_ports = [8443]\n[allow]\npresets = [\"mpesa\"]\n{STRIPE_ROUTE}"
        ));
        assert!(config.provider_warnings().is_empty());
    }

    #[test]
    fn github_and_mpesa_routes_name_their_presets() {
        let config = parse_ok(
            r#"
[allow]
presets = []
cidrs = ["203.0.113.0/24"]

[[route]]
path = "/gh"
verify = "github"
secrets = [{ env = "GH" }]

[[route]]
path = "/gh2"
verify = "github"
secrets = [{ env = "GH" }]

[[route]]
path = "/mpesa"
verify = "mpesa"
token = { env = "TOKEN" }
"#,
        );
        let warnings = config.provider_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("route \"/gh\", \"/gh2\""),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[0].contains("no github-hooks preset"),
            "{}",
            warnings[0]
        );
        assert!(warnings[1].contains("no mpesa preset"), "{}", warnings[1]);
    }
}
