//! The monitoring files in `contrib/` as the tests read them: the Grafana dashboard
//! (`contrib/grafana/hookwall.json`), the Prometheus rule files (`contrib/prometheus/*.yml`) and
//! their `promtool` unit tests (`contrib/prometheus/tests/*.yml`).
//!
//! - [`rules`]: every recording and alerting rule of a rule file, with its expression;
//! - [`alert_cases`]: every `alert_rule_test` case of the unit tests, and whether it expects the
//!   alert firing;
//! - [`dashboard`], [`queries`]: the dashboard and every PromQL expression in it (panel targets
//!   and the variables' queries), with [`substitute`] for Grafana's variables;
//! - [`referenced_names`]: the metric names an expression reads;
//! - [`promtool`]: the command, with the hint to install it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_json::Value;

/// The repository's `contrib/` directory.
#[must_use]
pub fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .join("contrib")
}

/// `contrib/prometheus/NAME`.
#[must_use]
pub fn prometheus_file(name: &str) -> PathBuf {
    contrib().join("prometheus").join(name)
}

/// The rule files the dashboard and the alerts need, in the order Prometheus should load them.
pub const RULE_FILES: [&str; 2] = ["recording.yml", "alerts.yml"];

/// The `promtool` unit test files, sorted.
///
/// # Panics
/// If the directory cannot be read.
#[must_use]
pub fn unit_test_files() -> Vec<PathBuf> {
    let dir = prometheus_file("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    files
}

/// A `promtool ARGS` command.
///
/// # Panics
/// If `promtool` is not installed; the message says how to install it.
#[must_use]
pub fn promtool() -> Command {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("promtool").is_file()));
    assert!(
        found,
        "promtool is not installed: run `cargo xtask setup` (it installs Debian's prometheus)"
    );
    Command::new("promtool")
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    record: Option<String>,
    alert: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// One rule of a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The group it is in.
    pub group: String,
    /// `record` or `alert`.
    pub kind: &'static str,
    /// The recorded metric's or the alert's name.
    pub name: String,
    /// Its PromQL expression.
    pub expr: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations (alerts only).
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// How failure messages name it: `alert HookwallTargetDown (alerts.yml)`.
    #[must_use]
    pub fn describe(&self, file: &str) -> String {
        format!("{} {} ({file})", self.kind, self.name)
    }
}

/// Every rule of `contrib/prometheus/FILE`, in order.
///
/// # Panics
/// If the file cannot be read or is not a rule file (each rule needs `record` or `alert`).
#[must_use]
pub fn rules(file: &str) -> Vec<Rule> {
    let path = prometheus_file(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let parsed: RuleFile = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a rule file: {e}", path.display()));
    let mut out = Vec::new();
    for group in parsed.groups {
        for rule in group.rules {
            let (kind, name) = match (rule.record, rule.alert) {
                (Some(name), None) => ("record", name),
                (None, Some(name)) => ("alert", name),
                _ => panic!(
                    "{}: a rule in group {} needs exactly one of record and alert",
                    path.display(),
                    group.name
                ),
            };
            out.push(Rule {
                group: group.name.clone(),
                kind,
                name,
                expr: rule.expr,
                labels: rule.labels,
                annotations: rule.annotations,
            });
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct UnitTestFile {
    tests: Vec<UnitTestGroup>,
}

#[derive(Debug, Deserialize)]
struct UnitTestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertRuleTest>,
}

#[derive(Debug, Deserialize)]
struct AlertRuleTest {
    eval_time: String,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_norway::Value>,
}

/// One `alert_rule_test` case of a `promtool` unit test file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertCase {
    /// The file's name.
    pub file: String,
    /// The alert it checks.
    pub alertname: String,
    /// When, as written (`5m`).
    pub eval_time: String,
    /// Whether it expects the alert firing (some `exp_alerts`) or not (none).
    pub firing: bool,
}

/// Every `alert_rule_test` case of every unit test file.
///
/// # Panics
/// If a file cannot be read or parsed.
#[must_use]
pub fn alert_cases() -> Vec<AlertCase> {
    let mut out = Vec::new();
    for path in unit_test_files() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let parsed: UnitTestFile = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a promtool test file: {e}", path.display()));
        let file = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        for group in parsed.tests {
            for case in group.alert_rule_test {
                out.push(AlertCase {
                    file: file.clone(),
                    alertname: case.alertname,
                    eval_time: case.eval_time,
                    firing: !case.exp_alerts.is_empty(),
                });
            }
        }
    }
    out
}

/// The dashboard, parsed.
///
/// # Panics
/// If it cannot be read or is not JSON.
#[must_use]
pub fn dashboard() -> Value {
    let path = contrib().join("grafana").join("hookwall.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The panels of the dashboard, rows' nested panels included (a collapsed row holds its own).
#[must_use]
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One PromQL expression of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Where it is: `panel "Target up" (A)` or `variable instance`.
    pub place: String,
    /// The expression as written, Grafana's variables unsubstituted.
    pub expr: String,
}

/// Every PromQL expression of the dashboard: each panel target's, and each query variable's
/// series selector (what `label_values(SELECTOR, label)` reads).
#[must_use]
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(Query {
                    place: format!(
                        "panel {title:?} ({})",
                        target["refId"].as_str().unwrap_or("?")
                    ),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let definition = var["query"]["query"]
            .as_str()
            .or_else(|| var["definition"].as_str())
            .unwrap_or_default();
        if let Some(selector) = label_values_selector(definition) {
            out.push(Query {
                place: format!("variable {}", var["name"].as_str().unwrap_or("?")),
                expr: selector.to_owned(),
            });
        }
    }
    out
}

/// The series selector of a Grafana `label_values(SELECTOR, label)` query, if it has one.
#[must_use]
pub fn label_values_selector(query: &str) -> Option<&str> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    // The label is the last argument; a selector may hold commas between its braces.
    let (selector, _label) = inner.rsplit_once(',')?;
    let selector = selector.trim();
    (!selector.is_empty()).then_some(selector)
}

/// What Grafana's variables stand for when a test runs a dashboard expression itself.
#[derive(Debug, Clone)]
pub struct Variables {
    /// `$job`.
    pub job: String,
    /// `$instance` (a regex: the dashboard matches it with `=~`).
    pub instance: String,
}

/// `expr` with Grafana's variables replaced as Grafana would: the dashboard's own (`$job`,
/// `$instance`, in `$x` and `${x}` form) and the built-in intervals (`$__rate_interval`,
/// `$__interval`, `$__range`, with values that suit a test's minute of data).
///
/// # Panics
/// If a `$` remains that this does not know: the dashboard uses a variable the tests cannot
/// give a value.
#[must_use]
pub fn substitute(expr: &str, vars: &Variables) -> String {
    // Longest names first: `$__range` must not eat the start of `$__range_s`.
    let table: [(&str, &str); 10] = [
        ("${__rate_interval}", "1m"),
        ("$__rate_interval", "1m"),
        ("${__interval}", "15s"),
        ("$__interval", "15s"),
        ("${__range}", "5m"),
        ("$__range", "5m"),
        ("${instance}", &vars.instance),
        ("$instance", &vars.instance),
        ("${job}", &vars.job),
        ("$job", &vars.job),
    ];
    let mut out = expr.to_owned();
    for (name, value) in table {
        out = out.replace(name, value);
    }
    assert!(
        !out.contains('$'),
        "{expr:?} uses a Grafana variable the tests do not know: {out:?}"
    );
    out
}

/// The metric names `expr` reads: every identifier outside string literals that is a metric of
/// hookwall (`hookwall_...`), a recording rule's output (`level:hookwall_...:operations`) or
/// Prometheus's own `up`. Function names, label names, keywords and durations are not
/// metric names and are left out by the same rule.
#[must_use]
pub fn referenced_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // Skip the string literal; `\` escapes the next character (not in raw strings).
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' && c != '`' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                        end = i + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &expr[start..end];
                if word.starts_with("hookwall_") || word.contains(":hookwall_") || word == "up" {
                    names.insert(word.to_owned());
                }
            }
            c if c.is_ascii_digit() => {
                // A number or duration (`5m`, `1e3`): its letters are not an identifier.
                while chars
                    .peek()
                    .is_some_and(|&(_, d)| d.is_ascii_alphanumeric() || d == '.')
                {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    names
}

/// The GitHub anchor of a Markdown heading's text: lower case, spaces to `-`, punctuation other
/// than `-` and `_` dropped (so `` `HookwallTargetDown` `` is `hookwalltargetdown`).
#[must_use]
pub fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading of the Markdown file at `path`.
///
/// # Panics
/// If it cannot be read.
#[must_use]
pub fn anchors(path: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start_matches('#');
            (rest.len() < line.len() && rest.starts_with(' ')).then(|| heading_anchor(rest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn names_are_metrics_and_recorded_series_not_functions_labels_or_strings() {
        assert_eq!(
            referenced_names(
                r#"sum by (job, instance, reason) (rate(hookwall_xdp_packets_total{verdict=~"drop|hookwall_x"}[5m]))"#
            ),
            set(&["hookwall_xdp_packets_total"])
        );
        assert_eq!(
            referenced_names(
                "instance_reason:hookwall_http_refusals:rate5m > 3 * instance_reason:hookwall_http_refusals:rate1h"
            ),
            set(&[
                "instance_reason:hookwall_http_refusals:rate1h",
                "instance_reason:hookwall_http_refusals:rate5m"
            ])
        );
        assert_eq!(
            referenced_names(r#"absent(up{job="hookwall"}) or max_over_time(up[5m:1m]) > 1e3"#),
            set(&["up"])
        );
        assert_eq!(
            referenced_names(r#"count(x{a="say \"hookwall_no\""}) + hookwall_yes"#),
            set(&["hookwall_yes"])
        );
        assert!(referenced_names("vector(1)").is_empty());
    }

    #[test]
    fn grafana_variables_are_replaced_and_unknown_ones_refused() {
        let vars = Variables {
            job: "hookwall".into(),
            instance: ".*".into(),
        };
        assert_eq!(
            substitute(
                r#"rate(x{job="$job", instance=~"${instance}"}[$__rate_interval]) + increase(y[$__range])"#,
                &vars
            ),
            r#"rate(x{job="hookwall", instance=~".*"}[1m]) + increase(y[5m])"#
        );
        let unknown = std::panic::catch_unwind(|| substitute("x{a=\"$other\"}", &vars));
        assert!(unknown.is_err(), "an unknown variable must not pass");
    }

    #[test]
    fn label_values_queries_give_their_selector() {
        assert_eq!(
            label_values_selector(r#"label_values(up{job="$job", a="b"}, instance)"#),
            Some(r#"up{job="$job", a="b"}"#)
        );
        assert_eq!(label_values_selector("label_values(job)"), None);
        assert_eq!(label_values_selector("query_result(up)"), None);
    }

    #[test]
    fn anchors_are_githubs() {
        assert_eq!(
            heading_anchor(" `HookwallTargetDown`"),
            "hookwalltargetdown"
        );
        assert_eq!(
            heading_anchor(" Dashboard and alerts"),
            "dashboard-and-alerts"
        );
        assert_eq!(heading_anchor(" `hookwall status`"), "hookwall-status");
    }
}
