//! The dashboard: one page at `/` (HTML, script and style embedded in the binary: no build
//! step, no CDN, nothing fetched from elsewhere), the summary it draws (`GET /api/dashboard`)
//! and, through [`super::stream`], the live changes that keep it current.
//!
//! The page itself holds no data, so it is served without a token even where reads need one;
//! the data it loads follows the API's rules. `EventSource` cannot send an `Authorization`
//! header, so a GET may carry the token as the `access_token` query parameter instead
//! (RFC 6750 §2.3): the page reads it from its own address (`/#access_token=TOKEN`) and sends
//! it that way. State-changing calls still need the header.

use super::stream::{HOURS, HOUR_MS};
use super::ApiState;
use crate::app::App;
use crate::clock::rfc3339_ms;
use crate::orchestrator::window;
use crate::sources::SourceState;
use crate::store::{IntentQuery, IntentStore, InvariantStore, StoreError};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// Audit entries the page lists.
pub const AUDIT_ENTRIES: usize = 50;
/// Latest intents the page lists.
pub const LATEST_INTENTS: usize = 20;
/// Violations shown per red invariant (the store keeps a few more).
const VIOLATIONS_SHOWN: usize = 5;
/// Intents read to chart the last 24 h: past this many in a day, the oldest hours undercount.
const CHART_INTENTS: usize = 5000;

/// What the page may load and run: its own files only. Data is inserted as text (never as
/// markup); this policy is the second line should that ever slip.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/dashboard", get(summary))
        .route("/api/stream", get(super::stream::stream))
}

/// The page's own files: served to anyone who can reach the API (they hold no data).
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/app.js" | "/app.css")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // The page changes with the binary: always ask (cheap, and never a stale script).
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// For a GET that carries `?access_token=TOKEN`: the headers with that token as
/// `Authorization: Bearer`, for [`super::authorize`] to check as it checks any. `None` when
/// there is no such parameter (or the request changes state: those send the header).
pub fn query_bearer(req: &axum::extract::Request) -> Option<HeaderMap> {
    if req.method() != axum::http::Method::GET {
        return None;
    }
    let Query(q) = Query::<HashMap<String, String>>::try_from_uri(req.uri()).ok()?;
    let token = q.get("access_token")?;
    let mut headers = req.headers().clone();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    Some(headers)
}

/// `GET /api/dashboard`: one object with everything the page draws.
async fn summary(State(s): State<ApiState>) -> Response {
    let sources = s.health.snapshot();
    let app = s.app.clone();
    match tokio::task::spawn_blocking(move || collect(&app, sources)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => super::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => super::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The dashboard's summary: the `vigil status` data (playbooks, flags, budgets, locks,
/// intents by state), the windows, sources, invariants with their last violations, the latest
/// intents, the last audit entries (oldest first) and the chart's counts per hour. Blocking.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub now: String,
    pub now_ms: i64,
    /// The config's time zone, which windows are local to.
    pub timezone: String,
    pub version: &'static str,
    pub config: String,
    #[serde(flatten)]
    pub orchestrator: crate::orchestrator::status::OrchestratorStatus,
    pub windows: Vec<WindowState>,
    pub sources: Vec<SourceView>,
    pub invariants: Vec<InvariantView>,
    pub latest_intents: Vec<crate::intent::Intent>,
    pub audit: Vec<crate::audit::AuditEntry>,
    pub chart: Chart,
}

/// A maintenance window now.
#[derive(Debug, Serialize)]
pub struct WindowState {
    pub name: String,
    /// As configured: `"03:00-07:00"`.
    pub at: String,
    pub timezone: String,
    pub open: bool,
    /// While open: when it closes, local time (`2026-11-30 07:00 EST`).
    pub closes_at: Option<String>,
    /// While closed: the next opening, local time, and how far off.
    pub opens_at: Option<String>,
    pub opens_in_s: Option<f64>,
}

/// A source, up or down with its reason.
#[derive(Debug, Serialize)]
pub struct SourceView {
    pub source: String,
    pub kind: String,
    pub up: bool,
    pub reason: Option<String>,
    pub since: String,
}

/// An invariant with its state, runbook and last violations (observed rows).
#[derive(Debug, Serialize)]
pub struct InvariantView {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub severity: String,
    /// `green`, `red` or `unknown` (never evaluated).
    pub state: String,
    pub since: Option<String>,
    pub runbook: Option<String>,
    pub violations: Vec<Value>,
    /// The signal line of each violation shown, when the invariant has a `signal`.
    pub signals: Vec<String>,
}

/// Counts per hour over the last 24 h, oldest hour first.
#[derive(Debug, Serialize)]
pub struct Chart {
    /// Start of each hour (ms since the epoch).
    pub hours: Vec<i64>,
    /// Events the pipeline saw (counted in memory since the daemon started).
    pub events: Vec<u64>,
    /// Intents created (from the store).
    pub intents: Vec<u64>,
}

pub fn collect(app: &App, sources: Vec<SourceState>) -> Result<Summary, StoreError> {
    let store = app.store()?;
    let now = app.clock.now();
    let now_ms = now.as_millisecond();
    let orchestrator = crate::orchestrator::status::collect(app)?;
    let windows = app
        .config
        .orchestrator
        .windows
        .iter()
        .map(|(name, w)| window_state(app, name, w.at, now))
        .collect();
    let sources = sources
        .into_iter()
        .map(|s| SourceView {
            source: s.source,
            kind: s.kind,
            up: s.up,
            reason: s.reason,
            since: rfc3339_ms(s.since_ms),
        })
        .collect();
    let states = store.invariant_states()?;
    let invariants = app
        .config
        .invariants
        .invariants
        .values()
        .map(|inv| {
            let st = states.get(&inv.id);
            let rows: Vec<serde_json::Map<String, Value>> = st
                .and_then(|s| serde_json::from_str(&s.violations).ok())
                .unwrap_or_default();
            let rows: Vec<_> = rows.into_iter().take(VIOLATIONS_SHOWN).collect();
            InvariantView {
                id: inv.id.clone(),
                name: inv.name.clone(),
                tier: inv.tier.clone(),
                severity: inv.severity.as_str().into(),
                state: st.map_or("unknown".into(), |s| s.state.clone()),
                since: st.map(|s| rfc3339_ms(s.since_ms)),
                runbook: inv.runbook.clone(),
                signals: inv
                    .signal
                    .as_deref()
                    .map(|sig| {
                        rows.iter()
                            .map(|r| crate::invariants::harness::fill_signal(sig, r))
                            .collect()
                    })
                    .unwrap_or_default(),
                violations: rows.into_iter().map(Value::Object).collect(),
            }
        })
        .collect();
    let recent = store.intents(&IntentQuery {
        limit: Some(CHART_INTENTS),
        ..Default::default()
    })?;
    let first_hour = (now_ms.div_euclid(HOUR_MS) - (HOURS as i64 - 1)) * HOUR_MS;
    let mut intents_per_hour = vec![0u64; HOURS];
    for i in &recent {
        if i.created_at >= first_hour {
            let k = ((i.created_at - first_hour) / HOUR_MS) as usize;
            if let Some(n) = intents_per_hour.get_mut(k) {
                *n += 1;
            }
        }
    }
    let chart = Chart {
        hours: (0..HOURS as i64)
            .map(|k| first_hour + k * HOUR_MS)
            .collect(),
        events: app.changes.events_per_hour(now_ms).to_vec(),
        intents: intents_per_hour,
    };
    Ok(Summary {
        now: rfc3339_ms(now_ms),
        now_ms,
        timezone: app
            .config
            .timezone
            .0
            .iana_name()
            .unwrap_or("local")
            .to_string(),
        version: env!("CARGO_PKG_VERSION"),
        config: app.config.origin.clone(),
        orchestrator,
        windows,
        sources,
        invariants,
        latest_intents: recent.into_iter().take(LATEST_INTENTS).collect(),
        audit: crate::audit::tail(app, AUDIT_ENTRIES)?,
        chart,
    })
}

fn window_state(
    app: &App,
    name: &str,
    span: crate::orchestrator::config::WindowSpan,
    now: jiff::Timestamp,
) -> WindowState {
    let tz = crate::orchestrator::gates::window_tz(app, name);
    let local = |t: jiff::Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    };
    let day = window::window_day(span, tz, now);
    let (open_at, close_at) = window::occurrence(span, tz, day).unwrap_or((now, now));
    let open = open_at <= now && now < close_at;
    WindowState {
        name: name.to_string(),
        at: format!(
            "{}-{}",
            span.start.strftime("%H:%M"),
            span.end.strftime("%H:%M")
        ),
        timezone: tz.iana_name().unwrap_or("local").to_string(),
        open,
        closes_at: open.then(|| local(close_at)),
        opens_at: (!open).then(|| local(open_at)),
        opens_in_s: (!open).then(|| window::opens_in(span, tz, now).as_secs_f64()),
    }
}
