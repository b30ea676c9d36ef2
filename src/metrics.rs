//! Prometheus exposition: every metric vigil exports, rendered by `prometheus-client` in the
//! Prometheus text format (0.0.4). Metric and label names are a contract (dashboards, the rules in
//! `deploy/`, tests): they start with `vigil_` and change only deliberately.
//!
//! A [`Family`] is one metric name with its labelled series. Updating a series is O(1): a read
//! lock on the family's own map, a hash lookup by the borrowed label values (no allocation) and
//! an atomic add; the write lock is taken once per new series. Label values that come from
//! outside (event sources and types from the API, intent types from the inbox and the API) could
//! otherwise add a series each, forever: past `[metrics] max_series` series a family counts new
//! label values under [`OTHER`], and `vigil_metric_series_dropped_total{family}` counts those
//! updates.

use crate::intent::IntentStatus;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The label value that stands for every value past a family's series limit.
pub const OTHER: &str = "other";

/// Series per family when `[metrics] max_series` is not set.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// The most labels a family has; `other` keys are built from a fixed array of this size.
const MAX_LABELS: usize = 4;

/// `[metrics]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Series per metric family; label values past it count under `other`.
    #[serde(deserialize_with = "positive")]
    pub max_series: NonZeroUsize,
}

fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NonZeroUsize, D::Error> {
    NonZeroUsize::new(usize::deserialize(d)?).ok_or_else(|| {
        serde::de::Error::custom(
            "max_series must be at least 1: it is how many series each metric family keeps",
        )
    })
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_series: NonZeroUsize::new(DEFAULT_MAX_SERIES).expect("not zero"),
        }
    }
}

/// One metric name and its series, keyed by label values in the order of the family's label
/// names. Cheap to clone: clones share the series.
#[derive(Clone)]
pub struct Family(Arc<Inner>);

struct Inner {
    name: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
    max_series: usize,
    series: RwLock<HashMap<Key, Value>>,
    /// Updates that went to the `other` series because the family was full.
    dropped: AtomicU64,
}

impl Family {
    fn new(
        name: &'static str,
        kind: MetricType,
        labels: &'static [&'static str],
        max_series: usize,
    ) -> Self {
        assert!(labels.len() <= MAX_LABELS, "{name}: too many labels");
        Self(Arc::new(Inner {
            name,
            kind,
            labels,
            max_series,
            series: RwLock::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }))
    }

    /// The exported name, such as `vigil_events_total`.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// Adds `v` to the series of `labels` (one value per label name, in order).
    pub fn add(&self, labels: &[&str], v: f64) {
        self.with(labels, |x| x.add(v));
    }

    /// Adds one to the series of `labels`.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    /// Sets the series of `labels` to `v`.
    pub fn set(&self, labels: &[&str], v: f64) {
        self.with(labels, |x| x.set(v));
    }

    /// The value of the series of `labels`; 0 when it has none.
    pub fn get(&self, labels: &[&str]) -> f64 {
        let series = self.read();
        series.get(&labels as &dyn Values).map_or(0.0, Value::get)
    }

    /// Sum over every series.
    pub fn total(&self) -> f64 {
        self.read().values().map(Value::get).sum()
    }

    /// How many series the family has (at most `max_series` + 1, the `other` series).
    pub fn series(&self) -> usize {
        self.read().len()
    }

    /// Updates counted under `other` because the family was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Value>> {
        // A panic while holding the lock cannot leave a value half-written (they are atomics).
        self.0.series.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the series of `labels`, or of `other` when the family is full.
    fn with(&self, labels: &[&str], f: impl FnOnce(&Value)) {
        debug_assert_eq!(labels.len(), self.0.labels.len(), "{}", self.0.name);
        let other = &[OTHER; MAX_LABELS][..labels.len()];
        {
            let series = self.read();
            if let Some(v) = series.get(&labels as &dyn Values) {
                return f(v);
            }
            // Full: a flood of new values stays on the read lock once `other` exists.
            if series.len() >= self.0.max_series {
                if let Some(v) = series.get(&other as &dyn Values) {
                    self.0.dropped.fetch_add(1, Ordering::Relaxed);
                    return f(v);
                }
            }
        }
        let mut series = self
            .0
            .series
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked again: another thread may have added series since the read lock was let go.
        let key = if series.contains_key(&labels as &dyn Values) || series.len() < self.0.max_series
        {
            labels
        } else {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            other
        };
        if let Some(v) = series.get(&key as &dyn Values) {
            return f(v);
        }
        f(series.entry(Key::from(key)).or_default());
    }
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.0.name)
            .field("series", &self.series())
            .finish()
    }
}

impl EncodeMetric for Family {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let series = self.read();
        // Sorted, so a reader (and a diff of two scrapes) finds a series where it expects it.
        let mut sorted: Vec<_> = series.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0 .0.cmp(&b.0 .0));
        for (key, value) in sorted {
            if key.0.is_empty() {
                encode_value(&mut encoder, self.0.kind, value.get())?;
                continue;
            }
            let pairs: Vec<(&str, &str)> = self.0.labels.iter().copied().zip(key.strs()).collect();
            encode_value(
                &mut encoder.encode_family(&pairs)?,
                self.0.kind,
                value.get(),
            )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.0.kind
    }
}

/// Whole numbers print as integers (`3`, not `3.0`), as Prometheus' own clients write them.
fn encode_value(encoder: &mut MetricEncoder, kind: MetricType, v: f64) -> fmt::Result {
    const EXACT: f64 = (1u64 << 53) as f64;
    let whole = v.fract() == 0.0 && v.abs() < EXACT;
    match kind {
        MetricType::Counter if whole && v >= 0.0 => {
            encoder.encode_counter::<NoLabelSet, _, u64>(&(v as u64), None)
        }
        MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, u64>(&v, None),
        _ if whole => encoder.encode_gauge(&(v as i64)),
        _ => encoder.encode_gauge(&v),
    }
}

/// `vigil_metric_series_dropped_total{family}`: read from the families when rendered, so the
/// hot path touches only the family's own atomic.
#[derive(Debug)]
struct SeriesDropped(Vec<Family>);

impl EncodeMetric for SeriesDropped {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        for f in &self.0 {
            let labels = [("family", f.name())];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&f.dropped(), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A series' value: an `f64` in an atomic, so updates under the read lock need no other lock.
#[derive(Default)]
struct Value(AtomicU64);

impl Value {
    fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Label values, owned: the map's key.
#[derive(PartialEq, Eq)]
struct Key(Box<[Box<str>]>);

impl Key {
    fn strs(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }
}

impl From<&[&str]> for Key {
    fn from(values: &[&str]) -> Self {
        Key(values.iter().map(|s| Box::from(*s)).collect())
    }
}

/// Label values either owned ([`Key`]) or borrowed (`&[&str]`), hashed and compared alike, so
/// the map is searched with the caller's `&[&str]` without building a `Key`.
trait Values {
    fn len(&self) -> usize;
    fn at(&self, i: usize) -> &str;
}

impl Values for Key {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn at(&self, i: usize) -> &str {
        &self.0[i]
    }
}

impl Values for &[&str] {
    fn len(&self) -> usize {
        <[&str]>::len(self)
    }
    fn at(&self, i: usize) -> &str {
        self[i]
    }
}

impl Hash for dyn Values + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_usize(self.len());
        for i in 0..self.len() {
            self.at(i).hash(h);
        }
    }
}

impl PartialEq for dyn Values + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| self.at(i) == other.at(i))
    }
}

impl Eq for dyn Values + '_ {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // The same hash as the borrowed form, which `Borrow` requires.
        (self as &dyn Values).hash(h)
    }
}

impl<'a> Borrow<dyn Values + 'a> for Key {
    fn borrow(&self) -> &(dyn Values + 'a) {
        self
    }
}

/// Upper bounds (seconds) of the run-duration buckets: a restart takes seconds, a canary with a
/// warm-up minutes, and a run past an hour is one to look at whatever it did.
pub const RUN_DURATION_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn run_duration_histogram() -> Histogram {
    Histogram::new(RUN_DURATION_BUCKETS)
}

/// One histogram per label values, for observations such as run durations. Unlike [`Family`]
/// it has no series limit: its label values come from the config (playbook names), which
/// bounds them. Cheap to clone: clones share the series.
#[derive(Clone, Debug)]
pub struct Histograms {
    name: &'static str,
    labels: &'static [&'static str],
    family: HistogramFamily,
}

type HistogramFamily = prometheus_client::metrics::family::Family<
    Vec<(&'static str, String)>,
    Histogram,
    fn() -> Histogram,
>;

impl Histograms {
    /// The exported name; the series are `NAME_bucket`, `NAME_sum` and `NAME_count`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Records one observation `v` (in the metric's unit, seconds for durations) in the series
    /// of `labels` (one value per label name, in order).
    pub fn observe(&self, labels: &[&str], v: f64) {
        debug_assert_eq!(labels.len(), self.labels.len(), "{}", self.name);
        self.family.get_or_create(&self.key(labels)).observe(v);
    }

    fn key(&self, labels: &[&str]) -> Vec<(&'static str, String)> {
        self.labels
            .iter()
            .copied()
            .zip(labels.iter().map(|v| v.to_string()))
            .collect()
    }
}

/// Every metric vigil exports. Each family is declared here and created (and registered) in
/// [`Metrics::new`], once.
pub struct Metrics {
    pub events_total: Family,
    pub events_dropped_total: Family,
    pub intents_total: Family,
    pub intents_by_status: Family,
    pub source_up: Family,
    pub source_degraded: Family,
    pub lines_truncated_total: Family,
    pub scrape_samples_invalid_total: Family,
    pub inbox_rejected_total: Family,
    pub symptoms_total: Family,
    pub escalation_flag: Family,
    pub budget_seconds_remaining: Family,
    pub cooldown_seconds: Family,
    pub playbook_runs_total: Family,
    pub gate_denials_total: Family,
    pub restore_failures_total: Family,
    pub playbook_run_duration_seconds: Histograms,
    pub invariant_state: Family,
    pub invariant_violations: Family,
    pub invariant_checks_total: Family,
    pub invariant_cycle_duration_seconds: Family,
    pub collector_up: Family,
    pub invariant_alerts_total: Family,
    pub degraded: Family,
    pub degraded_since_seconds: Family,
    pub stream_skipped_total: Family,
    pub canary_runs_total: Family,
    pub canary_duration_seconds: Histograms,
    pub canary_downtime_seconds_total: Family,
    pub canary_cooldown_seconds: Family,
    pub store_up: Family,
    pub store_outages_total: Family,
    pub store_outage_seconds_total: Family,
    pub inbox_deferred_total: Family,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&MetricsConfig::default())
    }
}

impl Metrics {
    pub fn new(config: &MetricsConfig) -> Self {
        let mut r = Families {
            registry: Registry::default(),
            max_series: config.max_series.get(),
            labelled: Vec::new(),
        };
        let m = Self {
            events_total: r.counter(
                "vigil_events_total",
                "Events received, by source and type.",
                &["source", "type"],
            ),
            events_dropped_total: r.counter(
                "vigil_events_dropped_total",
                "Events dropped, by reason (duplicate, queue_full).",
                &["reason"],
            ),
            intents_total: r.counter(
                "vigil_intents_total",
                "Intents stored, by type.",
                &["intent_type"],
            ),
            intents_by_status: r.gauge(
                "vigil_intents_by_status",
                "Intents in the store, by status (pending, running, done, ...).",
                &["status"],
            ),
            source_up: r.gauge(
                "vigil_source_up",
                "1 when the source is working, 0 when it is down and being retried.",
                &["source"],
            ),
            source_degraded: r.gauge(
                "vigil_source_degraded",
                "1 when the source works but degraded (for example watching by polling because inotify is used up).",
                &["source"],
            ),
            lines_truncated_total: r.counter(
                "vigil_lines_truncated_total",
                "Log lines cut at the source's max_line.",
                &["source"],
            ),
            scrape_samples_invalid_total: r.counter(
                "vigil_scrape_samples_invalid_total",
                "Lines of a scraped metrics page that could not be parsed, by source.",
                &["source"],
            ),
            inbox_rejected_total: r.counter(
                "vigil_inbox_rejected_total",
                "Inbox files that failed to parse or verify.",
                &[],
            ),
            symptoms_total: r.counter(
                "vigil_symptoms_total",
                "Symptoms recorded, by kind.",
                &["kind"],
            ),
            escalation_flag: r.gauge(
                "vigil_escalation_flag",
                "1 while the escalation flag of the kind is armed.",
                &["kind"],
            ),
            budget_seconds_remaining: r.gauge(
                "vigil_budget_seconds_remaining",
                "Downtime budget left for the current or next window day.",
                &["budget"],
            ),
            cooldown_seconds: r.gauge(
                "vigil_cooldown_seconds",
                "Seconds until the playbook's cooldown allows another run.",
                &["playbook"],
            ),
            playbook_runs_total: r.counter(
                "vigil_playbook_runs_total",
                "Playbook runs, by result and mode.",
                &["playbook", "result", "mode"],
            ),
            gate_denials_total: r.counter(
                "vigil_gate_denials_total",
                "Intents denied, by the gate that said no.",
                &["gate"],
            ),
            restore_failures_total: r.counter(
                "vigil_restore_failures_total",
                "Runs that did not restore production within the restore SLA.",
                &["playbook"],
            ),
            playbook_run_duration_seconds: r.histogram(
                "vigil_playbook_run_duration_seconds",
                "Duration of playbook runs, from start to their end (restored, failed or abandoned).",
                &["playbook"],
                run_duration_histogram,
            ),
            invariant_state: r.gauge(
                "vigil_invariant_state",
                "1 when the invariant is red, 0 when green.",
                &["invariant", "severity"],
            ),
            invariant_violations: r.gauge(
                "vigil_invariant_violations",
                "Violations of the invariant in the last cycle that checked it.",
                &["invariant"],
            ),
            invariant_checks_total: r.counter(
                "vigil_invariant_checks_total",
                "Invariant checks, by result (green, red, skipped, error).",
                &["invariant", "result"],
            ),
            invariant_cycle_duration_seconds: r.gauge(
                "vigil_invariant_cycle_duration_seconds",
                "Duration of the last invariant cycle (collection and evaluation).",
                &[],
            ),
            collector_up: r.gauge(
                "vigil_collector_up",
                "1 when the snapshot collector read its source in the last cycle.",
                &["source"],
            ),
            invariant_alerts_total: r.counter(
                "vigil_invariant_alerts_total",
                "Invariant alert deliveries, by result (sent, failed).",
                &["result"],
            ),
            degraded: r.gauge(
                "vigil_degraded",
                "1 while the supervised unit is disabled (exhausted, quarantined or failed over): the host runs degraded.",
                &["unit"],
            ),
            degraded_since_seconds: r.gauge(
                "vigil_degraded_since_seconds",
                "Unix time the unit was disabled at; 0 while it is not.",
                &["unit"],
            ),
            stream_skipped_total: r.counter(
                "vigil_stream_skipped_total",
                "Changes that clients of GET /api/stream (the dashboard) skipped because they read too slowly.",
                &[],
            ),
            canary_runs_total: r.counter(
                "vigil_canary_runs_total",
                "Canary runs, by result (promoted, rolled_back, denied, failed, restore_failed, predicted) and mode.",
                &["canary", "result", "mode"],
            ),
            canary_duration_seconds: r.histogram(
                "vigil_canary_duration_seconds",
                "Duration of canary runs, from start to production restored or the candidate stopped.",
                &["canary"],
                run_duration_histogram,
            ),
            canary_downtime_seconds_total: r.counter(
                "vigil_canary_downtime_seconds_total",
                "Production downtime spent by quiesced canary runs.",
                &["canary"],
            ),
            canary_cooldown_seconds: r.gauge(
                "vigil_canary_cooldown_seconds",
                "Seconds until the canary may take the quiesced path again (cooldown and window).",
                &["canary"],
            ),
            store_up: r.gauge(
                "vigil_store_up",
                "1 when the store (SQLite or PostgreSQL) takes what it is given, 0 while it is away.",
                &[],
            ),
            store_outages_total: r.counter(
                "vigil_store_outages_total",
                "Times the store went away (refused or could not be reached).",
                &[],
            ),
            store_outage_seconds_total: r.counter(
                "vigil_store_outage_seconds_total",
                "Seconds the store was away, counted when each outage ends.",
                &[],
            ),
            inbox_deferred_total: r.counter(
                "vigil_inbox_deferred_total",
                "Intents the daemon proposed while the store refused them, kept in the inbox until it is back.",
                &[],
            ),
            registry: r.finish(),
        };
        // The reasons are known: they start at 0, so the first drop is an increase (see above).
        for reason in ["duplicate", "queue_full"] {
            m.events_dropped_total.add(&[reason], 0.0);
        }
        m
    }

    /// Exports 0 for a configured playbook's counters that alerts watch with `increase()`, so
    /// the first restore failure after a start is an increase and not a new series.
    pub fn init_playbook(&self, playbook: &str) {
        self.restore_failures_total.add(&[playbook], 0.0);
    }

    /// Sets `vigil_intents_by_status` from counts by status name; a status missing from
    /// `counts` is set to 0, so a gauge never keeps a count that went away.
    pub fn set_intents_by_status(&self, counts: &BTreeMap<String, u64>) {
        for status in IntentStatus::ALL {
            let n = counts.get(status.as_str()).copied().unwrap_or(0);
            self.intents_by_status.set(&[status.as_str()], n as f64);
        }
    }

    /// Observes a run of `playbook` that started at `started_ms` and ends at `ended_ms` (both
    /// Unix milliseconds on vigil's clock) in `vigil_playbook_run_duration_seconds`.
    pub fn observe_run(&self, playbook: &str, started_ms: i64, ended_ms: i64) {
        let seconds = (ended_ms - started_ms).max(0) as f64 / 1000.0;
        self.playbook_run_duration_seconds
            .observe(&[playbook], seconds);
    }

    /// Every family in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Creates families and registers them as it goes, so a family cannot be declared and forgotten.
struct Families {
    registry: Registry,
    max_series: usize,
    /// The families that can overflow, for `vigil_metric_series_dropped_total`.
    labelled: Vec<Family>,
}

impl Families {
    fn counter(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &'static [&'static str],
    ) -> Family {
        self.add(name, help, labels, MetricType::Counter)
    }

    fn gauge(&mut self, name: &'static str, help: &str, labels: &'static [&'static str]) -> Family {
        self.add(name, help, labels, MetricType::Gauge)
    }

    fn histogram(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &'static [&'static str],
        new: fn() -> Histogram,
    ) -> Histograms {
        let family = HistogramFamily::new_with_constructor(new);
        self.register(name, help, MetricType::Histogram, family.clone());
        Histograms {
            name,
            labels,
            family,
        }
    }

    fn add(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &'static [&'static str],
        kind: MetricType,
    ) -> Family {
        let family = Family::new(name, kind, labels, self.max_series);
        self.register(name, help, kind, family.clone());
        if !labels.is_empty() {
            self.labelled.push(family.clone());
        } else if kind == MetricType::Counter {
            // Exported as 0 from the start: an alert on `increase()` sees the first count only
            // when the series existed before it (a series born at 1 has increased by nothing).
            family.add(&[], 0.0);
        }
        family
    }

    /// The registry appends `_total` to counters and a full stop to help texts: names and help
    /// are written here in full, as they are exported, and trimmed for it.
    fn register(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        metric: impl EncodeMetric + fmt::Debug + Send + Sync + 'static,
    ) {
        let name = match kind {
            MetricType::Counter => name.strip_suffix("_total").expect("counters end in _total"),
            _ => name,
        };
        self.registry
            .register(name, help.trim_end_matches('.'), metric);
    }

    fn finish(mut self) -> Registry {
        let dropped = SeriesDropped(std::mem::take(&mut self.labelled));
        self.register(
            "vigil_metric_series_dropped_total",
            "Updates counted under the label value \"other\" because the family had max_series series.",
            MetricType::Counter,
            dropped,
        );
        self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(n: usize) -> Metrics {
        Metrics::new(&MetricsConfig {
            max_series: NonZeroUsize::new(n).unwrap(),
        })
    }

    #[test]
    fn renders_text_format_with_escaped_labels() {
        let m = Metrics::default();
        m.events_total.inc(&["log", "gpu_oom"]);
        m.events_total.inc(&["log", "gpu_oom"]);
        m.source_up.set(&["we\"ird"], 1.0);
        m.budget_seconds_remaining.set(&["nightly"], 12.5);
        m.inbox_rejected_total.inc(&[]);
        let text = m.render();
        assert!(
            text.contains("vigil_events_total{source=\"log\",type=\"gpu_oom\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_source_up{source=\"we\\\"ird\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("vigil_budget_seconds_remaining{budget=\"nightly\"} 12.5\n"));
        assert!(text.contains("vigil_inbox_rejected_total 1\n"), "{text}");
        assert!(text.contains("# TYPE vigil_events_total counter"));
        assert!(text.contains("# HELP vigil_events_total Events received, by source and type.\n"));
        assert!(text.contains("# TYPE vigil_source_up gauge"));
    }

    #[test]
    fn run_durations_render_as_a_histogram() {
        let m = Metrics::default();
        m.observe_run("canary", 1_000, 4_500);
        m.observe_run("canary", 1_000, 1_000 + 7_200_000);
        let text = m.render();
        assert!(
            text.contains("# TYPE vigil_playbook_run_duration_seconds histogram\n"),
            "{text}"
        );
        let series = |s: &str| format!("vigil_playbook_run_duration_seconds_{s}\n");
        assert!(
            text.contains(&series("sum{playbook=\"canary\"} 7203.5")),
            "{text}"
        );
        assert!(
            text.contains(&series("count{playbook=\"canary\"} 2")),
            "{text}"
        );
        // 3.5 s is in the 5 s bucket; two hours only in +Inf.
        assert!(
            text.contains(&series("bucket{playbook=\"canary\",le=\"5\"} 1")),
            "{text}"
        );
        assert!(
            text.contains(&series("bucket{playbook=\"canary\",le=\"+Inf\"} 2")),
            "{text}"
        );
    }

    #[test]
    fn counters_alerts_watch_start_at_zero_and_statuses_that_went_away_read_zero() {
        let m = Metrics::default();
        let text = m.render();
        assert!(text.contains("vigil_inbox_rejected_total 0\n"), "{text}");
        assert!(text.contains("vigil_events_dropped_total{reason=\"queue_full\"} 0\n"));
        m.init_playbook("gpu");
        assert!(m
            .render()
            .contains("vigil_restore_failures_total{playbook=\"gpu\"} 0\n"));
        let mut counts = BTreeMap::from([("pending".to_string(), 3)]);
        m.set_intents_by_status(&counts);
        assert_eq!(m.intents_by_status.get(&["pending"]), 3.0);
        counts.clear();
        m.set_intents_by_status(&counts);
        assert_eq!(m.intents_by_status.get(&["pending"]), 0.0);
        assert_eq!(m.intents_by_status.series(), IntentStatus::ALL.len());
    }

    #[test]
    fn get_set_add_total() {
        let m = Metrics::default();
        assert_eq!(m.gate_denials_total.get(&["window"]), 0.0);
        m.gate_denials_total.inc(&["window"]);
        m.gate_denials_total.add(&["cooldown"], 2.0);
        assert_eq!(m.gate_denials_total.get(&["window"]), 1.0);
        assert_eq!(m.gate_denials_total.total(), 3.0);
        m.events_dropped_total.set(&["duplicate"], 7.0);
        m.events_dropped_total.set(&["duplicate"], 9.0);
        assert_eq!(m.events_dropped_total.get(&["duplicate"]), 9.0);
    }

    #[test]
    fn past_the_limit_new_values_count_under_other() {
        let m = limited(3);
        for i in 0..10 {
            m.events_total.inc(&["api", &format!("t{i}")]);
        }
        // An existing series keeps counting after the family is full.
        m.events_total.inc(&["api", "t0"]);
        assert_eq!(m.events_total.series(), 4);
        assert_eq!(m.events_total.get(&["api", "t0"]), 2.0);
        assert_eq!(m.events_total.get(&[OTHER, OTHER]), 7.0);
        assert_eq!(m.events_total.dropped(), 7);
        assert_eq!(m.events_total.total(), 11.0);
        let text = m.render();
        assert!(
            text.contains("vigil_events_total{source=\"other\",type=\"other\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_metric_series_dropped_total{family=\"vigil_events_total\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_metric_series_dropped_total{family=\"vigil_intents_total\"} 0\n")
        );
        // Families are bounded one by one.
        m.intents_total.inc(&["alert_x"]);
        assert_eq!(m.intents_total.get(&["alert_x"]), 1.0);
    }

    #[test]
    fn concurrent_updates_are_all_counted() {
        let m = Arc::new(limited(50));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        m.events_total
                            .inc(&["api", &format!("t{}", (i * 7 + t) % 100)]);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(m.events_total.total(), 4000.0);
        assert!(m.events_total.series() <= 51);
    }
}
