//! Local stand-ins the demo runs on 127.0.0.1: a Slack incoming webhook that keeps what it
//! receives, and the Anthropic admin API that keeps each key's status like the real one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Failure;

pub const ANTHROPIC_ADMIN_KEY: &str = "sk-ant-admin-demo";

/// A running server; stopped when dropped.
pub struct Server {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: Router) -> Result<Server, Failure> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::Run(format!("cannot open a loopback port: {e}")))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| Failure::Run(e.to_string()))?
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server { url, task })
}

/// What Slack received, in order.
#[derive(Clone, Default)]
pub struct SlackInbox(Arc<Mutex<Vec<Value>>>);

impl SlackInbox {
    pub fn messages(&self) -> Vec<Value> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

pub async fn slack() -> Result<(Server, SlackInbox), Failure> {
    let inbox = SlackInbox::default();
    let app = Router::new()
        .route(
            "/services/demo",
            post(
                |State(inbox): State<SlackInbox>, Json(body): Json<Value>| async move {
                    if let Ok(mut m) = inbox.0.lock() {
                        m.push(body);
                    }
                    "ok"
                },
            ),
        )
        .with_state(inbox.clone());
    Ok((serve(app).await?, inbox))
}

/// Each key's status at the provider (`true`: active).
#[derive(Clone, Default)]
pub struct AnthropicKeys(Arc<Mutex<BTreeMap<String, bool>>>);

impl AnthropicKeys {
    pub fn active(&self, id: &str) -> bool {
        self.0
            .lock()
            .map(|k| k.get(id).copied().unwrap_or(false))
            .unwrap_or(false)
    }

    pub fn add(&self, id: &str) {
        if let Ok(mut k) = self.0.lock() {
            k.insert(id.into(), true);
        }
    }
}

fn admin(headers: &HeaderMap) -> bool {
    headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(ANTHROPIC_ADMIN_KEY)
}

/// `GET` / `POST /v1/organizations/api_keys/{id}` (`{"status": "active" | "inactive"}`), and
/// the usage report per key, empty: in the demo, theft detection works from the applications'
/// own usage reports (the provider's count is tested in tests/tests/functions/key_theft.rs).
pub async fn anthropic() -> Result<(Server, AnthropicKeys), Failure> {
    let keys = AnthropicKeys::default();
    let app = Router::new()
        .route(
            "/v1/organizations/usage_report/messages",
            get(|headers: HeaderMap| async move {
                if !admin(&headers) {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"error": "admin key required"})));
                }
                (StatusCode::OK, Json(json!({"data": [], "has_more": false, "next_page": null})))
            }),
        )
        .route(
            "/v1/organizations/api_keys/{id}",
            get(
                |State(keys): State<AnthropicKeys>, Path(id): Path<String>, headers: HeaderMap| async move {
                    if !admin(&headers) {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "admin key required"})));
                    }
                    let known = keys.0.lock().ok().and_then(|k| k.get(&id).copied());
                    match known {
                        Some(active) => (
                            StatusCode::OK,
                            Json(json!({"id": id, "type": "api_key", "status": if active { "active" } else { "inactive" }})),
                        ),
                        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such key"}))),
                    }
                },
            )
            .post(
                |State(keys): State<AnthropicKeys>,
                 Path(id): Path<String>,
                 headers: HeaderMap,
                 Json(body): Json<Value>| async move {
                    if !admin(&headers) {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "admin key required"})));
                    }
                    let status = body["status"].as_str().unwrap_or_default().to_string();
                    if status != "active" && status != "inactive" {
                        return (StatusCode::BAD_REQUEST, Json(json!({"error": "status must be active or inactive"})));
                    }
                    if let Ok(mut k) = keys.0.lock() {
                        k.insert(id.clone(), status == "active");
                    }
                    (StatusCode::OK, Json(json!({"id": id, "type": "api_key", "status": status})))
                },
            ),
        )
        .with_state(keys.clone());
    Ok((serve(app).await?, keys))
}
