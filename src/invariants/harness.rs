//! One cycle: collect concurrently → snapshot → each invariant's query → violations, `for`,
//! state, transitions, alerts, metrics. One cycle at a time.

use super::alert::Delivery;
use super::collectors::{CollectorConfig, Cycle, Table};
use super::config::{Invariant, InvariantsConfig};
use super::snapshot::{explain, is_full, Snapshot};
use crate::audit::{Audit, AuditEntry};
use crate::clock::{rfc3339_ms, SharedClock};
use crate::event::{Data, Event};
use crate::metrics::Metrics;
use crate::store::{InvariantState, InvariantStore, PendingAlert, StoreError};
use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::task::JoinHandle;

/// Lists longer than this in an observed state are cut, with a count of the rest.
pub const LIST_CAP: usize = 20;
/// Text longer than this is cut.
pub const TEXT_CAP: usize = 500;
/// Violations kept per invariant and cycle.
pub const VIOLATIONS_CAP: usize = 100;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CycleResult {
    pub checks_run: Vec<String>,
    pub skipped: Vec<Skipped>,
    pub sources_unavailable: Vec<Unavailable>,
    pub violations: Vec<Violation>,
    pub transitions: Vec<Transition>,
    /// What collectors left out of their tables, and why (a Redis key of another type than
    /// its pattern reads); the rest of those tables was read and their invariants ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items_skipped: Vec<ItemSkipped>,
    pub cycle_duration_ms: u64,
    /// Collection and evaluation, separately (benchmarks).
    #[serde(skip)]
    pub collect_ms: f64,
    #[serde(skip)]
    pub eval_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub invariant_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ItemSkipped {
    pub collector: String,
    pub table: String,
    /// The item and why, like "agent:slots:a1:lock: not a zset".
    pub item: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unavailable {
    pub source: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Violation {
    pub invariant_id: String,
    pub name: String,
    pub severity: String,
    pub tier: String,
    pub observed_state: Map<String, Value>,
    pub signal_query: Option<String>,
    pub runbook: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transition {
    pub invariant_id: String,
    pub from: String,
    pub to: String,
    pub at: String,
    #[serde(skip)]
    pub at_ms: i64,
    #[serde(skip)]
    pub severity: String,
    #[serde(skip)]
    pub tier: String,
}

impl CycleResult {
    /// `invariant_red` / `invariant_green` events for the rule engine.
    pub fn events(&self) -> Vec<Event> {
        self.transitions
            .iter()
            .map(|t| {
                let mut d = Data::new();
                d.insert("invariant".into(), Value::from(t.invariant_id.clone()));
                d.insert("severity".into(), Value::from(t.severity.clone()));
                d.insert("tier".into(), Value::from(t.tier.clone()));
                d.insert("from".into(), Value::from(t.from.clone()));
                Event::new("invariants", format!("invariant_{}", t.to), t.at_ms, d)
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("a cycle is already running; wait for it to finish")]
    Busy,
    #[error("unknown invariant {0:?}; `vigil invariants list` shows the configured ones")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// A row of `vigil invariants list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub severity: String,
    pub state: String,
    pub since: Option<String>,
}

pub struct Harness {
    config: Arc<InvariantsConfig>,
    store: Arc<dyn InvariantStore>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    /// Transitions go to the audit trail (file and store).
    audit: Arc<Audit>,
    /// The previous snapshot; its lock is also the one-cycle-at-a-time lock.
    prev: tokio::sync::Mutex<Option<Snapshot>>,
    alerts: Mutex<Vec<JoinHandle<()>>>,
    http: reqwest::Client,
    host: String,
}

impl Harness {
    pub fn new(
        config: Arc<InvariantsConfig>,
        store: Arc<dyn InvariantStore>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        audit: Arc<Audit>,
    ) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Self {
            config,
            store,
            clock,
            metrics,
            audit,
            prev: tokio::sync::Mutex::new(None),
            alerts: Mutex::new(Vec::new()),
            http: crate::http::client(crate::http::DEFAULT_TIMEOUT),
            host,
        }
    }

    pub fn from_app(app: &crate::app::App) -> Result<Self, StoreError> {
        Ok(Self::new(
            Arc::new(app.config.invariants.clone()),
            app.store()?,
            app.clock.clone(),
            app.metrics.clone(),
            app.audit()?,
        ))
    }

    pub fn config(&self) -> &InvariantsConfig {
        &self.config
    }

    /// Runs a cycle, waiting for a running one to finish first.
    pub async fn run_cycle(&self, only: Option<&[String]>) -> Result<CycleResult, HarnessError> {
        let mut prev = self.prev.lock().await;
        self.cycle(&mut prev, only, None).await
    }

    /// Runs a cycle unless one is running (`Busy`).
    pub async fn try_run_cycle(
        &self,
        only: Option<&[String]>,
    ) -> Result<CycleResult, HarnessError> {
        let mut prev = self.prev.try_lock().map_err(|_| HarnessError::Busy)?;
        self.cycle(&mut prev, only, None).await
    }

    /// Collects every collector and writes the snapshot to a SQLite file.
    pub async fn write_snapshot(
        &self,
        path: &std::path::Path,
    ) -> Result<CycleResult, HarnessError> {
        let mut prev = self.prev.lock().await;
        self.cycle(&mut prev, Some(&[]), Some(path)).await
    }

    /// Waits for the alerts sent so far to be delivered or given up (tests, shutdown).
    pub async fn flush_alerts(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.alerts.lock().unwrap());
        for h in handles {
            let _ = h.await;
        }
    }

    /// Configured invariants with their stored state.
    pub fn list(&self) -> Result<Vec<Listed>, HarnessError> {
        let states = self.store.invariant_states()?;
        Ok(self
            .config
            .invariants
            .values()
            .map(|inv| {
                let s = states.get(&inv.id);
                Listed {
                    id: inv.id.clone(),
                    name: inv.name.clone(),
                    tier: inv.tier.clone(),
                    severity: inv.severity.as_str().into(),
                    state: s.map_or("unknown".into(), |s| s.state.clone()),
                    since: s.map(|s| rfc3339_ms(s.since_ms)),
                }
            })
            .collect())
    }

    async fn cycle(
        &self,
        prev: &mut Option<Snapshot>,
        only: Option<&[String]>,
        write_to: Option<&std::path::Path>,
    ) -> Result<CycleResult, HarnessError> {
        let started = Instant::now();
        let now_ms = self.clock.now_ms();
        let selected: Vec<Invariant> = match only {
            Some(ids) if write_to.is_none() => ids
                .iter()
                .map(|id| {
                    self.config
                        .invariants
                        .get(id)
                        .cloned()
                        .ok_or_else(|| HarnessError::Unknown(id.clone()))
                })
                .collect::<Result<_, _>>()?,
            _ if write_to.is_some() => Vec::new(),
            _ => self.config.invariants.values().cloned().collect(),
        };
        let needed: BTreeSet<String> = if write_to.is_some() {
            self.config.collectors.keys().cloned().collect()
        } else {
            selected
                .iter()
                .flat_map(|i| i.needs.iter().cloned())
                .collect()
        };

        // Collect, concurrently, each under its timeout.
        let max_mb = self.config.settings.snapshot_max_mb;
        let mut snap =
            Snapshot::create(now_ms, max_mb).map_err(|e| HarnessError::Snapshot(e.to_string()))?;
        let cx = Arc::new(Cycle {
            now_ms,
            snapshot_uri: snap.uri.clone(),
            snapshot_max_mb: max_mb,
            writer: Arc::default(),
        });
        let mut set = tokio::task::JoinSet::new();
        // Sources left unset on purpose (an empty `${VAR:-}`): skipped, not "unavailable".
        let mut unset: BTreeMap<String, String> = BTreeMap::new();
        for name in &needed {
            let Some(c) = self.config.collectors.get(name).cloned() else {
                continue;
            };
            if let Some(why) = c.unconfigured() {
                unset.insert(name.clone(), why);
                continue;
            }
            let name = name.clone();
            let limit = c.timeout().unwrap_or(self.config.settings.timeout.0);
            let cx = cx.clone();
            set.spawn(async move {
                let r = tokio::time::timeout(limit, c.collect(&name, &cx)).await;
                let r = match r {
                    Ok(Ok(t)) => {
                        if c.non_empty() && t.iter().all(Table::is_empty) {
                            Err("source blind: it returned no rows and is declared non_empty; check that it reads the right database or keys".to_string())
                        } else {
                            Ok(t)
                        }
                    }
                    Ok(Err(e)) => Err(e.0),
                    Err(_) => Err(format!("timed out after {}", crate::config::Dur(limit))),
                };
                (name, r)
            });
        }
        let mut tables: Vec<Table> = Vec::new();
        // Table → the collector that made it.
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        let mut down: BTreeMap<String, String> = BTreeMap::new();
        let mut items_skipped = Vec::new();
        while let Some(j) = set.join_next().await {
            let (name, r) =
                j.map_err(|e| HarnessError::Snapshot(format!("collector task: {e}")))?;
            tracing::debug!(source = %name, ms = started.elapsed().as_secs_f64() * 1000.0, "collected");
            match r {
                Ok(mut t) => {
                    self.metrics.collector_up.set(&[&name], 1.0);
                    owner.extend(t.iter().map(|t| (t.name.clone(), name.clone())));
                    for table in &mut t {
                        for item in std::mem::take(&mut table.skipped) {
                            tracing::warn!(collector = %name, table = %table.name, "left out {item}");
                            items_skipped.push(ItemSkipped {
                                collector: name.clone(),
                                table: table.name.clone(),
                                item,
                            });
                        }
                    }
                    tables.extend(t);
                }
                Err(e) => {
                    self.source_down(&name, &e);
                    down.insert(name, e);
                }
            }
        }
        let collect_ms = started.elapsed().as_secs_f64() * 1000.0;

        let mut result = CycleResult {
            sources_unavailable: down
                .iter()
                .map(|(s, e)| Unavailable {
                    source: s.clone(),
                    error: e.clone(),
                })
                .collect(),
            collect_ms,
            items_skipped,
            ..Default::default()
        };
        let mut runnable = Vec::new();
        for inv in selected {
            match skip_reason(&inv, &unset, &down) {
                None => runnable.push(inv),
                Some(reason) => self.skip(&mut result, &inv, reason),
            }
        }

        // Snapshot and evaluation off the async threads.
        let eval_started = Instant::now();
        let declared = declared_columns(&self.config.collectors);
        let last = prev.take();
        let out_path = write_to.map(|p| p.to_path_buf());
        let store = self.store.clone();
        let (snap, (result_part, alerts), lost, cut) = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let failed = |e: rusqlite::Error| {
                HarnessError::Snapshot(if is_full(&e) {
                    explain(&e, max_mb)
                } else {
                    format!("{e}; this is a bug in vigil or an invalid table from a collector")
                })
            };
            let left_out = snap
                .load(&cx, &tables, &declared, last.as_ref())
                .map_err(failed)?;
            // A table that did not fit: its collector is unavailable like any that failed.
            let mut lost: BTreeMap<String, String> = BTreeMap::new();
            for (table, why) in left_out {
                let source = owner.get(&table).cloned().unwrap_or_else(|| table.clone());
                lost.insert(source, format!("table {table}: {why}"));
            }
            let (runnable, cut): (Vec<Invariant>, Vec<Invariant>) = runnable
                .into_iter()
                .partition(|inv| skip_reason(inv, &BTreeMap::new(), &lost).is_none());
            tracing::debug!(ms = t.elapsed().as_secs_f64() * 1000.0, "snapshot loaded");
            drop(last);
            if let Some(p) = out_path {
                snap.write_to(&p).map_err(|e| {
                    HarnessError::Snapshot(format!("cannot write {}: {e}", p.display()))
                })?;
            }
            let outcomes = evaluate_all(&snap, runnable).map_err(failed)?;
            snap.release_prev().map_err(failed)?;
            // State, `for`, transitions.
            let t = Instant::now();
            let recorded = record(store.as_ref(), outcomes, now_ms)?;
            tracing::debug!(ms = t.elapsed().as_secs_f64() * 1000.0, "recorded");
            Ok::<_, HarnessError>((snap, recorded, lost, cut))
        })
        .await
        .map_err(|e| HarnessError::Snapshot(format!("evaluation task: {e}")))??;
        *prev = Some(snap);
        for (source, error) in &lost {
            self.source_down(source, error);
            result.sources_unavailable.push(Unavailable {
                source: source.clone(),
                error: error.clone(),
            });
        }
        for inv in cut {
            let reason = skip_reason(&inv, &BTreeMap::new(), &lost).unwrap_or_default();
            self.skip(&mut result, &inv, reason);
        }
        result.checks_run = result_part.checks_run;
        result.skipped.extend(result_part.skipped);
        result.violations = result_part.violations;
        result.transitions = result_part.transitions;
        result.eval_ms = eval_started.elapsed().as_secs_f64() * 1000.0;

        for (id, ok) in &result_part.checks {
            let inv = &self.config.invariants[id];
            let sev = inv.severity.as_str();
            match ok {
                Some(n) => {
                    self.metrics.invariant_violations.set(&[id], *n as f64);
                    self.metrics
                        .invariant_state
                        .set(&[id, sev], f64::from(u8::from(*n > 0)));
                    self.metrics
                        .invariant_checks_total
                        .inc(&[id, if *n > 0 { "red" } else { "green" }]);
                }
                None => self.metrics.invariant_checks_total.inc(&[id, "error"]),
            }
        }
        for t in &result.transitions {
            self.audit.append(&AuditEntry {
                ts: t.at_ms,
                event: format!("invariant_{}", t.to),
                intent: None,
                playbook: None,
                details: serde_json::json!({"invariant": t.invariant_id, "from": t.from, "severity": t.severity, "tier": t.tier}),
                host: String::new(),
            });
        }
        self.send_alerts(alerts, now_ms).await;
        let elapsed = started.elapsed();
        self.metrics
            .invariant_cycle_duration_seconds
            .set(&[], elapsed.as_secs_f64());
        result.cycle_duration_ms = elapsed.as_millis() as u64;
        Ok(result)
    }

    fn source_down(&self, source: &str, error: &str) {
        self.metrics.collector_up.set(&[source], 0.0);
        tracing::warn!(source, error, "collector unavailable");
    }

    fn skip(&self, result: &mut CycleResult, inv: &Invariant, reason: String) {
        self.metrics
            .invariant_checks_total
            .inc(&[&inv.id, "skipped"]);
        result.skipped.push(Skipped {
            invariant_id: inv.id.clone(),
            reason,
        });
    }

    /// Queues this cycle's transitions in the store's outbox, then starts a delivery round
    /// for what is due (one round at a time; what it cannot deliver waits for a later cycle).
    async fn send_alerts(&self, alerts: Alerts, now_ms: i64) {
        let Some(cfg) = &self.config.settings.alert else {
            return;
        };
        let mut queue = Vec::new();
        for (id, violations, resolved) in alerts {
            let inv = &self.config.invariants[&id];
            if inv.severity < cfg.min_severity {
                continue;
            }
            let payload = super::alert::slack_payload(
                inv,
                &violations,
                resolved,
                &self.host,
                &rfc3339_ms(now_ms),
            );
            queue.push(PendingAlert {
                invariant: id,
                resolved,
                payload: payload.to_string(),
                created_ms: now_ms,
                next_attempt_ms: now_ms,
            });
        }
        // One round at a time: while one is out, only queue (what it took stays taken).
        let busy = {
            let mut handles = self.alerts.lock().unwrap();
            handles.retain(|h| !h.is_finished());
            !handles.is_empty()
        };
        let store = self.store.clone();
        let due = tokio::task::spawn_blocking(move || {
            for pending in &queue {
                store.queue_alert(pending)?;
            }
            if busy {
                return Ok(Vec::new());
            }
            store.due_alerts(now_ms)
        })
        .await;
        let due = match due {
            Ok(Ok(due)) if !due.is_empty() => due,
            Ok(Ok(_)) => return,
            Ok(Err(e)) => {
                tracing::error!("invariants: alert outbox: {e}");
                return;
            }
            Err(e) => {
                tracing::error!("invariants: alert outbox: {e}");
                return;
            }
        };
        let mut handles = self.alerts.lock().unwrap();
        let (http, url, metrics) = (self.http.clone(), cfg.slack.clone(), self.metrics.clone());
        let (store, clock) = (self.store.clone(), self.clock.clone());
        handles.push(tokio::spawn(async move {
            for a in due {
                let payload = serde_json::from_str(&a.payload).unwrap_or_default();
                let outcome = super::alert::deliver(&http, &url, payload, &metrics).await;
                let store = store.clone();
                let now = clock.now_ms();
                let written = tokio::task::spawn_blocking(move || match outcome {
                    Delivery::Sent | Delivery::GaveUp => {
                        store.alert_done(&a.invariant, a.created_ms)
                    }
                    Delivery::Later(after, payload) => store.alert_later(
                        &a.invariant,
                        a.created_ms,
                        &payload.to_string(),
                        now.saturating_add(after.as_millis() as i64),
                    ),
                })
                .await;
                if let Ok(Err(e)) = written {
                    tracing::error!("invariants: cannot update the alert outbox: {e}");
                }
            }
        }));
    }
}

/// Why `inv` cannot be checked this cycle: sources it needs that are not configured (`unset`)
/// or unavailable (`down`), each with its error.
fn skip_reason(
    inv: &Invariant,
    unset: &BTreeMap<String, String>,
    down: &BTreeMap<String, String>,
) -> Option<String> {
    let mut reasons: Vec<String> = inv
        .needs
        .iter()
        .filter_map(|n| {
            unset
                .get(n)
                .map(|why| format!("collector {n} is not configured: {why}"))
        })
        .collect();
    let missing: Vec<&str> = inv
        .needs
        .iter()
        .filter(|n| down.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        reasons.push(format!("collector {} unavailable", missing.join(", ")));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

fn declared_columns(
    collectors: &BTreeMap<String, CollectorConfig>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (name, c) in collectors {
        for d in c.declared(name) {
            if let Some(cols) = d.columns {
                out.insert(d.name, cols);
            }
        }
    }
    out
}

/// Checks the invariants, in parallel on up to one connection per core: the queries only
/// read, and the slowest (scans of big tables) would otherwise add up.
fn evaluate_all(snap: &Snapshot, runnable: Vec<Invariant>) -> rusqlite::Result<Vec<Outcome>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(runnable.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |conn: &rusqlite::Connection| {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(inv) = runnable.get(i) else {
                return done;
            };
            let t = Instant::now();
            let r = evaluate(conn, &inv.query);
            tracing::debug!(invariant = %inv.id, ms = t.elapsed().as_secs_f64() * 1000.0, "evaluated");
            done.push((i, r));
        }
    };
    let readers = (1..workers)
        .map(|_| snap.reader())
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = readers
            .into_iter()
            .map(|conn| s.spawn(move || work(&conn)))
            .collect();
        let mut all = work(&snap.conn);
        for h in handles {
            all.extend(h.join().expect("invariant worker panicked"));
        }
        all
    });
    results.sort_by_key(|(i, _)| *i);
    Ok(runnable
        .into_iter()
        .zip(results)
        .map(|(inv, (_, r))| (inv, r))
        .collect())
}

/// Runs one invariant's query; each row is a violation's bounded observed state.
pub fn evaluate(
    conn: &rusqlite::Connection,
    query: &str,
) -> Result<Vec<Map<String, Value>>, String> {
    let mut stmt = conn.prepare_cached(query).map_err(|e| e.to_string())?;
    let cols: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| e.to_string())? {
        if out.len() == VIOLATIONS_CAP {
            tracing::warn!(
                cap = VIOLATIONS_CAP,
                "invariant has more violations than kept"
            );
            break;
        }
        let mut m = Map::new();
        for (i, c) in cols.iter().enumerate() {
            let v = match r.get_ref(i).map_err(|e| e.to_string())? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::from(n),
                ValueRef::Real(x) => Value::from(x),
                ValueRef::Text(t) => text_value(&String::from_utf8_lossy(t)),
                ValueRef::Blob(b) => Value::from(hex::encode(&b[..b.len().min(TEXT_CAP / 2)])),
            };
            if let Value::Array(mut a) = v {
                if a.len() > LIST_CAP {
                    m.insert(format!("{c}_more"), Value::from(a.len() - LIST_CAP));
                    a.truncate(LIST_CAP);
                }
                m.insert(c.clone(), Value::Array(a));
            } else {
                m.insert(c.clone(), v);
            }
        }
        out.push(m);
    }
    Ok(out)
}

/// Text that holds a JSON array or object (from `json_group_array` and friends) is JSON.
fn text_value(t: &str) -> Value {
    let trimmed = t.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<Value>(t) {
            return v;
        }
    }
    if t.len() > TEXT_CAP {
        let mut end = TEXT_CAP;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        return Value::from(format!("{}…", &t[..end]));
    }
    Value::from(t)
}

/// `{column}` placeholders filled from a violation ([`crate::template`]; a message, so an unknown
/// column stays `{column}`).
pub fn fill_signal(template: &str, state: &Map<String, Value>) -> String {
    crate::template::Template::parse(template).message(|name| crate::template::field(state, name))
}

#[derive(Default)]
struct Recorded {
    checks_run: Vec<String>,
    skipped: Vec<Skipped>,
    violations: Vec<Violation>,
    transitions: Vec<Transition>,
    /// id → violations fired (None: the query failed).
    checks: Vec<(String, Option<usize>)>,
}

/// Per invariant to alert: id, violations, resolved.
type Alerts = Vec<(String, Vec<Map<String, Value>>, bool)>;
/// An invariant and its query's rows (or why the query failed).
type Outcome = (Invariant, Result<Vec<Map<String, Value>>, String>);

fn record(
    store: &dyn InvariantStore,
    outcomes: Vec<Outcome>,
    now_ms: i64,
) -> Result<(Recorded, Alerts), HarnessError> {
    let states = store.invariant_states()?;
    let mut rec = Recorded::default();
    let mut alerts = Vec::new();
    for (inv, outcome) in outcomes {
        let rows = match outcome {
            Ok(rows) => rows,
            Err(e) => {
                rec.checks.push((inv.id.clone(), None));
                rec.skipped.push(Skipped {
                    invariant_id: inv.id.clone(),
                    reason: format!("query failed: {e}"),
                });
                continue;
            }
        };
        rec.checks_run.push(inv.id.clone());
        let fired: Vec<Map<String, Value>> = if inv.for_ms > 0 {
            let keys: Vec<String> = rows.iter().map(|r| violation_key(&inv, r)).collect();
            let first = store.invariant_sightings(&inv.id, &keys, now_ms)?;
            rows.into_iter()
                .zip(first)
                .filter(|(_, f)| now_ms - f >= inv.for_ms)
                .map(|(r, _)| r)
                .collect()
        } else {
            rows
        };
        rec.checks.push((inv.id.clone(), Some(fired.len())));
        let new_state = if fired.is_empty() { "green" } else { "red" };
        let old = states.get(&inv.id);
        let old_state = old.map_or("unknown", |s| s.state.as_str());
        let changed = old_state != new_state;
        if changed && !(old_state == "unknown" && new_state == "green") {
            rec.transitions.push(Transition {
                invariant_id: inv.id.clone(),
                from: old_state.into(),
                to: new_state.into(),
                at: rfc3339_ms(now_ms),
                at_ms: now_ms,
                severity: inv.severity.as_str().into(),
                tier: inv.tier.clone(),
            });
            if new_state == "red" {
                alerts.push((inv.id.clone(), fired.clone(), false));
            } else if old_state == "red" {
                alerts.push((inv.id.clone(), Vec::new(), true));
            }
        }
        let kept: Vec<&Map<String, Value>> = fired.iter().take(LIST_CAP).collect();
        let st = InvariantState {
            state: new_state.into(),
            since_ms: if changed {
                now_ms
            } else {
                old.map_or(now_ms, |s| s.since_ms)
            },
            violations: serde_json::to_string(&kept).unwrap_or_default(),
        };
        if old != Some(&st) {
            store.save_invariant_state(&inv.id, &st, now_ms)?;
        }
        for v in fired {
            rec.violations.push(Violation {
                invariant_id: inv.id.clone(),
                name: inv.name.clone(),
                severity: inv.severity.as_str().into(),
                tier: inv.tier.clone(),
                signal_query: inv.signal.as_deref().map(|s| fill_signal(s, &v)),
                runbook: inv.runbook.clone(),
                observed_state: v,
            });
        }
    }
    Ok((rec, alerts))
}

/// What makes two rows the same violation across cycles: the `key` columns, else the row.
fn violation_key(inv: &Invariant, row: &Map<String, Value>) -> String {
    if inv.key.is_empty() {
        return serde_json::to_string(row).unwrap_or_default();
    }
    let vals: Vec<&Value> = inv
        .key
        .iter()
        .map(|k| row.get(k).unwrap_or(&Value::Null))
        .collect();
    serde_json::to_string(&vals).unwrap_or_default()
}
