//! Stand-ins for the providers' admin APIs (Anthropic, OpenAI) on 127.0.0.1: each keeps the
//! state the provider keeps (keys, spend limits, rate limits) and refuses what the provider
//! refuses — wrong method or path, a missing or non-admin key, a body in the wrong units — in
//! the provider's own error shape, so a test that passes against one proves the request was
//! right. Shapes: `../shared/reference/FACTS.md` ("Provider-side limits").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use crate::standin::{Received, Reply, StandIn};

/// The admin key each stand-in accepts (what the test worlds store in Secrets Manager).
pub const ANTHROPIC_ADMIN_KEY: &str = "sk-ant-admin-test";
pub const OPENAI_ADMIN_KEY: &str = "sk-admin-openai-test";

/// A provider's keys as the provider sees them.
#[derive(Default)]
pub struct ProviderState {
    /// key id -> active
    pub keys: Mutex<BTreeMap<String, bool>>,
    /// API key values that authenticate (for rotation tests)
    pub valid: Mutex<BTreeSet<String>>,
    /// The next this many admin writes fail with a 500.
    pub fail_next: AtomicUsize,
    /// Admin writes seen, as (key id, new state).
    pub writes: Mutex<Vec<(String, String)>>,
    /// While set, an admin write is carried out but its answer waits for the gate.
    pub gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Admin writes whose answer was held at the gate.
    pub held: AtomicUsize,
    /// OpenAI: the project each key belongs to (its admin paths name both).
    pub projects: Mutex<BTreeMap<String, String>>,
    /// Hard spend limits in cents, by target: `organization`, `project:<id>` (OpenAI),
    /// `workspace:<id>` (Anthropic).
    pub spend_limits: Mutex<BTreeMap<String, u64>>,
    /// OpenAI: each project's per-model rate limits, by rate limit id.
    pub rate_limits: Mutex<BTreeMap<String, RateLimits>>,
    /// OpenAI: the organisation's projects (a project stays when its keys are deleted).
    pub openai_projects: Mutex<BTreeSet<String>>,
    /// Anthropic: the organisation's rate-limit entries, by rate limit id.
    pub org_rate_limits: Mutex<BTreeMap<String, OrgRateLimit>>,
    /// Anthropic: each workspace's overrides, by (workspace, rate limit id), by limiter type.
    pub workspace_overrides: Mutex<BTreeMap<(String, String), BTreeMap<String, u64>>>,
    /// Anthropic: the organisation's workspaces.
    pub workspaces: Mutex<BTreeSet<String>>,
    /// Anthropic: the status spend limits answer with, "not enabled" for an organisation
    /// without the early access (403 or 404; 0: enabled).
    pub spend_limits_not_enabled: std::sync::atomic::AtomicU16,
    /// OpenAI: the organisation's costs in dollars per UTC day (no project), as
    /// `GET /v1/organization/costs` reports them.
    pub openai_costs: Mutex<BTreeMap<chrono::NaiveDate, rust_decimal::Decimal>>,
}

/// One of an Anthropic organisation's rate-limit entries: its group, models and limits.
#[derive(Debug, Clone)]
pub struct OrgRateLimit {
    pub group: String,
    pub models: Vec<String>,
    pub limits: BTreeMap<String, u64>,
}

/// Anthropic's rate limiter types.
const ANTHROPIC_LIMITER_TYPES: [&str; 9] = [
    "fast_itpmca",
    "fast_otpm",
    "input_tokens_per_minute",
    "input_tokens_per_minute_cache_aware",
    "output_tokens_per_minute",
    "requests_per_minute",
    "tokens_per_day",
    "tokens_per_minute",
    "tool_uses_per_second",
];

/// One OpenAI project's rate limit objects, by id.
pub type RateLimits = BTreeMap<String, Map<String, Value>>;

impl ProviderState {
    pub fn add(&self, id: &str, active: bool) {
        self.keys.lock().unwrap().insert(id.into(), active);
    }

    /// An OpenAI project key (active: OpenAI keys have no disabled state).
    pub fn add_in_project(&self, project: &str, id: &str) {
        self.add(id, true);
        self.projects
            .lock()
            .unwrap()
            .insert(id.into(), project.into());
        self.openai_projects.lock().unwrap().insert(project.into());
    }

    /// The hard spend limit (cents) on `target`, as the provider holds it.
    pub fn spend_limit(&self, target: &str) -> Option<u64> {
        self.spend_limits.lock().unwrap().get(target).copied()
    }

    /// Sets (or with `None` removes) a spend limit as a person would in the console.
    pub fn set_spend_limit_by_hand(&self, target: &str, cents: Option<u64>) {
        if let Some(project) = target.strip_prefix("project:") {
            self.openai_projects.lock().unwrap().insert(project.into());
        }
        let mut limits = self.spend_limits.lock().unwrap();
        match cents {
            Some(c) => limits.insert(target.into(), c),
            None => limits.remove(target),
        };
    }

    /// An OpenAI per-model rate limit of `project`: `limits` are its `max_*` fields.
    pub fn add_rate_limit(&self, project: &str, id: &str, model: &str, limits: Value) {
        let mut object = limits.as_object().cloned().unwrap_or_default();
        object.insert("object".into(), json!("project.rate_limit"));
        object.insert("id".into(), json!(id));
        object.insert("model".into(), json!(model));
        self.openai_projects.lock().unwrap().insert(project.into());
        self.rate_limits
            .lock()
            .unwrap()
            .entry(project.into())
            .or_default()
            .insert(id.into(), object);
    }

    pub fn rate_limit(&self, project: &str, id: &str) -> Option<Map<String, Value>> {
        self.rate_limits
            .lock()
            .unwrap()
            .get(project)?
            .get(id)
            .cloned()
    }

    fn project_exists(&self, project: &str) -> bool {
        self.openai_projects.lock().unwrap().contains(project)
    }

    /// An Anthropic organisation rate-limit entry (`limits`: limiter type → value), and the
    /// workspace it is seen from.
    pub fn add_org_rate_limit(
        &self,
        workspace: &str,
        id: &str,
        group: &str,
        models: &[&str],
        limits: Value,
    ) {
        self.workspaces.lock().unwrap().insert(workspace.into());
        let limits = limits
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        self.org_rate_limits.lock().unwrap().insert(
            id.into(),
            OrgRateLimit {
                group: group.into(),
                models: models.iter().map(|m| m.to_string()).collect(),
                limits,
            },
        );
    }

    /// Sets (or with `None` clears) a workspace override, as a person would in the console.
    pub fn set_workspace_override_by_hand(
        &self,
        workspace: &str,
        id: &str,
        kind: &str,
        value: Option<u64>,
    ) {
        let mut overrides = self.workspace_overrides.lock().unwrap();
        let entry = overrides.entry((workspace.into(), id.into())).or_default();
        match value {
            Some(v) => entry.insert(kind.into(), v),
            None => entry.remove(kind),
        };
    }

    /// A workspace's limits of one entry as Anthropic enforces them: limiter type → (value,
    /// `true` when it is the workspace's own override).
    pub fn workspace_limits(&self, workspace: &str, id: &str) -> BTreeMap<String, (u64, bool)> {
        let org = self
            .org_rate_limits
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap();
        let overrides = self
            .workspace_overrides
            .lock()
            .unwrap()
            .get(&(workspace.to_string(), id.to_string()))
            .cloned()
            .unwrap_or_default();
        let mut out: BTreeMap<String, (u64, bool)> = org
            .limits
            .iter()
            .map(|(k, v)| (k.clone(), (*v, false)))
            .collect();
        out.extend(overrides.into_iter().map(|(k, v)| (k, (v, true))));
        out
    }

    pub fn active(&self, id: &str) -> Option<bool> {
        self.keys.lock().unwrap().get(id).copied()
    }

    pub fn writes_for(&self, id: &str) -> Vec<String> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == id)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// From now on, admin writes are carried out but not answered until [`Self::release`].
    pub fn hold_writes(&self) {
        *self.gate.lock().unwrap() = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    /// Answers every held write, and the ones after.
    pub fn release(&self) {
        if let Some(gate) = self.gate.lock().unwrap().take() {
            gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Waits (up to ten seconds) until `n` writes are held at the gate.
    pub async fn until_held(&self, n: usize) {
        for _ in 0..200 {
            if self.held.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no admin write reached the gate");
    }

    fn gated(&self, reply: Reply) -> Reply {
        match self.gate.lock().unwrap().clone() {
            Some(gate) => {
                self.held.fetch_add(1, Ordering::SeqCst);
                Reply {
                    hold: Some(gate),
                    ..reply
                }
            }
            None => reply,
        }
    }

    fn fail(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Anthropic admin: GET/POST /v1/organizations/api_keys/{id}, GET /v1/models.
/// Anthropic's error body: `{"type": "error", "error": {"type": ..., "message": ...}}`.
pub(crate) fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// Anthropic admin: GET/POST /v1/organizations/api_keys/{id}, GET /v1/models. Refuses what
/// Anthropic refuses: no or another `anthropic-version` (400), a missing or wrong key (401), an
/// unknown key (404), a status other than `active` / `inactive` (400), another method (405).
pub async fn anthropic_standin(state: Arc<ProviderState>) -> StandIn {
    StandIn::start(move |r, _| {
        if r.header("anthropic-version") != Some("2023-06-01") {
            return anthropic_error(400, "invalid_request_error", "anthropic-version: header is required");
        }
        if r.path == "/v1/models" {
            let ok = r.header("x-api-key").is_some_and(|k| state.valid.lock().unwrap().contains(k));
            return if ok { Reply::json(200, json!({"data": []})) } else { anthropic_error(401, "authentication_error", "invalid x-api-key") };
        }
        if let Some(rest) = r.path.strip_prefix("/v1/organizations/workspaces/") {
            if r.header("x-api-key") != Some(ANTHROPIC_ADMIN_KEY) {
                return anthropic_error(401, "authentication_error", "invalid x-api-key: an admin key is required");
            }
            return anthropic_workspace_rate_limits(&state, r, rest);
        }
        if r.path.starts_with("/v1/organizations/spend_limits")
            && r.header("x-api-key") == Some(ANTHROPIC_ADMIN_KEY)
            && state.spend_limits_not_enabled.load(Ordering::SeqCst) != 0
        {
            return match state.spend_limits_not_enabled.load(Ordering::SeqCst) {
                404 => anthropic_error(404, "not_found_error", "Not found"),
                status => anthropic_error(status, "permission_error", "Spend limits are not enabled for this organization"),
            };
        }
        if r.path == "/v1/organizations/spend_limits" {
            if r.header("x-api-key") != Some(ANTHROPIC_ADMIN_KEY) {
                return anthropic_error(401, "authentication_error", "invalid x-api-key: an admin key is required");
            }
            return match r.method.as_str() {
                "POST" => anthropic_set_spend_limit(&state, &r.body),
                "GET" => anthropic_list_spend_limits(&state, &r.query),
                _ => anthropic_error(405, "invalid_request_error", "method not allowed"),
            };
        }
        if let Some(id) = r.path.strip_prefix("/v1/organizations/spend_limits/") {
            if r.header("x-api-key") != Some(ANTHROPIC_ADMIN_KEY) {
                return anthropic_error(401, "authentication_error", "invalid x-api-key: an admin key is required");
            }
            if r.method != "DELETE" {
                return anthropic_error(405, "invalid_request_error", "method not allowed");
            }
            let mut limits = state.spend_limits.lock().unwrap();
            let Some(target) = limits.keys().find(|t| anthropic_limit_id(t) == id).cloned() else {
                return anthropic_error(404, "not_found_error", "no such spend limit");
            };
            limits.remove(&target);
            drop(limits);
            state.writes.lock().unwrap().push((target, "spend_limit deleted".into()));
            return Reply::json(200, json!({"id": id, "type": "spend_limit_deleted"}));
        }
        let Some(id) = r.path.strip_prefix("/v1/organizations/api_keys/") else {
            return anthropic_error(404, "not_found_error", "Not found");
        };
        if r.header("x-api-key") != Some(ANTHROPIC_ADMIN_KEY) {
            return anthropic_error(401, "authentication_error", "invalid x-api-key: an admin key is required");
        }
        match r.method.as_str() {
            "GET" => match state.active(id) {
                Some(active) => Reply::json(200, json!({"id": id, "type": "api_key", "status": if active { "active" } else { "inactive" }})),
                None => anthropic_error(404, "not_found_error", "no such api key"),
            },
            "POST" => {
                if state.active(id).is_none() {
                    return anthropic_error(404, "not_found_error", "no such api key");
                }
                let body: Value = serde_json::from_str(&r.body).unwrap_or_default();
                let status = body["status"].as_str().unwrap_or_default().to_string();
                if status != "active" && status != "inactive" {
                    return anthropic_error(400, "invalid_request_error", "status: must be active or inactive");
                }
                if state.fail() {
                    return anthropic_error(500, "api_error", "overloaded");
                }
                state.writes.lock().unwrap().push((id.to_string(), status.clone()));
                state.keys.lock().unwrap().insert(id.to_string(), status == "active");
                state.gated(Reply::json(200, json!({"id": id, "type": "api_key", "status": status})))
            }
            _ => anthropic_error(405, "invalid_request_error", "method not allowed"),
        }
    })
    .await
}

/// `GET /v1/organizations/workspaces/{w}/rate_limits` (`include_inherited`, `group_type`,
/// `limit` 1–1000, `page`) and `POST …/rate_limits/{id}` (`{"limits": [{type, value}]}`, 1–16
/// items, `value` a non-negative integer or null to clear): as Anthropic documents them.
fn anthropic_workspace_rate_limits(state: &ProviderState, r: &Received, rest: &str) -> Reply {
    let refuse = |message: &str| anthropic_error(400, "invalid_request_error", message);
    let parts: Vec<&str> = rest.split('/').collect();
    let (workspace, id) = match parts.as_slice() {
        [w, "rate_limits"] => (*w, None),
        [w, "rate_limits", id] => (*w, Some(*id)),
        _ => return anthropic_error(404, "not_found_error", "Not found"),
    };
    if !state.workspaces.lock().unwrap().contains(workspace) {
        return anthropic_error(404, "not_found_error", "no such workspace");
    }
    match (r.method.as_str(), id) {
        ("GET", None) => {
            let mut inherited = false;
            let mut group_type = None;
            let mut limit = usize::MAX;
            let mut page = 0usize;
            for (name, value) in url::form_urlencoded::parse(r.query.as_bytes()) {
                match name.as_ref() {
                    "include_inherited" => match value.as_ref() {
                        "true" => inherited = true,
                        "false" => inherited = false,
                        _ => return refuse("include_inherited: must be a boolean"),
                    },
                    "group_type" => group_type = Some(value.into_owned()),
                    "limit" => match value.parse::<usize>() {
                        Ok(n) if (1..=1000).contains(&n) => limit = n,
                        _ => return refuse("limit: must be an integer from 1 to 1000"),
                    },
                    "page" => match value.strip_prefix("page_").and_then(|p| p.parse().ok()) {
                        Some(p) => page = p,
                        None => return refuse("page: not a page this API issued"),
                    },
                    other => return refuse(&format!("{other}: unexpected query parameter")),
                }
            }
            let ids: Vec<String> = state
                .org_rate_limits
                .lock()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let entries: Vec<Value> = ids
                .iter()
                .filter_map(|id| workspace_entry(state, workspace, id, inherited))
                .filter(|e| {
                    group_type
                        .as_deref()
                        .is_none_or(|g| e["group"]["type"] == g)
                })
                .collect();
            let start = page.saturating_mul(limit);
            let data: Vec<Value> = entries.iter().skip(start).take(limit).cloned().collect();
            let next_page =
                (start + data.len() < entries.len()).then(|| format!("page_{}", page + 1));
            Reply::json(200, json!({"data": data, "next_page": next_page}))
        }
        ("POST", Some(id)) => {
            let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&r.body) else {
                return refuse("body: must be a JSON object");
            };
            if let Some(field) = body.keys().find(|k| k.as_str() != "limits") {
                return refuse(&format!("{field}: Extra inputs are not permitted"));
            }
            let Some(values) = body.get("limits").and_then(Value::as_array) else {
                return refuse("limits: Field required");
            };
            if values.is_empty() || values.len() > 16 {
                return refuse("limits: must hold 1 to 16 items");
            }
            if !state.org_rate_limits.lock().unwrap().contains_key(id) {
                return anthropic_error(404, "not_found_error", "no such rate limit");
            }
            let mut changes = Vec::new();
            for v in values {
                let Some(v) = v.as_object() else {
                    return refuse("limits: each item must be an object");
                };
                if let Some(field) = v.keys().find(|k| !["type", "value"].contains(&k.as_str())) {
                    return refuse(&format!("limits.{field}: Extra inputs are not permitted"));
                }
                let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
                if !ANTHROPIC_LIMITER_TYPES.contains(&kind) {
                    return refuse(&format!("limits.type: `{kind}` is not a rate limiter type"));
                }
                let value = match v.get("value") {
                    Some(Value::Null) => None,
                    Some(n) if n.as_u64().is_some() => n.as_u64(),
                    _ => return refuse("limits.value: must be a non-negative integer or null"),
                };
                changes.push((kind.to_string(), value));
            }
            if state.fail() {
                return anthropic_error(500, "api_error", "overloaded");
            }
            for (kind, value) in &changes {
                state.set_workspace_override_by_hand(workspace, id, kind, *value);
            }
            state.writes.lock().unwrap().push((
                format!("{workspace}/{id}"),
                format!("rate_limits {changes:?}"),
            ));
            let entry = workspace_entry(state, workspace, id, false)
                .unwrap_or_else(|| workspace_entry(state, workspace, id, true).unwrap());
            state.gated(Reply::json(200, entry))
        }
        _ => anthropic_error(405, "invalid_request_error", "method not allowed"),
    }
}

/// One entry of a workspace's rate limits, in the list's shape (none without an override,
/// unless the inherited values are asked for).
fn workspace_entry(
    state: &ProviderState,
    workspace: &str,
    id: &str,
    inherited: bool,
) -> Option<Value> {
    let org = state.org_rate_limits.lock().unwrap().get(id).cloned()?;
    let overrides = state
        .workspace_overrides
        .lock()
        .unwrap()
        .get(&(workspace.to_string(), id.to_string()))
        .cloned()
        .unwrap_or_default();
    let kinds: BTreeSet<&String> = org.limits.keys().chain(overrides.keys()).collect();
    let limits: Vec<Value> = kinds
        .into_iter()
        .filter_map(|kind| {
            let org_limit = org.limits.get(kind);
            match overrides.get(kind) {
                Some(v) => Some(json!({"type": kind, "value": v, "org_limit": org_limit, "source": {"type": "workspace"}})),
                None if inherited => Some(json!({"type": kind, "value": org_limit, "org_limit": org_limit, "source": {"type": "organization"}})),
                None => None,
            }
        })
        .collect();
    if limits.is_empty() && !inherited {
        return None;
    }
    Some(json!({
        "type": "workspace_rate_limit",
        "group": {"type": org.group},
        "limits": limits,
        "models": if org.models.is_empty() { Value::Null } else { json!(org.models) },
        "rate_limit_id": id,
        "workspace_id": workspace,
    }))
}

/// The id the stand-in gives the spend limit of `target` (`organization`, `workspace:<id>`).
fn anthropic_limit_id(target: &str) -> String {
    format!("spl_{}", target.replace([':', '-'], "_"))
}

/// The scope object of a stand-in target.
fn anthropic_scope(target: &str) -> Value {
    match target.strip_prefix("workspace:") {
        Some(w) => json!({"type": "workspace", "workspace_id": w}),
        None => json!({"type": "organization"}),
    }
}

/// `GET /v1/organizations/spend_limits` (`scope_type`, `workspace_id`, `limit`, `page`): the
/// organisation's monthly limits, one page (the stand-in holds few).
fn anthropic_list_spend_limits(state: &ProviderState, query: &str) -> Reply {
    let mut scope_type = None;
    let mut workspace = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "scope_type" if matches!(value.as_ref(), "organization" | "workspace") => {
                scope_type = Some(value.into_owned())
            }
            "scope_type" => {
                return anthropic_error(
                    400,
                    "invalid_request_error",
                    &format!("scope_type: `{value}` does not apply to this organization"),
                );
            }
            "workspace_id" => workspace = Some(value.into_owned()),
            "limit" if value.parse::<u32>().is_ok_and(|n| (1..=1000).contains(&n)) => {}
            "page" => {}
            other => {
                return anthropic_error(
                    400,
                    "invalid_request_error",
                    &format!("{other}: unexpected query parameter"),
                );
            }
        }
    }
    let data: Vec<Value> = state
        .spend_limits
        .lock()
        .unwrap()
        .iter()
        .filter(|(target, _)| {
            let scope = anthropic_scope(target);
            scope_type.as_deref().is_none_or(|t| scope["type"] == t)
                && workspace.as_deref().is_none_or(|w| scope["workspace_id"] == w)
        })
        .map(|(target, cents)| {
            json!({"type": "spend_limit", "id": anthropic_limit_id(target), "amount": cents.to_string(),
                   "currency": "USD", "is_enabled": true, "period": "monthly",
                   "scope": anthropic_scope(target), "created_at": "2026-11-01T00:00:00Z"})
        })
        .collect();
    Reply::json(
        200,
        json!({"data": data, "has_more": false, "next_page": null}),
    )
}

/// `POST /v1/organizations/spend_limits`, as a Console organisation with early access answers
/// it: an upsert keyed on (scope, period); `amount` a decimal string of cents, always present;
/// scope `organization` or `workspace`; period monthly.
fn anthropic_set_spend_limit(state: &ProviderState, body: &str) -> Reply {
    let refuse = |message: &str| anthropic_error(400, "invalid_request_error", message);
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body) else {
        return refuse("body: must be a JSON object");
    };
    if let Some(field) = body
        .keys()
        .find(|k| !["amount", "scope", "period"].contains(&k.as_str()))
    {
        return refuse(&format!("{field}: Extra inputs are not permitted"));
    }
    let cents = match body.get("amount") {
        Some(Value::String(a)) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
            match a.parse::<u64>() {
                Ok(c) => c,
                Err(_) => return refuse("amount: out of range"),
            }
        }
        Some(Value::Null) | None => {
            return refuse("amount: organization and workspace limits always carry an amount");
        }
        Some(_) => {
            return refuse("amount: must be a non-negative integer decimal string in cents");
        }
    };
    if !matches!(body.get("period"), None | Some(Value::String(_)))
        || body
            .get("period")
            .and_then(Value::as_str)
            .is_some_and(|p| p != "monthly")
    {
        return refuse("period: organization and workspace limits are monthly");
    }
    let scope = body.get("scope").cloned().unwrap_or_default();
    let target = match (scope["type"].as_str(), scope["workspace_id"].as_str()) {
        (Some("organization"), None) => "organization".to_string(),
        (Some("workspace"), Some(w)) if !w.is_empty() => format!("workspace:{w}"),
        _ => {
            return refuse(
                "scope: must be {type: organization} or {type: workspace, workspace_id}",
            );
        }
    };
    if state.fail() {
        return anthropic_error(500, "api_error", "overloaded");
    }
    state
        .writes
        .lock()
        .unwrap()
        .push((target.clone(), format!("spend_limit {cents}")));
    let id = anthropic_limit_id(&target);
    state.spend_limits.lock().unwrap().insert(target, cents);
    state.gated(Reply::json(
        200,
        json!({"type": "spend_limit", "id": id, "amount": cents.to_string(),
               "currency": "USD", "is_enabled": true, "period": "monthly", "scope": scope,
               "created_at": "2026-11-01T00:00:00Z"}),
    ))
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn openai_error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// The per-model fields of an OpenAI project rate limit that can be set.
const OPENAI_RATE_LIMIT_FIELDS: [&str; 6] = [
    "max_requests_per_1_minute",
    "max_tokens_per_1_minute",
    "max_images_per_1_minute",
    "max_audio_megabytes_per_1_minute",
    "max_requests_per_1_day",
    "batch_1_day_max_input_tokens",
];

/// OpenAI's admin API (`Authorization: Bearer <admin key>` on every route):
/// - `GET /v1/organization/projects/{p}`;
/// - `GET|DELETE /v1/organization/projects/{p}/api_keys/{k}` (a key of another project: 404);
/// - `GET|POST|DELETE /v1/organization/spend_limit` and
///   `/v1/organization/projects/{p}/spend_limit`: `threshold_amount` integer cents ≥ 1,
///   `currency` "USD", `interval` "month", nothing else;
/// - `GET /v1/organization/projects/{p}/rate_limits`, `POST …/rate_limits/{id}` (integer
///   `max_*` fields the model has);
/// - `GET /v1/organization/costs`: the days of `openai_costs` in the range asked, one bucket
///   a day (`bucket_width=1d`, the only width costs accept);
/// - `GET /v1/models` with a project key (rotation tests).
///
/// Anything else is OpenAI's 404 "Invalid URL". With no spend limit set, GET answers 404 (the
/// reference does not say; the adapter reads a 404 as "no limit").
pub async fn openai_standin(state: Arc<ProviderState>) -> StandIn {
    StandIn::start(move |r, _| openai_answer(&state, r)).await
}

fn openai_answer(state: &ProviderState, r: &Received) -> Reply {
    let bearer = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default();
    if r.path == "/v1/models" {
        return if state.valid.lock().unwrap().contains(bearer) {
            Reply::json(200, json!({"object": "list", "data": []}))
        } else {
            openai_error(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided",
            )
        };
    }
    let invalid_url = || {
        openai_error(
            404,
            "invalid_request_error",
            None,
            &format!("Invalid URL ({} {})", r.method, r.path),
        )
    };
    let Some(rest) = r.path.strip_prefix("/v1/organization/") else {
        return invalid_url();
    };
    if bearer != OPENAI_ADMIN_KEY {
        return openai_error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: an admin key is required",
        );
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let method = r.method.as_str();
    match parts.as_slice() {
        ["costs"] if method == "GET" => openai_costs(state, &r.query),
        ["spend_limit"] => {
            openai_spend_limit(state, method, "organization", "organization", &r.body)
        }
        ["projects", p] if method == "GET" => {
            if state.project_exists(p) {
                Reply::json(
                    200,
                    json!({"object": "organization.project", "id": p, "status": "active"}),
                )
            } else {
                openai_error(
                    404,
                    "invalid_request_error",
                    None,
                    &format!("No such project: {p}"),
                )
            }
        }
        ["projects", p, rest @ ..] if !state.project_exists(p) && !rest.is_empty() => openai_error(
            404,
            "invalid_request_error",
            None,
            &format!("No such project: {p}"),
        ),
        ["projects", p, "spend_limit"] => {
            openai_spend_limit(state, method, &format!("project:{p}"), "project", &r.body)
        }
        ["projects", p, "api_keys", k] => {
            if state.projects.lock().unwrap().get(*k).map(String::as_str) != Some(*p)
                || state.active(k).is_none()
            {
                return openai_error(
                    404,
                    "invalid_request_error",
                    None,
                    &format!("No such API key: {k}"),
                );
            }
            match method {
                "GET" => Reply::json(
                    200,
                    json!({"object": "organization.project.api_key", "id": k}),
                ),
                "DELETE" => {
                    if state.fail() {
                        return openai_error(500, "server_error", None, "The server had an error");
                    }
                    state
                        .writes
                        .lock()
                        .unwrap()
                        .push((k.to_string(), "deleted".into()));
                    state.keys.lock().unwrap().remove(*k);
                    state.projects.lock().unwrap().remove(*k);
                    state.gated(Reply::json(
                        200,
                        json!({"object": "organization.project.api_key.deleted", "id": k, "deleted": true}),
                    ))
                }
                _ => invalid_url(),
            }
        }
        ["projects", p, "rate_limits"] if method == "GET" => {
            openai_rate_limit_page(state, p, &r.query)
        }
        ["projects", p, "rate_limits", id] if method == "POST" => {
            openai_set_rate_limit(state, p, id, &r.body)
        }
        _ => invalid_url(),
    }
}

fn openai_spend_limit(
    state: &ProviderState,
    method: &str,
    target: &str,
    object: &str,
    body: &str,
) -> Reply {
    let refuse = |param: &str, message: &str| {
        Reply::json(
            400,
            json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}}),
        )
    };
    let limit_object = |cents: u64| {
        json!({"object": format!("{object}.spend_limit"), "threshold_amount": cents,
               "currency": "USD", "interval": "month", "enforcement": {"status": "enforcing"}})
    };
    match method {
        "GET" => match state.spend_limit(target) {
            Some(cents) => Reply::json(200, limit_object(cents)),
            None => openai_error(404, "invalid_request_error", None, "No spend limit is set"),
        },
        "POST" => {
            let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body) else {
                return refuse("body", "We could not parse the JSON body of your request.");
            };
            if let Some(field) = body
                .keys()
                .find(|k| !["threshold_amount", "currency", "interval"].contains(&k.as_str()))
            {
                return refuse(
                    field,
                    &format!("Unrecognized request argument supplied: {field}"),
                );
            }
            // integer cents: a JSON number with a fraction (dollars) or a string is refused
            let Some(cents) = body.get("threshold_amount").and_then(Value::as_u64) else {
                return refuse(
                    "threshold_amount",
                    "threshold_amount: must be an integer amount in cents",
                );
            };
            if cents < 1 {
                return refuse("threshold_amount", "threshold_amount: must be at least 1");
            }
            if body.get("currency").and_then(Value::as_str) != Some("USD") {
                return refuse("currency", "currency: only USD is supported");
            }
            if body.get("interval").and_then(Value::as_str) != Some("month") {
                return refuse("interval", "interval: only month is supported");
            }
            if state.fail() {
                return openai_error(500, "server_error", None, "The server had an error");
            }
            state
                .writes
                .lock()
                .unwrap()
                .push((target.to_string(), format!("spend_limit {cents}")));
            state
                .spend_limits
                .lock()
                .unwrap()
                .insert(target.into(), cents);
            state.gated(Reply::json(200, limit_object(cents)))
        }
        "DELETE" => {
            if state.fail() {
                return openai_error(500, "server_error", None, "The server had an error");
            }
            if state.spend_limits.lock().unwrap().remove(target).is_none() {
                return openai_error(404, "invalid_request_error", None, "No spend limit is set");
            }
            state
                .writes
                .lock()
                .unwrap()
                .push((target.to_string(), "spend_limit deleted".into()));
            state.gated(Reply::json(
                200,
                json!({"object": format!("{object}.spend_limit.deleted"), "deleted": true}),
            ))
        }
        _ => openai_error(405, "invalid_request_error", None, "Method not allowed"),
    }
}

/// `GET /v1/organization/costs`: `start_time` (Unix seconds) is required, as OpenAI requires
/// it; `bucket_width` can only be `1d`; unknown parameters are refused. Answers one page of a
/// bucket per day from `start_time` to `end_time` (default: now), amounts in dollars as JSON
/// numbers.
fn openai_costs(state: &ProviderState, query: &str) -> Reply {
    let refuse = |message: String| openai_error(400, "invalid_request_error", None, &message);
    let (mut start, mut end) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "start_time" | "end_time" => {
                let Ok(at) = value.parse::<i64>() else {
                    return refuse(format!("Invalid '{name}': {value}: expected Unix seconds"));
                };
                if name == "start_time" {
                    start = Some(at);
                } else {
                    end = Some(at);
                }
            }
            "bucket_width" if value != "1d" => {
                return refuse(format!("Invalid 'bucket_width': {value}: expected '1d'"));
            }
            "bucket_width" | "group_by" | "project_ids" | "limit" | "page" => {}
            other => return refuse(format!("Unknown parameter: '{other}'")),
        }
    }
    let Some(start) = start else {
        return refuse("Missing required parameter: 'start_time'".into());
    };
    let end = end.unwrap_or_else(|| chrono::Utc::now().timestamp());
    let midnight = |d: chrono::NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
    let data: Vec<Value> = state
        .openai_costs
        .lock()
        .unwrap()
        .iter()
        .filter(|(day, _)| midnight(**day) >= start && midnight(**day) < end)
        .map(|(day, dollars)| {
            json!({"object": "bucket", "start_time": midnight(*day),
                   "end_time": midnight(*day + chrono::Duration::days(1)),
                   "results": [{"object": "organization.costs.result",
                                "amount": {"value": dollars.to_string().parse::<f64>().unwrap(), "currency": "usd"},
                                "line_item": null, "project_id": null}]})
        })
        .collect();
    Reply::json(
        200,
        json!({"object": "page", "data": data, "has_more": false, "next_page": null}),
    )
}

/// A page of a project's rate limits: cursor pagination (`after` an id, `limit` 1–100,
/// default 100), as OpenAI's list endpoints.
fn openai_rate_limit_page(state: &ProviderState, project: &str, query: &str) -> Reply {
    let mut limit = 100usize;
    let mut after = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => limit = n,
                _ => {
                    return openai_error(
                        400,
                        "invalid_request_error",
                        None,
                        &format!("Invalid 'limit': {value}: expected an integer from 1 to 100"),
                    );
                }
            },
            "after" => after = Some(value.into_owned()),
            other => {
                return openai_error(
                    400,
                    "invalid_request_error",
                    None,
                    &format!("Unknown parameter: '{other}'"),
                );
            }
        }
    }
    let all: Vec<Map<String, Value>> = state
        .rate_limits
        .lock()
        .unwrap()
        .get(project)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let start = match &after {
        None => 0,
        Some(a) => match all.iter().position(|l| l["id"] == a.as_str()) {
            Some(i) => i + 1,
            None => {
                return openai_error(
                    400,
                    "invalid_request_error",
                    None,
                    &format!("Invalid 'after': no rate limit {a}"),
                );
            }
        },
    };
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .cloned()
        .map(Value::Object)
        .collect();
    let has_more = start + page.len() < all.len();
    Reply::json(
        200,
        json!({
            "object": "list",
            "data": page,
            "first_id": page.first().map(|l| l["id"].clone()),
            "last_id": page.last().map(|l| l["id"].clone()),
            "has_more": has_more,
        }),
    )
}

fn openai_set_rate_limit(state: &ProviderState, project: &str, id: &str, body: &str) -> Reply {
    let refuse = |message: String| openai_error(400, "invalid_request_error", None, &message);
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(body) else {
        return refuse("We could not parse the JSON body of your request.".into());
    };
    if state.fail() {
        return openai_error(500, "server_error", None, "The server had an error");
    }
    let mut limits = state.rate_limits.lock().unwrap();
    let Some(limit) = limits.get_mut(project).and_then(|m| m.get_mut(id)) else {
        return openai_error(
            404,
            "invalid_request_error",
            None,
            &format!("No such rate limit: {id}"),
        );
    };
    for (field, value) in &body {
        if !OPENAI_RATE_LIMIT_FIELDS.contains(&field.as_str()) || !limit.contains_key(field) {
            return refuse(format!("Unrecognized request argument supplied: {field}"));
        }
        if value.as_u64().is_none() {
            return refuse(format!("{field}: must be a non-negative integer"));
        }
    }
    limit.extend(body.clone());
    let answer = limit.clone();
    drop(limits);
    state
        .writes
        .lock()
        .unwrap()
        .push((format!("{project}/{id}"), Value::Object(body).to_string()));
    Reply::json(200, Value::Object(answer))
}
