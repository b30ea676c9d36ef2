//! The intent queue's way in: every producer (rules, inbox, API, CLI) stores intents through
//! `submit`, so validation, dedup, metrics and the "stored" notification happen in one place.

use super::NewIntent;
use crate::app::App;
use crate::store::{IntentStore, Put, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid intent: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates and stores one intent (blocking: call from `spawn_blocking` in async code).
pub fn submit(app: &App, intent: &NewIntent) -> Result<Put, SubmitError> {
    intent.validate().map_err(SubmitError::Invalid)?;
    let store = app.store()?;
    let put = store.put_intent(
        intent,
        app.clock.now_ms(),
        app.config.intents.dedup_window.as_ms(),
    )?;
    if let Put::Inserted(id) = put {
        app.metrics.intents_total.inc(&[&intent.intent_type]);
        let _ = app.stored.send(id);
        app.changes.publish("intent_stored", serde_json::json!({"id": id, "intent_type": intent.intent_type, "priority": intent.priority}));
        tracing::info!(id, intent_type = %intent.intent_type, priority = intent.priority, origin = %intent.origin, "intent stored: {}", intent.reason);
    }
    Ok(put)
}
