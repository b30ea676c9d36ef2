//! The HTTP API on `[api] listen` (loopback by default): `/healthz`, `/metrics`, and JSON over
//! the store. Calls that change state need `Authorization: Bearer <token>` (see [`token`]); on
//! an address other than loopback, reads need it too (all but `/healthz` and `/readyz`, which
//! service managers and load balancers probe without credentials, and the dashboard page's own
//! files, which hold no data; a GET may carry the token as `?access_token=`, see [`dashboard`]).

pub mod dashboard;
pub mod stream;
pub mod token;

use crate::app::App;
use crate::event::Event;
use crate::intent::{queue, NewIntent};
use crate::sources::Health;
use crate::store::{IntentQuery, IntentStore};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

#[derive(Clone)]
pub struct ApiState {
    pub app: Arc<App>,
    pub health: Arc<Health>,
    /// Into the rule engine, like any source.
    pub events: mpsc::Sender<Event>,
}

pub fn router(app: Arc<App>, health: Arc<Health>, events: mpsc::Sender<Event>) -> Router {
    let open_reads = app.config.api.listen.ip().is_loopback();
    let router = Router::new()
        .route("/api/events", post(post_event))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/sources", get(sources))
        .route("/api/fleet", get(fleet))
        .route("/api/intents", get(list_intents).post(submit_intent))
        .route("/api/intents/{id}", get(show_intent))
        .merge(crate::orchestrator::api::routes())
        .merge(crate::invariants::api::routes())
        .merge(crate::supervisor::api::routes())
        .merge(crate::canary::api::routes())
        .merge(dashboard::routes())
        .layer(axum::extract::DefaultBodyLimit::max(
            app.config.api.max_body_size,
        ))
        .with_state(ApiState {
            app: app.clone(),
            health,
            events,
        });
    if open_reads {
        router
    } else {
        router.layer(axum::middleware::from_fn_with_state(
            app,
            reads_need_the_token,
        ))
    }
}

/// Off loopback, every call but the health probes presents the token (state-changing calls
/// check it again in their handler, which is what they do on loopback too).
async fn reads_need_the_token(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") || dashboard::is_page(req.uri().path()) {
        return next.run(req).await;
    }
    // The dashboard's EventSource sends the token in the query (it cannot set headers).
    let from_query = dashboard::query_bearer(&req);
    match authorize(&app, from_query.as_ref().unwrap_or(req.headers())) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown`, with limits an idle or hostile crowd of
/// clients cannot get past: at most `max_connections` at once (more wait in the kernel's
/// backlog, so file descriptors stay bounded) and each request's headers within
/// `header_timeout`, which also closes keep-alive connections left idle that long.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: crate::config::ApiConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let header_timeout = limits.header_timeout.0;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("never closed"),
            _ = async { drop(shutdown.wait_for(|s| *s).await) } => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!("API: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { drop(shutdown.wait_for(|s| *s).await) } => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stop = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { drop(stop.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// An error as JSON `{"error": "..."}` with a status.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    ApiError(status, msg.into()).into_response()
}

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Checks the bearer token of a call that changes state: the daemon's ([`App::api_token`],
/// set at start), else the config's inline `[api] token`.
pub fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = app.api_token.get().map(|t| t.secret.as_str()).or(app
        .config
        .api
        .token
        .as_deref())
    else {
        return Err(ApiError(StatusCode::FORBIDDEN, "this call changes state and no token is configured; set `token_file` under [api] and send `Authorization: Bearer <token>`".into()));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match given {
        Some(t) if token::constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token".into(),
        )),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>` header".into(),
        )),
    }
}

/// The start of every call that changes state: the bearer token, then the JSON body, with an
/// example of what to send when it does not parse.
pub fn accept<T>(
    app: &App,
    headers: &HeaderMap,
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    example: &str,
) -> Result<T, ApiError> {
    authorize(app, headers)?;
    body.map(|Json(b)| b).map_err(|e| {
        // A body over the limit keeps its 413; anything else that does not parse is a 400.
        let status = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, format!("{}; send {example}", e.body_text()))
    })
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// `{"status": "ok", "sources_down": [...]}`, or 503 with `"status": "degraded"` and `store`
/// saying what is wrong when the store cannot keep what it is given (deleted, replaced,
/// corrupt, read-only).
async fn healthz(State(s): State<ApiState>) -> Response {
    let sources = s.health.snapshot();
    let down: Vec<_> = sources
        .iter()
        .filter(|s| !s.up)
        .map(|s| s.source.clone())
        .collect();
    let app = s.app.clone();
    let store =
        tokio::task::spawn_blocking(move || app.store().map_err(|e| e.to_string())?.health())
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
    match store {
        Ok(()) => Json(json!({"status": "ok", "sources_down": down})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "store": why, "sources_down": down})),
        )
            .into_response(),
    }
}

/// 200 once every source and the inbox have attached, 503 with the ones still starting before:
/// what a script waits for before it writes lines a file source must see.
async fn readyz(State(s): State<ApiState>) -> Response {
    let starting = s.health.starting();
    let status = if starting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": starting.is_empty(), "starting": starting})),
    )
        .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.app.metrics.render(),
    )
        .into_response()
}

async fn sources(State(s): State<ApiState>) -> Response {
    Json(s.health.snapshot()).into_response()
}

/// The hosts sharing the store: last seen, sources down, runs in flight (`FleetStore::fleet`).
async fn fleet(State(s): State<ApiState>) -> Response {
    let app = s.app.clone();
    let hosts =
        tokio::task::spawn_blocking(move || crate::store::FleetStore::fleet(&*app.store()?));
    match hosts.await {
        Ok(Ok(hosts)) => Json(hosts).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct ListParams {
    status: Option<String>,
    #[serde(rename = "type")]
    intent_type: Option<String>,
    limit: Option<usize>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
}

async fn list_intents(State(s): State<ApiState>, Query(p): Query<ListParams>) -> Response {
    let status = match p.status.as_deref().map(str::parse).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let q = IntentQuery {
        status,
        intent_type: p.intent_type,
        limit: Some(p.limit.unwrap_or(100)),
    };
    let app = s.app.clone();
    match blocking(move || {
        app.store()
            .and_then(|st| st.intents(&q))
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

async fn show_intent(State(s): State<ApiState>, Path(id): Path<i64>) -> Response {
    let app = s.app.clone();
    match blocking(move || {
        app.store()
            .and_then(|st| st.intent(id))
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Some(i)) => Json(i).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no intent {id}")),
        Err(r) => r,
    }
}

async fn submit_intent(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<
        Json<serde_json::Map<String, serde_json::Value>>,
        axum::extract::rejection::JsonRejection,
    >,
) -> Response {
    let body = match accept(
        &s.app,
        &headers,
        body,
        r#"{"intent_type": "...", "priority": 0-10, "reason": "...", "data": {}}"#,
    ) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let intent = match NewIntent::from_body(&body, "api") {
        Ok(i) => i,
        Err(m) => return error(StatusCode::UNPROCESSABLE_ENTITY, m),
    };
    let app = s.app.clone();
    match tokio::task::spawn_blocking(move || queue::submit(&app, &intent)).await {
        Ok(Ok(put)) => {
            let created = matches!(put, crate::store::Put::Inserted(_));
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(json!({"id": put.id(), "duplicate": !created}))).into_response()
        }
        Ok(Err(queue::SubmitError::Invalid(m))) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
        // The store is away: the intent waits in the inbox and is stored when it is back, so
        // the caller must not retry (that would be a second proposal).
        Ok(Err(e @ queue::SubmitError::Deferred { .. })) => (
            StatusCode::ACCEPTED,
            Json(json!({"deferred": true, "reason": e.to_string()})),
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: crate::event::Data,
    source: Option<String>,
}

async fn post_event(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<EventBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let b = match accept(&s.app, &headers, body, r#"{"type": "...", "data": {}}"#) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if b.kind.is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "`type` must not be empty");
    }
    let ev = Event::new(
        b.source.unwrap_or_else(|| "api".into()),
        b.kind,
        s.app.clock.now_ms(),
        b.data,
    );
    match s.events.try_send(ev) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response(),
        Err(mpsc::error::TrySendError::Full(_)) => {
            s.app.metrics.events_dropped_total.inc(&["queue_full"]);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event queue is full; retry shortly",
            )
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "vigil is stopping")
        }
    }
}
