//! The store's outages as the daemon lives them: PostgreSQL (or the SQLite file) refusing
//! what it is given. While the store is away the daemon keeps observing, intents wait in the
//! inbox (`intent::queue::submit` writes them there) and nothing acts (the orchestrator cannot
//! claim). Each outage is logged twice, once when it begins (with the reason) and once when it
//! ends (how long, how many intents were kept and delivered), however many calls fail in
//! between, and counted in `vigil_store_up`, `vigil_store_outages_total` and
//! `vigil_store_outage_seconds_total`.

use crate::config::human;
use crate::metrics::Metrics;
use std::sync::Mutex;
use std::time::Duration;

/// Whether the store is away, and since when. One per `App`.
#[derive(Debug, Default)]
pub struct StoreOutage {
    away: Mutex<Option<Away>>,
}

#[derive(Debug)]
struct Away {
    since_ms: i64,
    /// Intents kept in the inbox since it began.
    deferred: u64,
    /// Inbox files delivered to the store since it began (the catch-up included).
    delivered: u64,
}

/// How an outage ended, for the line logged then (and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// On the app's clock.
    pub lasted: Duration,
    pub deferred: u64,
    pub delivered: u64,
}

impl StoreOutage {
    /// True while an outage is on: callers that fail on the store every tick log at debug
    /// level then, since the outage itself was logged when it began.
    pub fn is_away(&self) -> bool {
        self.away.lock().unwrap().is_some()
    }

    /// The store refused (`reason`, which names the store without its password and says
    /// why). The first refusal of an outage logs it and counts it; later ones only return
    /// false.
    pub fn away(&self, metrics: &Metrics, now_ms: i64, reason: &str) -> bool {
        let mut away = self.away.lock().unwrap();
        if away.is_some() {
            return false;
        }
        *away = Some(Away {
            since_ms: now_ms,
            deferred: 0,
            delivered: 0,
        });
        metrics.store_up.set(&[], 0.0);
        metrics.store_outages_total.inc(&[]);
        tracing::error!("store away: {reason}; the daemon keeps observing, intents wait in the inbox and playbooks wait until it is back");
        true
    }

    /// The store answers: ends the outage, if one is on (logged with how long it lasted and
    /// what was kept and delivered meanwhile), and says so in `vigil_store_up`.
    pub fn back(&self, metrics: &Metrics, now_ms: i64) -> Option<Ended> {
        metrics.store_up.set(&[], 1.0);
        let away = self.away.lock().unwrap().take()?;
        let ended = Ended {
            lasted: Duration::from_millis((now_ms - away.since_ms).max(0) as u64),
            deferred: away.deferred,
            delivered: away.delivered,
        };
        metrics
            .store_outage_seconds_total
            .add(&[], ended.lasted.as_secs_f64());
        tracing::info!(
            "store back after {}: intents kept in the inbox meanwhile: {}; inbox files delivered: {}",
            human(ended.lasted),
            ended.deferred,
            ended.delivered
        );
        Some(ended)
    }

    /// An intent was kept in the inbox because the store refused it.
    pub fn deferred(&self, metrics: &Metrics) {
        metrics.inbox_deferred_total.inc(&[]);
        if let Some(a) = self.away.lock().unwrap().as_mut() {
            a.deferred += 1;
        }
    }

    /// `n` inbox files reached the store; counted for the outage on, if any.
    pub fn delivered(&self, n: usize) {
        if let Some(a) = self.away.lock().unwrap().as_mut() {
            a.delivered += n as u64;
        }
    }
}

/// For a task that just failed on the store: true when the store is away (the outage is
/// logged once, here if it had not been yet), so the task logs its own error at debug level
/// only; false when the store answers (the error was something else: log it).
pub async fn confirm(app: &std::sync::Arc<crate::app::App>) -> bool {
    if app.store_outage.is_away() {
        return true;
    }
    let a = app.clone();
    tokio::task::spawn_blocking(move || confirm_blocking(&a))
        .await
        .unwrap_or(false)
}

/// `confirm`, from a blocking thread.
pub fn confirm_blocking(app: &crate::app::App) -> bool {
    if app.store_outage.is_away() {
        return true;
    }
    match app
        .store()
        .map_err(|e| e.to_string())
        .and_then(|s| s.health())
    {
        Ok(()) => false,
        Err(why) => {
            app.store_outage
                .away(&app.metrics, app.clock.now_ms(), &why);
            true
        }
    }
}

/// Waits until the store answers (asking every 0.5 s doubling to 10 s), for what cannot start
/// without it; false when `shutdown` came first.
pub async fn wait_for_store(
    app: &std::sync::Arc<crate::app::App>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut wait = Duration::from_millis(500);
    loop {
        let a = app.clone();
        let answers =
            tokio::task::spawn_blocking(move || a.store().map_err(|e| e.to_string())?.health())
                .await
                .is_ok_and(|r| r.is_ok());
        if answers {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return false,
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_counted_once_and_its_length_when_it_ends() {
        let m = Metrics::default();
        let o = StoreOutage::default();
        assert_eq!(o.back(&m, 500), None, "no outage to end");
        assert_eq!(m.store_up.get(&[]), 1.0);
        assert!(o.away(&m, 1_000, "refused"));
        assert!(!o.away(&m, 2_000, "refused again"), "the same outage");
        o.deferred(&m);
        o.deferred(&m);
        o.delivered(1);
        assert!(o.is_away());
        assert_eq!(m.store_up.get(&[]), 0.0);
        assert_eq!(
            o.back(&m, 13_500),
            Some(Ended {
                lasted: Duration::from_millis(12_500),
                deferred: 2,
                delivered: 1
            })
        );
        assert!(!o.is_away());
        assert_eq!(m.store_outages_total.get(&[]), 1.0);
        assert_eq!(m.store_outage_seconds_total.get(&[]), 12.5);
        assert_eq!(m.inbox_deferred_total.get(&[]), 2.0);
        o.deferred(&m);
        assert_eq!(
            m.inbox_deferred_total.get(&[]),
            3.0,
            "counted outside an outage too"
        );
    }
}
