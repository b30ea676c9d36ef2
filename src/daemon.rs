//! `vigil run`: starts the sources, the rule engine, the inbox and the API, and stops them
//! cleanly: sources first, then the pipeline drains what they sent, then the summary.

pub mod record;

use crate::app::App;
use crate::clock::rfc3339_ms;
use crate::config::human;
use crate::event::Event;
use crate::intent::{inbox, queue, NewIntent};
use crate::rules::{Output, RuleEngine};
use crate::sources::delivery::{Deliveries, Tally};
use crate::sources::{self, Health, SourceContext};
use crate::store::{IntentStore, SourceStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Events waiting for the rule engine. Bounded: a flood makes sources wait (file and journal
/// sources simply read later), it never grows memory.
const EVENT_QUEUE: usize = 4096;
/// How often absence rules are checked.
const TICK: Duration = Duration::from_secs(1);
/// Housekeeping (pruning, the store check) runs this often on the app's clock ...
const HOUSEKEEPING_EVERY_MS: i64 = 60_000;
/// ... and logs the stats line this often.
const STATS_EVERY_MS: i64 = 600_000;
const SPOOL_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Write every raw event to `DATA_DIR/events/` (pruned after 7 days).
    pub spool_events: bool,
    /// Evaluate, print what would run, act on nothing.
    pub dry_run: bool,
}

/// What the daemon did, for the line it prints when it stops.
#[derive(Debug, Default)]
pub struct Counters {
    pub events: AtomicU64,
}

pub struct Summary {
    pub uptime: Duration,
    pub events: u64,
    pub intents: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "uptime={}, events={}, intents={}",
            human(self.uptime),
            self.events,
            self.intents
        )
    }
}

/// What stops the daemon from starting; once it runs, nothing is fatal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr} ({source}); change [api] listen, or set enabled = false")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] crate::api::token::TokenError),
    #[error(transparent)]
    Record(#[from] record::RecordError),
}

/// Runs until `shutdown` turns true. Errors only for what makes running pointless (the store
/// cannot be opened, the API address is taken, the API token cannot be read or made); a
/// broken source is retried, never fatal.
pub async fn run(
    app: Arc<App>,
    opts: Options,
    shutdown: watch::Receiver<bool>,
) -> Result<Summary, DaemonError> {
    let started = Instant::now();
    let started_ms = app.clock.now_ms();
    let store = app.store()?;
    let mut daemon_record = record::DaemonRecord::starting(&app.config.origin, app.clock.now_ms());
    let counters = Arc::new(Counters::default());
    let health = Arc::new(Health::new(app.metrics.clone()));
    let mut tasks = tokio::task::JoinSet::new();

    let (tx, rx) = mpsc::channel::<Event>(EVENT_QUEUE);
    let api = if app.config.api.enabled {
        let token = crate::api::token::resolve(&app.config.api, &app.data_dir)?;
        let token_origin = token.origin.clone();
        let _ = app.api_token.set(token);
        let listen = app.config.api.listen;
        let listen_err = |source| DaemonError::Listen {
            addr: listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let _ = app.api_addr.set(addr);
        daemon_record.api = Some(addr.to_string());
        tracing::info!("API on http://{addr}");
        announce_token(&token_origin, addr);
        Some(tokio::spawn(crate::api::serve(
            listener,
            crate::api::router(app.clone(), health.clone(), tx.clone()),
            app.config.api.clone(),
            shutdown.clone(),
        )))
    } else {
        None
    };

    // Sources get their own stop signal so the pipeline can drain after they have stopped.
    let (stop_sources, sources_stopping) = watch::channel(false);
    let mut source_tasks = tokio::task::JoinSet::new();
    // The pipeline says which events it has finished, so sources save positions only past them.
    let deliveries = Arc::new(Deliveries::default());
    for (name, cfg) in &app.config.sources {
        health.register(name, cfg.kind(), app.clock.now_ms());
        let ctx = SourceContext::new(
            name,
            app.clock.clone(),
            app.metrics.clone(),
            tx.clone(),
            health.clone(),
            sources_stopping.clone(),
        )
        .with_store(store.clone(), Some(&deliveries));
        let ctx = if opts.dry_run { ctx.read_only() } else { ctx };
        source_tasks.spawn(sources::supervise(cfg.build(), ctx));
    }
    // The invariant loop feeds transitions to the rule engine like a source. It records
    // state and audits transitions, so a dry run (which writes nothing) does not run it.
    match crate::invariants::shared(&app) {
        Ok(_) if opts.dry_run => tracing::info!("dry run: invariant cycles do not run"),
        Ok(h) => {
            source_tasks.spawn(crate::invariants::run_loop(
                h,
                tx.clone(),
                sources_stopping.clone(),
            ));
        }
        Err(e) => tracing::error!("invariants: {e}; no invariant cycles will run"),
    }
    // The supervisor's events go through the pipeline like a source's; a dry run starts nothing.
    if !opts.dry_run {
        source_tasks.spawn(crate::supervisor::run(
            app.clone(),
            tx.clone(),
            sources_stopping.clone(),
        ));
    }
    drop(tx);

    let pipeline = tokio::spawn(pipeline(
        app.clone(),
        rx,
        counters.clone(),
        opts.clone(),
        deliveries,
    ));
    tasks.spawn(persist_health(
        app.clone(),
        store.clone(),
        health.clone(),
        app.changes.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(housekeeping(
        app.clone(),
        counters.clone(),
        started_ms,
        opts.clone(),
        shutdown.clone(),
    ));
    let inbox_app = app.clone();
    let inbox_stop = shutdown.clone();
    let inbox_health = health.clone();
    tasks.spawn(async move {
        if let Err(e) = inbox::watch(inbox_app, inbox_health, inbox_stop).await {
            tracing::error!("inbox: {e}; intents from other programs are not picked up");
        }
    });
    tasks.spawn(crate::orchestrator::run(
        app.clone(),
        crate::orchestrator::Options {
            dry_run: opts.dry_run,
        },
        shutdown.clone(),
    ));
    // A canary run the last daemon died in left production stopped: put it back first thing
    // (once the store, which says so, answers: PostgreSQL may be away at start).
    if !opts.dry_run && !app.config.canaries.is_empty() {
        let (a, stop) = (app.clone(), shutdown.clone());
        tasks.spawn(async move {
            if crate::outage::wait_for_store(&a, stop).await {
                crate::canary::finish_pending(a).await
            }
        });
    }
    record::write(&app.data_dir, &daemon_record)?;
    tracing::info!(config = %app.config.origin, data_dir = %app.data_dir.display(), sources = app.config.sources.len(), rules = app.config.rules.len(), "vigil running");

    let mut stop = shutdown.clone();
    let _ = stop.wait_for(|s| *s).await;
    app.changes.close();
    let _ = stop_sources.send(true);
    while source_tasks.join_next().await.is_some() {}
    if let Some(api) = api {
        let _ = api.await;
    }
    // Every sender is gone now: the pipeline ends once it has processed what is queued.
    let _ = pipeline.await;
    while tasks.join_next().await.is_some() {}
    let states = health.snapshot();
    let _ = tokio::task::spawn_blocking(move || store.put_source_states(&states)).await;
    daemon_record.stopped_at = Some(rfc3339_ms(app.clock.now_ms()));
    if let Err(e) = record::write(&app.data_dir, &daemon_record) {
        tracing::warn!("{e}");
    }
    Ok(Summary {
        uptime: started.elapsed(),
        events: counters.events.load(Ordering::Relaxed),
        intents: app.metrics.intents_total.total() as u64,
    })
}

/// Says once, when it was just generated, where the API token is and how to use it.
fn announce_token(origin: &crate::api::token::TokenOrigin, addr: std::net::SocketAddr) {
    use crate::api::token::TokenOrigin;
    match origin {
        TokenOrigin::Generated(path) => tracing::warn!(
            "generated an API token in {p} (mode 0600; kept for later starts). Calls that change state need it: curl -H \"Authorization: Bearer $(cat {p})\" -d '{{\"intent_type\": \"alert_test\", \"priority\": 5, \"reason\": \"test\"}}' http://{addr}/api/intents",
            p = path.display(),
        ),
        TokenOrigin::Kept(path) | TokenOrigin::File(path) => {
            tracing::info!("API token from {}", path.display())
        }
        TokenOrigin::Config => tracing::info!("API token from [api] token"),
    }
}

/// Events through the rule engine; proposals into the store.
async fn pipeline(
    app: Arc<App>,
    mut rx: mpsc::Receiver<Event>,
    counters: Arc<Counters>,
    opts: Options,
    deliveries: Arc<Deliveries>,
) {
    let mut engine = RuleEngine::new(&app.config.rules, app.clock.now_ms());
    let mut out = Output::default();
    let mut tally = Tally::default();
    // The source of the event just taken: finished once what it proposed is stored.
    let mut finished: Option<String> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                counters.events.fetch_add(1, Ordering::Relaxed);
                app.metrics.events_total.inc(&[&ev.source, &ev.kind]);
                app.changes.count_event(ev.ts);
                if opts.spool_events {
                    spool(&app, &ev);
                }
                engine.process(&ev, &mut out);
                finished = Some(ev.source);
            }
            _ = tick.tick() => {
                engine.tick(app.clock.now_ms(), &mut out);
                // Off the per-event path: the engine counts, the metric follows once a tick.
                let dropped = engine.stats().duplicates_dropped as f64;
                app.metrics.events_dropped_total.set(&["duplicate"], dropped);
            }
        }
        if !out.proposals.is_empty() || !out.symptoms.is_empty() {
            let taken = std::mem::take(&mut out);
            let a = app.clone();
            let dry_run = opts.dry_run;
            let _ = tokio::task::spawn_blocking(move || {
                if dry_run {
                    // A dry run stores nothing: it says what the output would do.
                    match crate::orchestrator::plan::rule_output(&a, &taken) {
                        Ok(lines) => lines.iter().for_each(|l| tracing::info!("dry run: {l}")),
                        Err(e) => tracing::error!("dry run: {e}"),
                    }
                } else {
                    store_output(&a, taken)
                }
            })
            .await;
        }
        if let Some(source) = finished.take() {
            tally.add(&deliveries, &source);
        }
        if rx.is_empty() {
            tally.flush(&deliveries);
        }
    }
    let dropped = engine.stats().duplicates_dropped as f64;
    app.metrics
        .events_dropped_total
        .set(&["duplicate"], dropped);
}

fn store_output(app: &App, out: Output) {
    for p in out.proposals {
        let intent = NewIntent {
            intent_type: p.intent_type,
            priority: p.priority,
            reason: p.reason,
            data: p.data,
            dedup_key: None,
            origin: format!("rule:{}", p.rule),
        };
        match queue::submit(app, &intent) {
            Ok(crate::store::Put::Inserted(_)) => {}
            Ok(crate::store::Put::Duplicate(id)) => {
                tracing::debug!(id, "rule {} proposed a duplicate of intent {id}", p.rule)
            }
            // Kept in the inbox until the store is back (`submit` logged it).
            Err(queue::SubmitError::Deferred { .. }) => {}
            Err(e) => tracing::error!("rule {}: cannot store intent: {e}", p.rule),
        }
    }
    for s in out.symptoms {
        tracing::debug!(rule = %s.rule, kind = %s.kind, "symptom seen");
        if let Err(e) = crate::escalation::record(app, &s.kind, s.data) {
            tracing::error!("rule {}: cannot record symptom {}: {e}", s.rule, s.kind);
        }
    }
}

/// `DATA_DIR/events/{ts_ms}_{source}_{type}.json`, for debugging.
fn spool(app: &App, ev: &Event) {
    let dir = app.events_dir();
    let safe = |s: &str| {
        s.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-',
            "_",
        )
    };
    let path = dir.join(format!(
        "{}_{}_{}.json",
        ev.ts,
        safe(&ev.source),
        safe(&ev.kind)
    ));
    let res = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_vec(ev).expect("JSON")));
    if let Err(e) = res {
        tracing::warn!("cannot spool event to {}: {e}", path.display());
    }
}

/// Deletes spooled events older than the retention, judged by the time in their name.
pub fn prune_spool(dir: &std::path::Path, now_ms: i64) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let ts = name
            .to_str()
            .and_then(|n| n.split('_').next())
            .and_then(|t| t.parse::<i64>().ok());
        if ts.is_some_and(|ts| ts < now_ms - SPOOL_RETENTION_MS)
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Deletes the audit trail's day files (`YYYYMMDD.jsonl`) older than `keep` before `today`,
/// as the store prunes its audit entries past `[orchestrator] retention`: vigil keeps its own
/// files bounded, so no logrotate is needed. Other names are left alone.
pub fn prune_audit_files(dir: &std::path::Path, today: jiff::civil::Date, keep: Duration) -> usize {
    let days = keep.as_secs().div_ceil(86_400) as i64;
    let Ok(cutoff) = today.checked_sub(jiff::Span::new().days(days)) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let day = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|d| jiff::civil::Date::strptime("%Y%m%d", d).ok());
        if day.is_some_and(|d| d < cutoff) && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Mirrors source health into the store whenever it changes, for `vigil status`.
async fn persist_health(
    app: Arc<App>,
    store: Arc<crate::store::AnyStore>,
    health: Arc<Health>,
    changes: crate::api::stream::Changes,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let states = health.snapshot();
        changes.publish("sources", serde_json::to_value(&states).expect("JSON"));
        let s = store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.put_source_states(&states)).await
        {
            // While the store is away, said once by the outage.
            if !crate::outage::confirm(&app).await {
                tracing::warn!("cannot record source states: {e}");
            }
        }
        tokio::select! {
            _ = health.changed.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Pruning, the store check and the periodic stats line, once a minute on the app's clock
/// (a test moves a `ManualClock` to drive it; the system clock sleeps between rounds).
async fn housekeeping(
    app: Arc<App>,
    counters: Arc<Counters>,
    started_ms: i64,
    opts: Options,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_stats_ms = started_ms;
    loop {
        let a = app.clone();
        let spool = opts.spool_events;
        let _ = tokio::task::spawn_blocking(move || {
            let now = a.clock.now_ms();
            let cutoff = now - a.config.intents.retention.as_ms();
            match a.store().map(|s| s.prune_intents(cutoff)) {
                Ok(Ok(n)) if n > 0 => tracing::info!(
                    "pruned {n} finished intents older than {}",
                    rfc3339_ms(cutoff)
                ),
                Ok(Err(e)) | Err(e) if crate::outage::confirm_blocking(&a) => {
                    tracing::debug!("cannot prune intents: {e}")
                }
                Ok(Err(e)) | Err(e) => tracing::warn!("cannot prune intents: {e}"),
                _ => {}
            }
            if spool {
                prune_spool(&a.events_dir(), now);
            }
            let keep = a.config.orchestrator.settings.retention.0;
            let today = a.clock.now().to_zoned(a.config.timezone.0.clone()).date();
            let n = prune_audit_files(&a.audit_dir(), today, keep);
            if n > 0 {
                tracing::info!("deleted {n} audit files older than {}", human(keep));
            }
            // Logs once when the store goes bad (or recovers), even if nobody asks /healthz.
            if let Ok(store) = a.store() {
                let _ = store.health();
            }
        })
        .await;
        let now = app.clock.now_ms();
        if now - last_stats_ms >= STATS_EVERY_MS {
            last_stats_ms = now;
            tracing::info!(
                "stats: uptime={}, events={}, intents={}",
                human(Duration::from_millis((now - started_ms).max(0) as u64)),
                counters.events.load(Ordering::Relaxed),
                app.metrics.intents_total.total()
            );
        }
        tokio::select! {
            _ = app.clock.sleep_until(now + HOUSEKEEPING_EVERY_MS) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
