//! docs/configuration.md and filter-user/hookwall.example.toml against the config schema.
//!
//! The schema's key set is read from the config loader's own answer to an unknown key (it lists
//! the keys of the table it was found in), so a key added to or removed from the schema without
//! its row in the reference fails here, and so does a row for a key the loader does not read.

use std::{collections::BTreeSet, path::Path};

use hookwall::config::{self, SecretRef, VerifyKind};

const REFERENCE: &str = include_str!("../../docs/configuration.md");
const EXAMPLE: &str = include_str!("../../filter-user/hookwall.example.toml");
const EXAMPLE_PATH: &str = "filter-user/hookwall.example.toml";

/// A key no table has, far enough from every real key that no suggestion replaces the list.
const PROBE: &str = "zzzzzzzzzzzzzzzzzzzzzzzz";
/// What precedes the list of a table's keys in the unknown-key message.
const KEYS_HERE: &str = "the keys here are: ";

/// The first column of every table row of the reference that is a key in backticks.
fn documented_keys() -> Vec<String> {
    REFERENCE
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("` |").map(|(key, _)| key.to_owned()))
        .collect()
}

/// One step of a table path: its name and whether it is an array of tables (`[[name]]`).
type Step = (String, bool);

/// The keys the loader accepts in the table at `path`, or `None` if no table is there (a value
/// key: the probe then fails on the value's type, not as an unknown key).
fn keys_of(path: &[Step]) -> Option<Vec<String>> {
    let mut text = String::new();
    for depth in 1..=path.len() {
        let dotted: Vec<&str> = path[..depth]
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        let (open, close) = if path[depth - 1].1 {
            ("[[", "]]")
        } else {
            ("[", "]")
        };
        // Array ancestors need their own header; the innermost table always does.
        if path[depth - 1].1 || depth == path.len() {
            text.push_str(&format!("{open}{}{close}\n", dotted.join(".")));
        }
    }
    text.push_str(&format!("{PROBE} = 1\n"));
    let errors = match config::parse(Path::new("probe.toml"), &text) {
        Ok(_) => panic!("a config with key {PROBE} was accepted:\n{text}"),
        Err(errors) => errors.0,
    };
    errors
        .iter()
        .filter(|e| e.key.as_deref().is_some_and(|k| k.ends_with(PROBE)))
        .find_map(|e| e.message.split_once(KEYS_HERE))
        .map(|(_, list)| list.split(", ").map(str::to_owned).collect())
}

/// Every value key of the schema below `path`, written as the reference writes them
/// (`server.limits.rate_per_second`, `route[].validation.url`).
fn schema_keys(path: &mut Vec<Step>, found: &mut BTreeSet<String>) {
    let keys = keys_of(path).unwrap_or_else(|| panic!("no table at {path:?}"));
    for key in keys {
        let mut as_table = None;
        for is_array in [false, true] {
            path.push((key.clone(), is_array));
            if keys_of(path).is_some() {
                as_table = Some(is_array);
            }
            path.pop();
            if as_table.is_some() {
                break;
            }
        }
        match as_table {
            Some(is_array) => {
                path.push((key, is_array));
                schema_keys(path, found);
                path.pop();
            }
            None => {
                let mut written = String::new();
                for (name, is_array) in path.iter() {
                    written.push_str(name);
                    written.push_str(if *is_array { "[]." } else { "." });
                }
                written.push_str(&key);
                found.insert(written);
            }
        }
    }
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
    let mut schema = BTreeSet::new();
    schema_keys(&mut Vec::new(), &mut schema);
    // The probe itself must see the schema, or the comparison below proves nothing.
    for key in [
        "filter.mode",
        "server.limits.rate_per_second",
        "route[].verify",
        "route[].validation.on_failure",
        "delivery.nats.url",
    ] {
        assert!(schema.contains(key), "the probe missed {key}: {schema:?}");
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
