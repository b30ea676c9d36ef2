//! Sources turn what happens on the host into events. Each kind is one module: a config that
//! implements [`SourceKind`], listed in [`KINDS`], and a [`Source`] that runs in its own task.
//! A source that cannot start or breaks is reported (log, `vigil_source_up`, reason in
//! `vigil status`) and restarted with backoff. The daemon never dies for a source.

pub mod checkpoint;
pub mod delivery;
pub mod dir;
pub mod file;
pub mod host;
pub mod journald;
pub mod lines;
pub mod metrics;
pub mod probe;

use crate::clock::SharedClock;
use crate::config::load::{self, Diagnostic, ParseKind};
use crate::config::Dur;
use crate::event::{Data, Event};
use crate::metrics::Metrics;
use crate::store::SourceStore;
use delivery::{Deliveries, Delivery};
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use toml::de::DeValue;
use toml::Spanned;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Event types that vigil itself emits, whatever sources are configured.
pub const BUILTIN_EVENTS: &[&str] = &["invariant_red", "invariant_green"];

/// Every kind of source, by its `type`: a reader sees them all here. Adding a kind is one file
/// (a config struct that implements [`SourceKind`]) and one line here.
pub const KINDS: &[(&str, ParseKind<SourceConfig>)] = &[
    ("file", parse::<file::FileConfig>),
    ("dir", parse::<dir::DirConfig>),
    ("journald", parse::<journald::JournaldConfig>),
    ("metrics", parse::<metrics::MetricsConfig>),
    ("probe", parse::<probe::ProbeConfig>),
    ("host", parse::<host::HostConfig>),
];

/// What each kind of source is, implemented by its config struct (the `[sources.NAME]` table
/// minus `type`, deserialized with serde): how it is checked, what it emits, how it starts.
pub trait SourceKind: fmt::Debug + Send + Sync + Any {
    /// Rules serde cannot express; the message is reported at the source's table.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// Durations that must be more than zero (`interval`, `timeout`), by key: `vigil check`
    /// reports a zero at the key's line, before a source could spin or fail every check.
    fn positive(&self) -> Vec<(&'static str, Dur)> {
        Vec::new()
    }
    /// The event types this source can emit, so `vigil check` can spot rules that wait in vain.
    fn event_types(&self) -> Vec<String>;
    /// The fields an `event` from this source carries, so `vigil check` can warn about a rule
    /// `reason` naming one that never arrives; `None` when they are not known before it runs
    /// (the labels of a scraped series).
    fn event_fields(&self, _event: &str) -> Option<Vec<String>> {
        None
    }
    /// The running source, started by the daemon after the whole config validated.
    fn build(&self) -> Box<dyn Source>;
}

/// The one parse-then-check path of every `[sources.NAME]` table; sources share no fields
/// besides `type`, which `load::take_tagged` has taken out.
fn parse<T: SourceKind + DeserializeOwned>(
    kind: &'static str,
    src: &load::Source,
    table: Spanned<DeValue<'_>>,
) -> Result<SourceConfig, Diagnostic> {
    let start = table.span().start;
    // Where each key's value is, so a zero `interval` is reported at its line.
    let keys: Vec<(String, usize)> = match table.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), v.span().start))
            .collect(),
        _ => Vec::new(),
    };
    let config: T = load::deserialize(src, table)?;
    for (key, value) in config.positive() {
        if value.is_zero() {
            let at = keys
                .iter()
                .find(|(k, _)| k == key)
                .map_or(start, |(_, at)| *at);
            let msg = format!("`{key}` must be more than zero; give a duration like \"10s\"");
            return Err(src.at(at, src.explain(&msg, at)));
        }
    }
    config.check().map_err(|m| src.at(start, m))?;
    Ok(SourceConfig {
        kind,
        config: Arc::new(config),
    })
}

/// One configured source: its `type` and its kind's config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    kind: &'static str,
    config: Arc<dyn SourceKind>,
}

impl SourceConfig {
    /// Its `type`, as listed in [`KINDS`].
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The kind's own config, when it is a `T` (`None` otherwise).
    pub fn get<T: SourceKind>(&self) -> Option<&T> {
        let any: &dyn Any = self.config.as_ref();
        any.downcast_ref()
    }

    /// The event types this source can emit.
    pub fn event_types(&self) -> Vec<String> {
        self.config.event_types()
    }

    /// The fields an `event` from this source carries, if known (see
    /// [`SourceKind::event_fields`]).
    pub fn event_fields(&self, event: &str) -> Option<Vec<String>> {
        self.config.event_fields(event)
    }

    /// The running source, for the daemon to supervise.
    pub fn build(&self) -> Box<dyn Source> {
        self.config.build()
    }
}

/// Why a source stopped working, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

impl SourceError {
    pub fn new(msg: impl Into<String>) -> Self {
        SourceError(msg.into())
    }
}

pub trait Source: Send {
    /// Runs until the source breaks (an error, after which it is restarted with backoff) or
    /// vigil stops (`ctx.stopping()` resolves; returning `Ok` is fine). Call `ctx.up()` once
    /// the source is established. State kept in `self` survives restarts.
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>>;

    /// Called once when vigil stops, after the last `run` (which may have been cut short at
    /// any await): the place to save a final position. The pipeline still takes events then.
    fn finish<'a>(&'a mut self, _ctx: &'a SourceContext) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Events [`SourceContext::emit_all`] sends after one wait for queue space.
pub const SEND_BATCH: usize = 256;

/// What a running source may use: its name, the clock, the way to emit events, and the store
/// for a position kept across restarts of vigil.
#[derive(Clone)]
pub struct SourceContext {
    pub name: String,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    events: mpsc::Sender<Event>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
    /// Why the source works, but not as well as it should (see [`SourceContext::degraded`]).
    degraded: Arc<Mutex<Option<String>>>,
    store: Option<Arc<dyn SourceStore>>,
    /// A dry run reads positions from the store but saves none.
    read_only: bool,
    /// Events emitted so far, and how many of them the pipeline has finished (when it says).
    sent: Arc<AtomicU64>,
    delivery: Option<Arc<Delivery>>,
}

impl SourceContext {
    pub fn new(
        name: impl Into<String>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        events: mpsc::Sender<Event>,
        health: Arc<Health>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            name: name.into(),
            clock,
            metrics,
            events,
            health,
            shutdown,
            degraded: Arc::default(),
            store: None,
            read_only: false,
            sent: Arc::default(),
            delivery: None,
        }
    }

    /// Gives the source the store to keep its position in (the file source's checkpoints),
    /// and, when a pipeline reports them, the count of its events finished there: a position
    /// is then saved only once every event before it is finished (see [`delivery`]). Without
    /// `deliveries`, an event counts as finished once sent.
    pub fn with_store(
        mut self,
        store: Arc<dyn SourceStore>,
        deliveries: Option<&Deliveries>,
    ) -> Self {
        self.store = Some(store);
        self.delivery = deliveries.map(|d| d.track(&self.name));
        self
    }

    /// For a dry run, which acts on nothing: positions are still read from the store, so the
    /// dry run sees what a real start would, but none is saved, so it does not move a real
    /// start's position on.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The store to read a position kept across restarts from, if the source has one.
    pub fn store(&self) -> Option<&Arc<dyn SourceStore>> {
        self.store.as_ref()
    }

    /// The store to save positions in: none without a store, or in a dry run.
    pub fn saving_store(&self) -> Option<&Arc<dyn SourceStore>> {
        self.store.as_ref().filter(|_| !self.read_only)
    }

    /// Events emitted by this source so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Events of this source the pipeline has finished (all sent ones when nobody reports).
    pub fn delivered(&self) -> u64 {
        match &self.delivery {
            Some(d) => d.count(),
            None => self.sent(),
        }
    }

    /// Resolves when [`SourceContext::delivered`] may have moved on, or the pipeline is gone
    /// ([`SourceContext::pipeline_closed`]); never without a report.
    pub async fn delivery_progressed(&self) {
        match &self.delivery {
            Some(d) => tokio::select! {
                _ = d.progressed() => {}
                _ = self.events.closed() => {}
            },
            None => std::future::pending().await,
        }
    }

    /// Whether the pipeline has stopped taking events (it ended, or crashed): nothing sent
    /// will be finished any more.
    pub fn pipeline_closed(&self) -> bool {
        self.events.is_closed()
    }

    /// Sends an event stamped with the clock's time. Waits while the pipeline is full, so a
    /// source that reads from disk simply reads later; returns false once vigil is stopping.
    pub async fn emit(&self, kind: &str, data: Data) -> bool {
        let ev = Event::new(self.name.clone(), kind, self.clock.now_ms(), data);
        let Ok(permit) = self.events.reserve().await else {
            return false;
        };
        // Counted before the pipeline can see it, so its count never runs ahead of ours.
        self.sent.fetch_add(1, Ordering::AcqRel);
        permit.send(ev);
        true
    }

    /// Sends a batch of events with one clock read and one wait per chunk of queue space:
    /// the file source's hot path. Returns false once vigil is stopping.
    pub async fn emit_all<'k>(&self, events: impl IntoIterator<Item = (&'k str, Data)>) -> bool {
        let ts = self.clock.now_ms();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let Ok(permits) = self.events.reserve_many(SEND_BATCH).await else {
                return false;
            };
            for permit in permits {
                let Some((kind, data)) = events.next() else {
                    break;
                };
                // Counted before the pipeline can see it, so its count never runs ahead of ours.
                self.sent.fetch_add(1, Ordering::AcqRel);
                permit.send(Event::new(self.name.clone(), kind, ts, data));
            }
        }
        true
    }

    /// Marks the source as working (with the reason it is degraded, if it is).
    pub fn up(&self) {
        let note = self.degraded.lock().unwrap().clone();
        self.health.set(&self.name, true, note, self.clock.now_ms());
    }

    /// Says the source works but is degraded (`Some`), or fully works (`None`): from the
    /// next [`SourceContext::up`] on, the reason shows in `vigil status` beside "up" (for
    /// example: watching by polling because inotify is used up).
    pub fn degraded(&self, reason: Option<String>) {
        *self.degraded.lock().unwrap() = reason;
    }

    /// Marks the source as not working while it keeps running, e.g. waiting for a file to
    /// appear; `up()` clears it.
    pub fn down(&self, reason: impl Into<String>) {
        self.health
            .set(&self.name, false, Some(reason.into()), self.clock.now_ms());
    }

    /// Resolves when vigil is stopping; use in `tokio::select!`.
    pub async fn stopping(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Up/down and the reason, per source. The daemon mirrors it into the store so `vigil status`
/// sees it from another process.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceState {
    pub source: String,
    pub kind: String,
    pub up: bool,
    pub reason: Option<String>,
    pub since_ms: i64,
}

/// The reason of a source registered but not yet attached.
pub const STARTING: &str = "starting";

#[derive(Default)]
pub struct Health {
    states: Mutex<BTreeMap<String, SourceState>>,
    metrics: Option<Arc<Metrics>>,
    pub changed: Notify,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..Default::default()
        }
    }

    pub fn register(&self, name: &str, kind: &str, now_ms: i64) {
        self.states.lock().unwrap().insert(
            name.to_string(),
            SourceState {
                source: name.to_string(),
                kind: kind.to_string(),
                up: false,
                reason: Some(STARTING.into()),
                since_ms: now_ms,
            },
        );
        if let Some(m) = &self.metrics {
            m.source_up.set(&[name], 0.0);
        }
    }

    pub fn set(&self, name: &str, up: bool, reason: Option<String>, now_ms: i64) {
        let mut states = self.states.lock().unwrap();
        let state = states
            .entry(name.to_string())
            .or_insert_with(|| SourceState {
                source: name.to_string(),
                kind: String::new(),
                up: !up,
                reason: None,
                since_ms: now_ms,
            });
        if state.up != up || state.reason != reason {
            if state.up != up {
                state.since_ms = now_ms;
            }
            state.up = up;
            state.reason = reason;
            if let Some(m) = &self.metrics {
                m.source_up.set(&[name], if up { 1.0 } else { 0.0 });
                let degraded = up && state.reason.is_some();
                m.source_degraded
                    .set(&[name], if degraded { 1.0 } else { 0.0 });
            }
            self.changed.notify_one();
        }
    }

    /// Names of the sources that have not attached yet (still "starting"). Once none is left,
    /// every source has either begun watching (a file source knows where it starts reading)
    /// or said why it cannot.
    pub fn starting(&self) -> Vec<String> {
        let states = self.states.lock().unwrap();
        states
            .values()
            .filter(|s| !s.up && s.reason.as_deref() == Some(STARTING))
            .map(|s| s.source.clone())
            .collect()
    }

    pub fn snapshot(&self) -> Vec<SourceState> {
        self.states.lock().unwrap().values().cloned().collect()
    }
}

/// Delay before restart number `attempt` (0-based): 500 ms doubling to at most 60 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(7))).min(Duration::from_secs(60))
}

/// Runs one source until vigil stops, restarting it with backoff whenever it breaks; then
/// lets it finish ([`Source::finish`]).
pub async fn supervise(mut source: Box<dyn Source>, ctx: SourceContext) {
    keep_running(&mut source, &ctx).await;
    if let Err(panic) = CatchPanic(source.finish(&ctx)).await {
        tracing::error!(source = %ctx.name, "source crashed while stopping (a bug in vigil, please report it): {panic}");
    }
}

async fn keep_running(source: &mut Box<dyn Source>, ctx: &SourceContext) {
    let mut attempt = 0u32;
    loop {
        let started = std::time::Instant::now();
        let result = tokio::select! {
            r = CatchPanic(source.run(ctx)) => r,
            _ = ctx.stopping() => return,
        };
        if ctx.is_stopping() {
            return;
        }
        let reason = match result {
            Ok(Ok(())) => "source ended; restarting".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!("source crashed (a bug in vigil, please report it): {panic}"),
        };
        if started.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        let delay = backoff(attempt);
        tracing::warn!(source = %ctx.name, "source down: {reason}; retrying in {delay:?}");
        ctx.health
            .set(&ctx.name, false, Some(reason), ctx.clock.now_ms());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.stopping() => return,
        }
    }
}

/// Runs a future and turns a panic inside it into `Err(message)`, so one source's bug takes
/// down only that source, which is then reported and restarted like one that failed. The
/// source is polled in place (not spawned) because `run` borrows it and its state, such as a
/// journal cursor, is meant to survive restarts.
struct CatchPanic<F>(F);

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => std::task::Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// The text a panic was raised with.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(7), Duration::from_secs(60));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }
}
