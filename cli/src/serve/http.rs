//! The webhook's routes on a real HTTP server: each request is mapped to the `HttpRequest`
//! the Function URL hands the handler and its `HttpResponse` back, so verification, limits
//! and answers are the deployed ones. Plus `GET /health` and `GET /metrics`.

use std::sync::Arc;
use std::time::Instant;

use super::bus::OutboxBus;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use budget_webhook::handler::{MAX_BODY_BYTES, Webhook};
use budget_webhook::http::{HttpRequest, HttpResponse};
use serde_json::json;
use spendguard_app::ports::store::StateStore;
use spendguard_domain::records::SwitchState;
use tracing::debug;

use super::metrics::Metrics;
use super::schedule::Health;

#[derive(Clone)]
pub struct Routes {
    pub webhook: Arc<Webhook>,
    pub store: Arc<dyn StateStore>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub bus: Arc<OutboxBus>,
    /// One permit per webhook request being served.
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// How long a request body may take to arrive (a sender that stalls holds a connection).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Webhook requests served at once; more are answered 503 at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// The webhook's routes, for `--listen` (reachable by senders).
pub fn router(routes: Routes) -> Router {
    Router::new().fallback(webhook).with_state(routes)
}

/// `/health` and `/metrics`, for `--metrics-listen` (for monitors, not for senders).
pub fn ops_router(routes: Routes) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(routes)
}

fn json_response(response: &HttpResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, response.body.to_string()).into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Only the webhook's own routes are labelled by path (anything else is `other`: paths sent
/// by strangers must not grow the metrics).
fn route_label(path: &str) -> &'static str {
    match path {
        "/usage" => "/usage",
        "/authorize" => "/authorize",
        "/gcp/pubsub" => "/gcp/pubsub",
        "/sns" => "/sns",
        "/status" => "/status",
        _ => "other",
    }
}

async fn webhook(State(routes): State<Routes>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    debug!(method = %parts.method, path = route_label(&path), "request started");
    let Ok(_slot) = routes.in_flight.clone().try_acquire_owned() else {
        return json_response(&HttpResponse::error(
            503,
            format!("more than {MAX_IN_FLIGHT} requests in flight; retry shortly"),
            None,
        ));
    };
    let response =
        match tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, MAX_BODY_BYTES + 1)).await {
            Err(_) => HttpResponse::error(
                408,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
                None,
            ),
            // what the handler answers a body over the limit, without reading the rest
            Ok(Err(_)) => HttpResponse::error(
                413,
                format!("body larger than {MAX_BODY_BYTES} bytes"),
                None,
            ),
            Ok(Ok(body)) => {
                let request = HttpRequest {
                    method: parts.method.as_str().to_ascii_uppercase(),
                    path: path.clone(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_ascii_lowercase(),
                                v.to_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                    body: body.to_vec(),
                };
                routes.webhook.http(request).await
            }
        };
    routes.metrics.request(
        route_label(&path),
        response.status,
        started.elapsed().as_secs_f64(),
        &response.body,
    );
    json_response(&response)
}

/// 200 while the guard is guarding; 503 naming what is wrong while the last scheduled check
/// failed, a key-guard delivery is failing (its rows wait), or outbox rows were set aside, so a
/// load balancer or monitor sees a guard that is not guarding.
async fn health(State(routes): State<Routes>) -> Response {
    let last = routes.health.last_check();
    let check_failing = last.as_ref().is_some_and(|c| c.error.is_some());
    let outbox = routes.bus.health().await;
    let outbox_failing = match &outbox {
        Ok(o) => o.key_guard_failing || o.dead_lettered > 0,
        Err(_) => true,
    };
    let failing = check_failing || outbox_failing;
    let body = json!({
        "status": if failing { "failing" } else { "ok" },
        "last_check": last.map(|c| json!({"at": c.at, "error": c.error})),
        "outbox": match &outbox {
            Ok(o) => json!({"pending": o.pending, "dead_lettered": o.dead_lettered, "key_guard_failing": o.key_guard_failing}),
            Err(e) => json!({"error": e}),
        },
    });
    json_response(&HttpResponse {
        status: if failing { 503 } else { 200 },
        body,
    })
}

async fn metrics(State(routes): State<Routes>) -> Response {
    let engaged = match routes.store.active_kill_switches().await {
        Ok(switches) => switches
            .iter()
            .filter(|s| matches!(s.value.state, SwitchState::Engaged { .. }))
            .count() as i64,
        Err(e) => {
            return json_response(&HttpResponse::error(
                503,
                format!("store unavailable: {e}"),
                None,
            ));
        }
    };
    if let Ok(outbox) = routes.bus.health().await {
        routes.metrics.outbox(&outbox.pending);
    }
    let mut r = Response::new(Body::from(routes.metrics.encode(engaged)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}
