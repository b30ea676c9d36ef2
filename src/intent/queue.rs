//! The intent queue's way in: every producer (rules, inbox, API, CLI) stores intents through
//! `submit`, so validation, dedup, metrics and the "stored" notification happen in one place.
//!
//! While the store is away (PostgreSQL down, the SQLite file unwritable), what the daemon
//! proposes is not dropped: `submit` keeps it in the inbox (the same durable file protocol
//! other programs use) and the inbox drain delivers it exactly once when the store is back.

use super::{inbox, NewIntent};
use crate::app::App;
use crate::store::{IntentStore, Put, StoreError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid intent: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store refused the intent; it waits in the inbox as `path` and is stored when the
    /// store is back. Not lost: callers need not retry.
    #[error("{cause}; the intent waits in the inbox as {} and is stored when the store is back", path.display())]
    Deferred { path: PathBuf, cause: StoreError },
}

/// Validates and stores one intent (blocking: call from `spawn_blocking` in async code). When
/// the store refuses it, the intent is written to the inbox instead (`SubmitError::Deferred`)
/// and counted in `vigil_inbox_deferred_total`; only when that fails too is it
/// `SubmitError::Store`.
pub fn submit(app: &App, intent: &NewIntent) -> Result<Put, SubmitError> {
    intent.validate().map_err(SubmitError::Invalid)?;
    match put(app, intent, None) {
        Err(SubmitError::Store(cause)) => Err(defer(app, intent, cause)),
        r => r,
    }
}

/// Stores an intent read from an inbox file (the drain): at most once per `receipt`, the
/// file's SHA-256 (see `IntentStore::put_intent_once`), so a file read again after a crash
/// between the store's commit and the file's removal is a no-op. Never defers: the file is
/// in the inbox already.
pub fn deliver(app: &App, intent: &NewIntent, receipt: Option<&str>) -> Result<Put, SubmitError> {
    intent.validate().map_err(SubmitError::Invalid)?;
    put(app, intent, receipt)
}

fn put(app: &App, intent: &NewIntent, receipt: Option<&str>) -> Result<Put, SubmitError> {
    let store = app.store()?;
    let now = app.clock.now_ms();
    let window = app.config.intents.dedup_window.as_ms();
    let put = match receipt {
        Some(r) => store.put_intent_once(intent, r, now, window)?,
        None => store.put_intent(intent, now, window)?,
    };
    if let Put::Inserted(id) = put {
        app.metrics.intents_total.inc(&[&intent.intent_type]);
        let _ = app.stored.send(id);
        app.changes.publish("intent_stored", serde_json::json!({"id": id, "intent_type": intent.intent_type, "priority": intent.priority}));
        tracing::info!(id, intent_type = %intent.intent_type, priority = intent.priority, origin = %intent.origin, "intent stored: {}", intent.reason);
    }
    Ok(put)
}

/// Keeps an intent the store refused in the inbox, with its origin, for the drain.
fn defer(app: &App, intent: &NewIntent, cause: StoreError) -> SubmitError {
    let now = app.clock.now_ms();
    app.store_outage.away(&app.metrics, now, &cause.to_string());
    match inbox::defer(&app.inbox_dir(), intent, now) {
        Ok(path) => {
            app.store_outage.deferred(&app.metrics);
            tracing::info!(intent_type = %intent.intent_type, priority = intent.priority, origin = %intent.origin, "intent kept in the inbox until the store is back: {}", intent.reason);
            SubmitError::Deferred { path, cause }
        }
        Err(e) => {
            tracing::error!(
                "cannot keep intent {} in the inbox either: {e}; it is lost",
                intent.intent_type
            );
            SubmitError::Store(cause)
        }
    }
}
