//! docs/configuration.md and filter-user/hookwall.example.toml against the config schema.
//!
//! The schema's key set is `config::accepted_keys`, read from the same tables as the loader's
//! unknown-key check, so a key added to or removed from the schema without its row in the
//! reference fails here, and so does a row for a key the loader does not read.

use std::{collections::BTreeSet, path::Path};

use hookwall::config::{self, SecretRef, VerifyKind};

const REFERENCE: &str = include_str!("../../docs/configuration.md");
const EXAMPLE: &str = include_str!("../../filter-user/hookwall.example.toml");
const EXAMPLE_PATH: &str = "filter-user/hookwall.example.toml";

/// The first column of every table row of the reference that is a key in backticks.
fn documented_keys() -> Vec<String> {
    REFERENCE
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("` |").map(|(key, _)| key.to_owned()))
        .collect()
}

/// The keys of secret references (`{ env = "NAME" }`, `{ file = "PATH" }`,
/// `{ credential = "NAME" }`): the reference documents the secret key itself
/// (`delivery.secret`), and the forms once, in prose.
const SECRET_REF_KEYS: [&str; 3] = ["env", "file", "credential"];

/// Every value key the loader accepts (`server.limits.rate_per_second`, `route[].verify`),
/// from the schema the unknown-key check reads: `accepted_keys` less the tables (a key with
/// keys below it other than a secret reference's) and the keys inside secret references.
fn schema_keys() -> BTreeSet<String> {
    let accepted = config::accepted_keys();
    let is_secret_form = |key: &str| {
        SECRET_REF_KEYS.iter().any(|inner| {
            key.strip_suffix(inner)
                .and_then(|k| k.strip_suffix('.'))
                .map(|parent| parent.strip_suffix("[]").unwrap_or(parent))
                .is_some_and(|parent| accepted.iter().any(|k| k == parent))
        })
    };
    let is_table = |key: &str| {
        accepted.iter().any(|other| {
            !is_secret_form(other)
                && (other.starts_with(&format!("{key}."))
                    || other.starts_with(&format!("{key}[].")))
        })
    };
    accepted
        .iter()
        .filter(|key| !is_secret_form(key) && !is_table(key))
        .cloned()
        .collect()
}

#[test]
fn the_reference_documents_exactly_the_keys_the_loader_reads() {
    let documented = documented_keys();
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "a key has two rows in docs/configuration.md"
    );
    let schema = schema_keys();
    // The schema must be seen, or the comparison below proves nothing.
    for key in [
        "filter.mode",
        "server.limits.rate_per_second",
        "route[].verify",
        "route[].validation.on_failure",
        "delivery.nats.url",
    ] {
        assert!(schema.contains(key), "the schema lacks {key}: {schema:?}");
    }
    let undocumented: Vec<_> = schema.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&schema).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of step with the config schema:\n  keys without a row: \
         {undocumented:?}\n  rows for keys the loader does not read: {unknown:?}"
    );
}

#[test]
fn the_example_config_is_valid_and_names_its_variables() {
    let config = config::parse(Path::new(EXAMPLE_PATH), EXAMPLE)
        .unwrap_or_else(|errors| panic!("{EXAMPLE_PATH} is refused:\n{errors}"));
    let kinds: BTreeSet<&str> = config.routes.iter().map(|r| r.verify.as_str()).collect();
    for kind in [
        VerifyKind::Mpesa,
        VerifyKind::StandardWebhooks,
        VerifyKind::Stripe,
        VerifyKind::Github,
        VerifyKind::HmacSha256,
        VerifyKind::SharedSecret,
    ] {
        assert!(
            kinds.contains(kind.as_str()),
            "{EXAMPLE_PATH} has no route with verify = \"{kind}\""
        );
    }
    assert!(
        config.routes.iter().any(|r| r.validation.is_some()),
        "{EXAMPLE_PATH} has no validation route"
    );
    let delivery = config.delivery.as_ref().expect("a [delivery] section");
    let refs = config
        .routes
        .iter()
        .flat_map(|r| r.token.iter().chain(&r.secrets))
        .chain(&delivery.secret);
    for secret in refs {
        let SecretRef::Env(name) = secret else {
            panic!("{EXAMPLE_PATH}: secret from {secret}: the example uses environment variables");
        };
        // The header comment lists every variable to set, one per line: `#   NAME   what`.
        assert!(
            EXAMPLE.lines().any(|line| line
                .strip_prefix("#   ")
                .is_some_and(|rest| rest.split_whitespace().next() == Some(name.as_str()))),
            "{EXAMPLE_PATH} uses {name} without listing it in its header comment"
        );
    }
}
