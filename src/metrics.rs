//! Prometheus exposition. A small registry of labelled families rendered in the text format;
//! metric names start with `vigil_`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Family {
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self::new(name, help, "counter", labels)
    }

    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self::new(name, help, "gauge", labels)
    }

    const fn new(
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn add(&self, labels: &[&str], v: f64) {
        debug_assert_eq!(labels.len(), self.labels.len(), "{}", self.name);
        let mut values = self.values.lock().unwrap();
        // Look up by slice first so the hot path allocates only for a new series.
        match values
            .iter_mut()
            .find(|(k, _)| k.iter().map(String::as_str).eq(labels.iter().copied()))
        {
            Some((_, x)) => *x += v,
            None => {
                values.insert(labels.iter().map(|s| s.to_string()).collect(), v);
            }
        }
    }

    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    pub fn set(&self, labels: &[&str], v: f64) {
        self.values
            .lock()
            .unwrap()
            .insert(labels.iter().map(|s| s.to_string()).collect(), v);
    }

    pub fn get(&self, labels: &[&str]) -> f64 {
        let values = self.values.lock().unwrap();
        values
            .iter()
            .find(|(k, _)| k.iter().map(String::as_str).eq(labels.iter().copied()))
            .map_or(0.0, |(_, v)| *v)
    }

    /// Sum over every series.
    pub fn total(&self) -> f64 {
        self.values.lock().unwrap().values().sum()
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, v) in self.values.lock().unwrap().iter() {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in self.labels.iter().zip(labels).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let escaped = val
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{k}=\"{escaped}\"");
                }
                out.push('}');
            }
            let _ = writeln!(out, " {v}");
        }
    }
}

/// Every metric vigil exports.
pub struct Metrics {
    pub events_total: Family,
    pub events_dropped_total: Family,
    pub intents_total: Family,
    pub source_up: Family,
    pub lines_truncated_total: Family,
    pub inbox_rejected_total: Family,
    pub symptoms_total: Family,
    pub escalation_flag: Family,
    pub budget_seconds_remaining: Family,
    pub cooldown_seconds: Family,
    pub playbook_runs_total: Family,
    pub gate_denials_total: Family,
    pub restore_failures_total: Family,
    pub invariant_state: Family,
    pub invariant_violations: Family,
    pub invariant_checks_total: Family,
    pub invariant_cycle_duration_seconds: Family,
    pub snapshot_source_up: Family,
    pub invariant_alerts_total: Family,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events_total: Family::counter(
                "vigil_events_total",
                "Events received, by source and type.",
                &["source", "type"],
            ),
            events_dropped_total: Family::counter(
                "vigil_events_dropped_total",
                "Events dropped, by reason (duplicate, queue_full).",
                &["reason"],
            ),
            intents_total: Family::counter(
                "vigil_intents_total",
                "Intents stored, by type.",
                &["intent_type"],
            ),
            source_up: Family::gauge(
                "vigil_source_up",
                "1 when the source is working, 0 when it is down and being retried.",
                &["source"],
            ),
            lines_truncated_total: Family::counter(
                "vigil_lines_truncated_total",
                "Log lines cut at the source's max_line.",
                &["source"],
            ),
            inbox_rejected_total: Family::counter(
                "vigil_inbox_rejected_total",
                "Inbox files that failed to parse or verify.",
                &[],
            ),
            symptoms_total: Family::counter(
                "vigil_symptoms_total",
                "Symptoms recorded, by kind.",
                &["kind"],
            ),
            escalation_flag: Family::gauge(
                "vigil_escalation_flag",
                "1 while the escalation flag of the kind is armed.",
                &["kind"],
            ),
            budget_seconds_remaining: Family::gauge(
                "vigil_budget_seconds_remaining",
                "Downtime budget left for the current or next window day.",
                &["budget"],
            ),
            cooldown_seconds: Family::gauge(
                "vigil_cooldown_seconds",
                "Seconds until the playbook's cooldown allows another run.",
                &["playbook"],
            ),
            playbook_runs_total: Family::counter(
                "vigil_playbook_runs_total",
                "Playbook runs, by result and mode.",
                &["playbook", "result", "mode"],
            ),
            gate_denials_total: Family::counter(
                "vigil_gate_denials_total",
                "Intents denied, by the gate that said no.",
                &["gate"],
            ),
            restore_failures_total: Family::counter(
                "vigil_restore_failures_total",
                "Runs that did not restore production within the restore SLA.",
                &["playbook"],
            ),
            invariant_state: Family::gauge(
                "vigil_invariant_state",
                "1 when the invariant is red, 0 when green.",
                &["invariant", "severity"],
            ),
            invariant_violations: Family::gauge(
                "vigil_invariant_violations",
                "Violations of the invariant in the last cycle that checked it.",
                &["invariant"],
            ),
            invariant_checks_total: Family::counter(
                "vigil_invariant_checks_total",
                "Invariant checks, by result (green, red, skipped, error).",
                &["invariant", "result"],
            ),
            invariant_cycle_duration_seconds: Family::gauge(
                "vigil_invariant_cycle_duration_seconds",
                "Duration of the last invariant cycle (collection and evaluation).",
                &[],
            ),
            snapshot_source_up: Family::gauge(
                "vigil_collector_up",
                "1 when the snapshot collector read its source in the last cycle.",
                &["source"],
            ),
            invariant_alerts_total: Family::counter(
                "vigil_invariant_alerts_total",
                "Invariant alert deliveries, by result (sent, failed).",
                &["result"],
            ),
        }
    }
}

impl Metrics {
    fn families(&self) -> [&Family; 19] {
        [
            &self.events_total,
            &self.events_dropped_total,
            &self.intents_total,
            &self.source_up,
            &self.lines_truncated_total,
            &self.inbox_rejected_total,
            &self.symptoms_total,
            &self.escalation_flag,
            &self.budget_seconds_remaining,
            &self.cooldown_seconds,
            &self.playbook_runs_total,
            &self.gate_denials_total,
            &self.restore_failures_total,
            &self.invariant_state,
            &self.invariant_violations,
            &self.invariant_checks_total,
            &self.invariant_cycle_duration_seconds,
            &self.snapshot_source_up,
            &self.invariant_alerts_total,
        ]
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in self.families() {
            f.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format_with_escaped_labels() {
        let m = Metrics::default();
        m.events_total.inc(&["log", "gpu_oom"]);
        m.events_total.inc(&["log", "gpu_oom"]);
        m.source_up.set(&["we\"ird"], 1.0);
        let text = m.render();
        assert!(
            text.contains("vigil_events_total{source=\"log\",type=\"gpu_oom\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_source_up{source=\"we\\\"ird\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE vigil_events_total counter"));
    }
}
