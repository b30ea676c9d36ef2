//! The supervisor's part of the HTTP API, the same functions the CLI calls:
//! `GET /api/units` (rows like `vigil units list --json`, with `degraded` and `bundle`),
//! `GET /api/units/{name}` (like `vigil units show NAME --json`), and
//! `POST /api/units/{name}/{start|stop|restart|release|snapshot}` (bearer token), answered once
//! the change is done.

use super::{view, ActError, SupervisorError, Verb};
use crate::api::{authorize, error, ApiState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/units", get(list))
        .route("/api/units/{name}", get(show))
        .route("/api/units/{name}/{verb}", post(act))
}

async fn blocking(
    f: impl FnOnce() -> Result<serde_json::Value, view::ViewError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e @ view::ViewError::NoSuchUnit { .. })) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list(State(s): State<ApiState>) -> Response {
    blocking(move || view::rows(&s.app).map(serde_json::Value::from)).await
}

async fn show(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    blocking(move || view::show(&s.app, &name)).await
}

async fn act(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((name, verb)): Path<(String, String)>,
) -> Response {
    if let Err(e) = authorize(&s.app, &headers) {
        return e.into_response();
    }
    let Some(verb) = Verb::parse(&verb) else {
        let verbs: Vec<&str> = Verb::ALL.iter().map(|v| v.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("no unit action {verb:?}; use one of {}", verbs.join(", ")),
        );
    };
    if !s.app.config.units.contains_key(&name) {
        let names: Vec<&str> = s.app.config.units.keys().map(String::as_str).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no unit named {name:?} is configured; units: {}",
                names.join(", ")
            ),
        );
    }
    match super::act(&s.app, &name, verb).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let status = match &e {
                ActError::Supervisor(SupervisorError::NoSuchUnit(_)) => StatusCode::NOT_FOUND,
                ActError::Supervisor(SupervisorError::Disabled { .. }) => StatusCode::CONFLICT,
                ActError::Supervisor(SupervisorError::NoStateDir(_)) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                ActError::Supervisor(SupervisorError::Timeout { .. }) => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                ActError::NeedsDaemon(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}
