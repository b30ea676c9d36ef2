//! Slack alerts: one message when an invariant turns red, one when it is resolved. Delivery is
//! retried and counted in the background; it never blocks a cycle.

use super::config::Invariant;
use crate::metrics::Metrics;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// At most this many violations are shown in a message; the rest are "+N more".
pub const SHOWN: usize = 5;

/// The Block Kit message for a red (`resolved = false`) or resolved transition.
pub fn slack_payload(
    inv: &Invariant,
    violations: &[Map<String, Value>],
    resolved: bool,
    host: &str,
    at: &str,
) -> Value {
    let (icon, verb) = if resolved {
        (":white_check_mark:", "resolved")
    } else {
        (":rotating_light:", "violated")
    };
    let summary = if resolved {
        format!("{} ({}) holds again.", inv.name, inv.id)
    } else {
        format!(
            "{} ({}) is {verb}: {} violation{}.",
            inv.name,
            inv.id,
            violations.len(),
            if violations.len() == 1 { "" } else { "s" }
        )
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("{icon} {} [{}] {verb}", inv.name, inv.id)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": summary}}),
    ];
    if !resolved {
        for v in violations.iter().take(SHOWN) {
            let text = serde_json::to_string(v).unwrap_or_default();
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{text}```")}}));
        }
        if violations.len() > SHOWN {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("+{} more", violations.len() - SHOWN)}}));
        }
    }
    if let Some(r) = &inv.runbook {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("Runbook: <{r}>")}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("tier {} · severity {} · host {host} · {at}", inv.tier, inv.severity.as_str())}
    ]}));
    json!({"text": summary, "blocks": blocks})
}

/// Posts `payload`, retrying with backoff; counts the outcome.
pub async fn deliver(client: reqwest::Client, url: String, payload: Value, metrics: Arc<Metrics>) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=3 {
        let res = client
            .post(&url)
            .timeout(Duration::from_secs(10))
            .json(&payload)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match res {
            Ok(_) => {
                metrics.invariant_alerts_total.inc(&["sent"]);
                return;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "invariant alert delivery failed");
                if attempt < 3 {
                    // Real backoff between network retries, not injected time.
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
        }
    }
    metrics.invariant_alerts_total.inc(&["failed"]);
}
