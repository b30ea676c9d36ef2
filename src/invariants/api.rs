//! `POST /api/invariants/run-cycle` (bearer token; 409 while a cycle runs) and
//! `GET /api/invariants` (the list with states).

use super::harness::HarnessError;
use crate::api::{authorize, error, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/invariants", get(list))
        .route("/api/invariants/run-cycle", post(run_cycle))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    only: Vec<String>,
}

async fn run_cycle(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Option<Json<RunBody>>,
) -> Response {
    if let Err(e) = authorize(&s.app, &headers) {
        return e.into_response();
    }
    let harness = match super::shared(&s.app) {
        Ok(h) => h,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let only = body.map(|b| b.0.only).filter(|o| !o.is_empty());
    match harness.try_run_cycle(only.as_deref()).await {
        Ok(r) => {
            for e in r.events() {
                let _ = s.events.try_send(e);
            }
            Json(r).into_response()
        }
        Err(HarnessError::Busy) => error(StatusCode::CONFLICT, HarnessError::Busy.to_string()),
        Err(e @ HarnessError::Unknown(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list(State(s): State<ApiState>) -> Response {
    match super::shared(&s.app).and_then(|h| h.list().map_err(|e| e.to_string())) {
        Ok(l) => Json(l).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
