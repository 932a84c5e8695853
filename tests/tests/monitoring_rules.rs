//! The monitoring files in contrib/ checked with Prometheus's own tool and against each other:
//! `promtool check rules` on both rule files, `promtool test rules` on the unit tests, every
//! alert tested firing and quiet, labelled and explained in docs/operations.md, every recording
//! rule used, and the dashboard importable with every panel saying what it answers.
//!
//! Needs `promtool` (`cargo xtask setup`), not root:
//! `cargo test -p hookwall-tests --test monitoring_rules`.
//! The expressions are run against a live server in `e2e_monitoring.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Output,
};

use hookwall_tests::monitoring::{
    RULE_FILES, Rule, alert_cases, anchors, dashboard, panels, prometheus_file, promtool, queries,
    referenced_names, rules, unit_test_files,
};

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alerts() -> Vec<Rule> {
    rules("alerts.yml")
        .into_iter()
        .filter(|r| r.kind == "alert")
        .collect()
}

#[test]
fn promtool_accepts_both_rule_files() {
    for file in RULE_FILES {
        let out = promtool()
            .args(["check", "rules"])
            .arg(prometheus_file(file))
            .output()
            .expect("running promtool check rules");
        assert!(
            out.status.success(),
            "promtool check rules {file}:\n{}",
            output_text(&out)
        );
    }
    // The two files are what they say: recording rules in one, alerts in the other.
    assert!(rules("recording.yml").iter().all(|r| r.kind == "record"));
    assert!(rules("alerts.yml").iter().all(|r| r.kind == "alert"));
}

#[test]
fn promtool_unit_tests_pass() {
    let files = unit_test_files();
    assert!(
        !files.is_empty(),
        "no unit tests in contrib/prometheus/tests"
    );
    let out = promtool()
        .args(["test", "rules"])
        .args(&files)
        .output()
        .expect("running promtool test rules");
    assert!(
        out.status.success(),
        "promtool test rules {files:?}:\n{}",
        output_text(&out)
    );
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let cases = alert_cases();
    let names: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    let mut missing = Vec::new();
    for name in &names {
        for (firing, what) in [(true, "firing"), (false, "not firing")] {
            if !cases
                .iter()
                .any(|c| &c.alertname == name && c.firing == firing)
            {
                missing.push(format!("{name}: no case expecting it {what}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "alerts in contrib/prometheus/alerts.yml without a test in contrib/prometheus/tests:\n{}",
        missing.join("\n")
    );
    // A case naming an alert that does not exist passes vacuously in promtool: refuse it.
    let unknown: Vec<String> = cases
        .iter()
        .filter(|c| !names.contains(&c.alertname))
        .map(|c| format!("{} at {}: {}", c.file, c.eval_time, c.alertname))
        .collect();
    assert!(
        unknown.is_empty(),
        "test cases for alerts that alerts.yml does not have:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_entry() {
    let operations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let headings = anchors(&operations);
    let mut problems = Vec::new();
    for alert in alerts() {
        let severity = alert.labels.get("severity").map(String::as_str);
        if !matches!(severity, Some("page" | "ticket")) {
            problems.push(format!(
                "{}: severity {severity:?}, not page or ticket",
                alert.name
            ));
        }
        for key in ["summary", "description", "runbook"] {
            if alert
                .annotations
                .get(key)
                .is_none_or(|v| v.trim().is_empty())
            {
                problems.push(format!("{}: no {key} annotation", alert.name));
            }
        }
        if let Some(runbook) = alert.annotations.get("runbook") {
            match runbook.strip_prefix("docs/operations.md#") {
                Some(anchor) if headings.contains(anchor) => {}
                _ => problems.push(format!(
                    "{}: runbook {runbook:?} is not a heading of docs/operations.md",
                    alert.name
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn recording_rules_are_named_by_convention_and_used() {
    let recorded = rules("recording.yml");
    let mut problems = Vec::new();
    // level:metric:operations, the metric hookwall's (without `_total`: a rate is no counter).
    for rule in &recorded {
        let parts: Vec<&str> = rule.name.split(':').collect();
        let ok = parts.len() == 3
            && parts.iter().all(|p| !p.is_empty())
            && parts[1].starts_with("hookwall_")
            && !parts[1].ends_with("_total");
        if !ok {
            problems.push(format!(
                "{}: not level:hookwall_metric:operations",
                rule.name
            ));
        }
    }
    // Every recorded series is read by an alert, the dashboard, or a later recording rule.
    let mut readers: Vec<String> = alerts().into_iter().map(|a| a.expr).collect();
    readers.extend(queries(&dashboard()).into_iter().map(|q| q.expr));
    readers.extend(recorded.iter().map(|r| r.expr.clone()));
    let read: BTreeSet<String> = readers.iter().flat_map(|e| referenced_names(e)).collect();
    for rule in &recorded {
        if !read.contains(&rule.name) {
            problems.push(format!(
                "{}: recorded but read by no alert, panel or rule",
                rule.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_dashboard_is_importable_and_every_panel_says_what_it_answers() {
    let dash = dashboard();
    let mut problems = Vec::new();
    if dash["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        problems.push(format!(
            "schemaVersion {} (Grafana 10 and later expect 36 or more)",
            dash["schemaVersion"]
        ));
    }
    if dash["uid"].as_str().is_none_or(str::is_empty) {
        problems.push("no uid".to_owned());
    }
    let vars: BTreeMap<&str, &serde_json::Value> = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(|n| (n, v)))
        .collect();
    match vars.get("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push("no `datasource` variable of type datasource, query prometheus".into()),
    }
    match vars.get("instance") {
        Some(v) if v["type"] == "query" => {}
        _ => problems.push("no `instance` query variable".into()),
    }
    let mut ids = BTreeSet::new();
    let mut rows = Vec::new();
    for panel in panels(&dash) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if !ids.insert(panel["id"].as_u64()) {
            problems.push(format!("panel {title:?}: id {} used twice", panel["id"]));
        }
        if panel["type"] == "row" {
            rows.push(title);
            continue;
        }
        let description = panel["description"].as_str().unwrap_or_default();
        if !description.contains('?') {
            problems.push(format!(
                "panel {title:?}: its description does not ask the question it answers"
            ));
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "panel {title:?}: datasource is not the `datasource` variable"
            ));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?}: no query"));
        }
        for target in &targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if target["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "panel {title:?}: a query's datasource is not the `datasource` variable"
                ));
            }
            // The instance picker must narrow every query, or a panel shows every host.
            if !expr.contains(r#"instance=~"$instance""#) {
                problems.push(format!(
                    "panel {title:?}: {expr:?} ignores the instance variable"
                ));
            }
        }
    }
    let questions = [
        "Is it protecting?",
        "What is it dropping and why?",
        "Are callbacks arriving, refused, delivered?",
        "How old is the oldest undelivered event?",
        "Is the certificate about to expire?",
    ];
    if rows != questions {
        problems.push(format!(
            "rows are {rows:?}, expected the five questions {questions:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
