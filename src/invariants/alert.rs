//! Slack alerts: one message when an invariant turns red, one when it is resolved. Messages wait
//! in the store (`alert_outbox`) until delivered, so a receiver that is down or rate-limits
//! (429 with `Retry-After`) gets the message on a later cycle; an episode that ends before its
//! message went out sends nothing stale. Delivery runs in the background; it never blocks a
//! cycle. Messages keep within Block Kit's limits, and one refused as invalid is never sent
//! again unchanged: it falls back to plain text.

use super::config::Invariant;
use crate::metrics::Metrics;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// At most this many violations are shown in a message; the rest are "+N more".
pub const SHOWN: usize = 5;

/// Block Kit's limits (api.slack.com/reference/block-kit/blocks): a section's text, a header's
/// text, and blocks per message.
pub const SECTION_MAX: usize = 3000;
pub const HEADER_MAX: usize = 150;
pub const BLOCKS_MAX: usize = 50;

/// `text` cut to at most `max` characters, ending in an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_MAX)}})
}

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
    let header = cut(
        &format!("{icon} {} [{}] {verb}", inv.name, inv.id),
        HEADER_MAX,
    );
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header}}),
        section(&summary),
    ];
    if !resolved {
        let shown = SHOWN.min(BLOCKS_MAX - 5);
        for v in violations.iter().take(shown) {
            let text = serde_json::to_string(v).unwrap_or_default();
            // Cut inside the code fence, so the fence still closes.
            blocks.push(section(&format!("```{}```", cut(&text, SECTION_MAX - 6))));
        }
        if violations.len() > shown {
            blocks.push(section(&format!("+{} more", violations.len() - shown)));
        }
    }
    if let Some(r) = &inv.runbook {
        blocks.push(section(&format!("Runbook: <{r}>")));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("tier {} · severity {} · host {host} · {at}", inv.tier, inv.severity.as_str())}
    ]}));
    json!({"text": summary, "blocks": blocks})
}

/// What one POST of a message came to.
enum Post {
    Sent,
    /// Try again later: after `Retry-After` when the receiver said so.
    Later(Option<Duration>, String),
    /// The receiver refused the message itself (4xx other than 408/429): sending it again
    /// unchanged would be refused again.
    Invalid(String),
}

async fn post(client: &reqwest::Client, url: &str, payload: &Value) -> Post {
    let res = client
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(payload)
        .send()
        .await;
    let r = match res {
        Ok(r) => r,
        Err(e) => return Post::Later(None, e.to_string()),
    };
    let status = r.status();
    if status.is_success() {
        return Post::Sent;
    }
    let retry_after = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = r.text().await.unwrap_or_default();
    let why = format!("{status} {}", body.chars().take(200).collect::<String>());
    match status.as_u16() {
        429 | 408 => Post::Later(retry_after, why),
        400..=499 => Post::Invalid(why),
        _ => Post::Later(retry_after, why),
    }
}

/// The plain-text form of a message, for a receiver that refused its blocks.
fn plain(payload: &Value) -> Value {
    json!({"text": payload["text"].as_str().unwrap_or("vigil alert")})
}

/// How a delivery attempt ended, for the outbox.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    Sent,
    /// Not delivered yet: try again after this long (a receiver's `Retry-After`, or backoff),
    /// with this payload (changed when the old one was refused as invalid).
    Later(Duration, Value),
    /// Refused even as plain text: given up.
    GaveUp,
}

/// Attempts inline waits at most this long for a `Retry-After`; longer ones wait for a
/// later cycle.
const INLINE_WAIT: Duration = Duration::from_secs(2);

/// Posts `payload` up to three times (0, 0.2 and 1 s apart, or after a short `Retry-After`),
/// and says what to do next. Counts `sent`, `retried`, `failed` (a round that did not deliver)
/// and `gave_up` in `vigil_invariant_alerts_total{result}`.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    mut payload: Value,
    metrics: &Metrics,
) -> Delivery {
    let mut backoff = Duration::from_millis(200);
    let mut later = Duration::from_secs(1);
    for attempt in 1..=3 {
        match post(client, url, &payload).await {
            Post::Sent => {
                metrics.invariant_alerts_total.inc(&["sent"]);
                return Delivery::Sent;
            }
            Post::Invalid(why) => {
                if payload.get("blocks").is_none() {
                    tracing::warn!(error = %why, "invariant alert refused even as plain text; given up");
                    metrics.invariant_alerts_total.inc(&["gave_up"]);
                    return Delivery::GaveUp;
                }
                tracing::warn!(error = %why, "invariant alert refused as invalid; sending it as plain text");
                payload = plain(&payload);
            }
            Post::Later(after, why) => {
                tracing::warn!(attempt, error = %why, "invariant alert delivery failed");
                let wait = after.unwrap_or(backoff);
                later = after.unwrap_or(later);
                if attempt == 3 || wait > INLINE_WAIT {
                    break;
                }
                // Real time between network retries, not injected time.
                tokio::time::sleep(wait).await;
                backoff *= 5;
            }
        }
        metrics.invariant_alerts_total.inc(&["retried"]);
    }
    metrics.invariant_alerts_total.inc(&["failed"]);
    Delivery::Later(later, payload)
}
