//! The orchestrator's part of the HTTP API: the same functions the CLI calls.
//! `GET /api/orchestrator` (the `vigil status` data), `GET /api/escalation`,
//! `POST /api/escalation/{kind}/clear`, `GET|POST /api/symptoms`, `GET /api/audit?n=`.
//! Calls that change state need the bearer token.

use crate::api::{accept, authorize, error, ApiState};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/orchestrator", get(status))
        .route("/api/escalation", get(escalation))
        .route("/api/escalation/{kind}/clear", post(clear))
        .route("/api/symptoms", get(symptoms).post(record))
        .route("/api/audit", get(audit))
}

async fn run<T: serde::Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    run(move || super::status::collect(&s.app)).await
}

async fn escalation(State(s): State<ApiState>) -> Response {
    run(move || crate::escalation::status(&s.app)).await
}

async fn clear(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(kind): Path<String>,
) -> Response {
    if let Err(e) = authorize(&s.app, &headers) {
        return e.into_response();
    }
    run(move || {
        crate::escalation::clear(&s.app, &kind, "cleared through the API")
            .map(|was| json!({"kind": kind, "was_armed": was.is_some()}))
    })
    .await
}

async fn symptoms(State(s): State<ApiState>) -> Response {
    run(move || {
        let since = s.app.clock.now_ms() - crate::escalation::policy(&s.app).window_ms;
        use crate::store::EscalationStore;
        s.app.store()?.symptoms(None, since, 10_000)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SymptomBody {
    kind: String,
    #[serde(default)]
    meta: crate::event::Data,
}

async fn record(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<SymptomBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let b = match accept(
        &s.app,
        &headers,
        body,
        r#"{"kind": "vllm_oom", "meta": {}}"#,
    ) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = crate::intent::validate_type(&b.kind) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("symptom kind: {e}"),
        );
    }
    run(move || {
        crate::escalation::record(&s.app, &b.kind, b.meta)
            .map(|r| json!({"id": r.id, "count": r.count, "armed": r.armed.map(|f| f.reason)}))
    })
    .await
}

#[derive(Deserialize)]
struct AuditParams {
    n: Option<usize>,
}

async fn audit(State(s): State<ApiState>, Query(p): Query<AuditParams>) -> Response {
    run(move || crate::audit::tail(&s.app, p.n.unwrap_or(100).min(10_000))).await
}
