//! The canaries' part of the HTTP API: `POST /api/canaries/{name}/run` (bearer token; body
//! `{"candidate": {...}, "path": "spare"|"quiesced", "mode": "canary"|"predictive"}`, all
//! optional) runs one and answers its report once it has ended; `GET /api/canaries` lists each
//! canary with its last run and the time until the next quiesced run is allowed. The CLI's
//! `vigil canary run` goes through here when a daemon runs: the daemon owns the supervised
//! production unit, the gates and the locks.

use super::{CanaryError, Request};
use crate::api::{error, ApiState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/canaries", get(list))
        .route("/api/canaries/{name}/run", post(run))
}

async fn list(State(s): State<ApiState>) -> Response {
    match tokio::task::spawn_blocking(move || super::list(&s.app)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn run(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Option<Json<serde_json::Value>>,
) -> Response {
    // An empty body is a run with the configured defaults.
    let body = body.map_or_else(|| serde_json::json!({}), |Json(v)| v);
    let req: Request = match accept_parsed(
        &s.app,
        &headers,
        serde_json::from_value(body)
            .map(Json)
            .map_err(|e| e.to_string()),
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match super::run(s.app.clone(), &name, req).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ CanaryError::NoSuchCanary(..)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `crate::api::accept` for a body already parsed here (so an empty body is allowed).
fn accept_parsed<T>(
    app: &crate::app::App,
    headers: &HeaderMap,
    body: Result<Json<T>, String>,
) -> Result<T, crate::api::ApiError> {
    crate::api::authorize(app, headers)?;
    body.map(|Json(b)| b).map_err(|e| {
        crate::api::ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{e}; send {{\"candidate\": {{...}}, \"path\": \"spare\", \"mode\": \"canary\"}}"
            ),
        )
    })
}
