//! `deploy/grafana/vigil.json` is a dashboard Grafana imports, and it asks only for metrics vigil
//! exports: a renamed metric would otherwise leave a panel silently empty.

mod common;

use common::TestDaemon;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/vigil.json");

/// A daemon that has run a playbook (with a budget and a cooldown), stored intents and armed an
/// escalation flag, so that labelled families have series too.
const CONFIG: &str = r#"
[budgets.nightly]
seconds = 60

[escalation]
threshold = 2
window = "24h"
flag_ttl = "4h"

[playbooks.note]
on = "trigger_note"
cooldown = "1h"
budget = "nightly"
steps = [{ run = ["sh", "-c", "echo ran > {dir}/ran"] }]
"#;

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("valid JSON")
}

/// Every panel, rows included (a collapsed row keeps its panels inside it).
fn panels(d: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        all.push(p);
        if let Some(inner) = p["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// Every PromQL query of the dashboard: panel targets and template variable queries.
fn queries(d: &Value) -> Vec<String> {
    let mut q: Vec<String> = panels(d)
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| t["expr"].as_str().expect("a target has expr").to_string())
        .collect();
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            q.push(v["definition"].as_str().unwrap().to_string());
        }
    }
    q
}

/// The metric names a query selects: `vigil_*` identifiers outside string literals (label values
/// such as `family="vigil_events_total"` name no series of their own).
fn vigil_names(query: &str) -> Vec<String> {
    let mut outside = String::new();
    let (mut quote, mut escaped) = (None, false);
    for c in query.chars() {
        match quote {
            None if matches!(c, '"' | '\'' | '`') => {
                quote = Some(c);
                outside.push(' ');
            }
            None => outside.push(c),
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
        }
    }
    let mut names = Vec::new();
    let mut rest = outside.as_str();
    while let Some(at) = rest.find("vigil_") {
        let start_ok = at == 0 || !is_name_char(rest[..at].chars().last().unwrap());
        let len = rest[at..]
            .find(|c: char| !is_name_char(c))
            .unwrap_or(rest.len() - at);
        if start_ok {
            names.push(rest[at..at + len].to_string());
        }
        rest = &rest[at + len..];
    }
    names
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The sample names `/metrics` can have: every sample line's name, and from each `# TYPE` line
/// the names of its type (so a family with no series yet still counts).
fn exported(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            match kind {
                "counter" => {
                    names.insert(format!("{}_total", name.trim_end_matches("_total")));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_one_vigil_exports() {
    let d = TestDaemon::start(CONFIG).await;
    for _ in 0..2 {
        let r = d
            .post("/api/symptoms", &json!({"kind": "vllm_oom", "meta": {}}))
            .await;
        assert_eq!(r.status(), 200);
    }
    d.post_event("disk_note", json!({})).await;
    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": "trigger_note", "priority": 5, "reason": "grafana"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    d.wait_until("the run is counted", || {
        d.app.metrics.playbook_runs_total.total() == 1.0
    })
    .await;
    let text = d.get_text("/metrics").await;
    // The run's duration went into the histogram, with its buckets.
    assert!(
        text.contains("vigil_playbook_run_duration_seconds_count{playbook=\"note\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "vigil_playbook_run_duration_seconds_bucket{playbook=\"note\",le=\"+Inf\"} 1\n"
        ),
        "{text}"
    );
    common::promtool_check_metrics(&text);
    let names = exported(&text);
    d.stop().await;

    let dash = dashboard();
    let mut used = BTreeSet::new();
    for q in queries(&dash) {
        let found = vigil_names(&q);
        assert!(
            !found.is_empty() || q.contains("up{"),
            "query selects no vigil metric: {q}"
        );
        used.extend(found);
    }
    let unknown: Vec<_> = used.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics vigil does not export: {unknown:?}\nexported: {names:?}"
    );
    // The dashboard covers what the issue asks for.
    for must in [
        "vigil_budget_seconds_remaining",
        "vigil_cooldown_seconds",
        "vigil_escalation_flag",
        "vigil_playbook_runs_total",
        "vigil_playbook_run_duration_seconds_bucket",
        "vigil_invariant_state",
        "vigil_events_total",
        "vigil_intents_total",
        "vigil_source_up",
    ] {
        assert!(used.contains(must), "no panel shows {must}");
    }
}

#[test]
fn the_dashboard_is_valid_dashboard_json() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
    assert!(!d["title"].as_str().expect("title").is_empty());
    assert!(d["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string());
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mut ids = HashSet::new();
    let all = panels(&d);
    assert!(all.len() > 10);
    for p in &all {
        let title = p["title"].as_str().expect("a panel has a title");
        let id = p["id"].as_u64().expect("a panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} ({title}) is not unique");
        let grid = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(grid[k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the 24-column grid"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(p["type"].is_string(), "{title}: type");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let ds = p["datasource"]["uid"].as_str().unwrap();
        assert!(
            ds.strip_prefix("${")
                .and_then(|v| v.strip_suffix('}'))
                .is_some_and(|v| vars.contains(&v)),
            "{title}: datasource {ds} is no dashboard variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = HashSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId repeated"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: a target without expr"
            );
        }
    }
}

/// Prometheus parses every query: each becomes a recording rule that `promtool check rules`
/// reads, with Grafana's variables given values.
#[test]
fn every_dashboard_query_parses_as_promql() {
    let d = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries(&d).iter().enumerate() {
        if q.starts_with("label_values(") {
            continue; // Grafana's own function, not PromQL
        }
        let expr = q
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian package prometheus; scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn names_are_read_outside_string_literals() {
    assert_eq!(
        vigil_names(r#"sum by (f) (increase(vigil_x_total{family="vigil_y_total"}[1h]))"#),
        ["vigil_x_total"]
    );
    assert_eq!(
        vigil_names("a_vigil_b + vigil_c:d / vigil_e"),
        ["vigil_c:d", "vigil_e"]
    );
}
