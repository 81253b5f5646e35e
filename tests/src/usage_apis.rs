//! The providers' organisation usage APIs as a stand-in: OpenAI `GET
//! /v1/organization/usage/{kind}` (every kind) and `GET /v1/organization/costs`, and Anthropic `GET
//! /v1/organizations/usage_report/messages`. Usage is added per key, model and hour with the
//! time it becomes visible, so a test can deliver an hour late: until the stand-in's `now`
//! reaches that time the hour reads as empty, as a provider's late data does. Refuses what the
//! providers refuse (method, path, auth header, parameters) with their error shapes, honours
//! `bucket_width` (1h, 1d; the default 1d), `group_by`, `api_key_ids`, `limit` and paging.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{Map, Value, json};

use crate::admin_apis::{anthropic_error, openai_error};
use crate::standin::{Received, Reply, StandIn};

pub const OPENAI_ADMIN_KEY: &str = "sk-admin-usage-test";
pub const ANTHROPIC_ADMIN_KEY: &str = "sk-ant-admin-usage-test";

/// OpenAI's usage kinds with the fields of their results and what they group by.
const OPENAI_KINDS: [(&str, &[&str], &[&str]); 8] = [
    (
        "completions",
        &[
            "input_tokens",
            "output_tokens",
            "input_cached_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
            "num_model_requests",
        ],
        &[
            "project_id",
            "user_id",
            "api_key_id",
            "model",
            "batch",
            "service_tier",
        ],
    ),
    (
        "embeddings",
        &["input_tokens", "num_model_requests"],
        &["project_id", "user_id", "api_key_id", "model"],
    ),
    (
        "moderations",
        &["input_tokens", "num_model_requests"],
        &["project_id", "user_id", "api_key_id", "model"],
    ),
    (
        "images",
        &["images", "num_model_requests"],
        &[
            "project_id",
            "user_id",
            "api_key_id",
            "model",
            "size",
            "source",
        ],
    ),
    (
        "audio_speeches",
        &["characters", "num_model_requests"],
        &["project_id", "user_id", "api_key_id", "model"],
    ),
    (
        "audio_transcriptions",
        &["seconds", "num_model_requests"],
        &["project_id", "user_id", "api_key_id", "model"],
    ),
    ("vector_stores", &["usage_bytes"], &["project_id"]),
    (
        "code_interpreter_sessions",
        &["num_sessions"],
        &["project_id"],
    ),
];

const ANTHROPIC_FIELDS: [&str; 5] = [
    "uncached_input_tokens",
    "cache_read_input_tokens",
    "ephemeral_5m_input_tokens",
    "ephemeral_1h_input_tokens",
    "output_tokens",
];
const ANTHROPIC_GROUPS: [&str; 5] = [
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
];

/// Usage of one key and model in one hour, as one of a provider's kinds counts it.
#[derive(Debug, Clone)]
struct Row {
    kind: String,
    key: String,
    project: String,
    model: String,
    hour: DateTime<Utc>,
    fields: BTreeMap<String, u64>,
    visible_from: DateTime<Utc>,
    /// Made through the Batch API (completions only).
    batch: bool,
}

/// A charge of the costs endpoint: one line item of one project on one day, in dollars.
#[derive(Debug, Clone)]
struct Charge {
    project: String,
    line_item: String,
    day: DateTime<Utc>,
    dollars: serde_json::Number,
}

/// What the stand-in knows and its clock.
#[derive(Default)]
pub struct UsageLedger {
    rows: Mutex<Vec<Row>>,
    charges: Mutex<Vec<Charge>>,
    /// The project of each key (OpenAI: every key belongs to one).
    projects: Mutex<BTreeMap<String, String>>,
    /// OpenAI usage kinds that answer with a server error (an outage of one endpoint).
    failing_kinds: Mutex<BTreeSet<String>>,
    now: Mutex<Option<DateTime<Utc>>>,
}

impl UsageLedger {
    /// Usage of `kind` (`embeddings`, `images`, …; Anthropic `messages`) by `key` on `model`
    /// in the hour starting at `hour`, with the result's fields (`input_tokens`, `images`,
    /// …), visible from `visible_from` on.
    pub fn add(
        &self,
        kind: &str,
        key: &str,
        model: &str,
        hour: DateTime<Utc>,
        fields: &[(&str, u64)],
        visible_from: DateTime<Utc>,
    ) {
        let project = self.project_of(key);
        self.rows.lock().unwrap().push(Row {
            kind: kind.into(),
            key: key.into(),
            project,
            model: model.into(),
            hour,
            fields: fields.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            visible_from,
            batch: false,
        });
    }

    /// Completions by `key` on `model` through the Batch API (charged at half price), as
    /// [`UsageLedger::add`].
    pub fn add_batch(
        &self,
        key: &str,
        model: &str,
        hour: DateTime<Utc>,
        fields: &[(&str, u64)],
        visible_from: DateTime<Utc>,
    ) {
        self.add("completions", key, model, hour, fields, visible_from);
        if let Some(row) = self.rows.lock().unwrap().last_mut() {
            row.batch = true;
        }
    }

    /// `key` belongs to `project` (`proj_default` otherwise).
    pub fn key_in_project(&self, key: &str, project: &str) {
        self.projects
            .lock()
            .unwrap()
            .insert(key.into(), project.into());
    }

    /// OpenAI charged `dollars` (`10.0`) for `line_item` (`gpt-4o-2024-08-06, input`) of
    /// `project` on the UTC day starting at `day`.
    pub fn charge(&self, project: &str, line_item: &str, day: DateTime<Utc>, dollars: &str) {
        self.charges.lock().unwrap().push(Charge {
            project: project.into(),
            line_item: line_item.into(),
            day,
            dollars: dollars.parse().expect("a JSON number"),
        });
    }

    fn project_of(&self, key: &str) -> String {
        self.projects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_else(|| "proj_default".into())
    }

    /// OpenAI's `usage/{kind}` answers 500 (`server_error`) from now on.
    pub fn fail_kind(&self, kind: &str) {
        self.failing_kinds.lock().unwrap().insert(kind.into());
    }

    /// The stand-in's clock: usage is visible once it reaches the usage's `visible_from`.
    pub fn set_now(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap() = Some(now);
    }

    fn visible(&self) -> Vec<Row> {
        let now = self.now.lock().unwrap().unwrap_or_else(Utc::now);
        self.rows
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.visible_from <= now)
            .cloned()
            .collect()
    }
}

/// A query as the stand-in reads it, whichever provider's names it uses.
struct Query {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    width: Duration,
    limit: usize,
    group_by: Vec<String>,
    key_ids: Vec<String>,
}

/// One bucket's start and its results.
type Bucket = (DateTime<Utc>, Vec<Map<String, Value>>);

/// Buckets of `width` from `start` (or the page's) to `end`, at most `limit`: the results of
/// each grouped as asked. Returns the buckets and the next page's start.
fn buckets(
    rows: &[Row],
    kind: &str,
    q: &Query,
    page: Option<DateTime<Utc>>,
) -> (Vec<Bucket>, Option<DateTime<Utc>>) {
    let mut out = Vec::new();
    let mut at = page.unwrap_or(q.start);
    while at < q.end && out.len() < q.limit {
        let next = at + q.width;
        let mut groups: BTreeMap<Vec<(&str, String)>, BTreeMap<String, u64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| {
            r.kind == kind
                && r.hour >= at
                && r.hour < next
                && (q.key_ids.is_empty() || q.key_ids.contains(&r.key))
        }) {
            let group: Vec<(&str, String)> = [
                ("api_key_id", r.key.clone()),
                ("model", r.model.clone()),
                ("project_id", r.project.clone()),
                ("batch", r.batch.to_string()),
            ]
            .into_iter()
            .filter(|(name, _)| q.group_by.iter().any(|g| g == name))
            .collect();
            let sums = groups.entry(group).or_default();
            for (f, v) in &r.fields {
                *sums.entry(f.clone()).or_default() += v;
            }
        }
        let results = groups
            .into_iter()
            .map(|(group, sums)| {
                let mut m = Map::new();
                for name in ["api_key_id", "model", "project_id"] {
                    let value = group.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
                    m.insert(name.into(), json!(value));
                }
                // a boolean when grouped by it; absent (as for the other kinds) otherwise
                if let Some((_, batch)) = group.iter().find(|(n, _)| *n == "batch") {
                    m.insert("batch".into(), json!(batch == "true"));
                }
                for (f, v) in sums {
                    m.insert(f, json!(v));
                }
                m
            })
            .collect();
        out.push((at, results));
        at = next;
    }
    (out, (at < q.end).then_some(at))
}

/// A bucket width's duration, its default limit and its most buckets a page (both APIs).
fn width_and_limits(bucket_width: Option<&str>) -> Option<(Duration, usize, usize)> {
    match bucket_width.unwrap_or("1d") {
        "1h" => Some((Duration::hours(1), 24, 168)),
        "1d" => Some((Duration::days(1), 7, 31)),
        _ => None,
    }
}

/// OpenAI's usage API: `Authorization: Bearer <admin key>`, `start_time` required.
fn openai(ledger: &UsageLedger, r: &Received) -> Reply {
    let invalid_url = || {
        openai_error(
            404,
            "invalid_request_error",
            None,
            &format!("Invalid URL ({} {})", r.method, r.path),
        )
    };
    let Some(kind) = r.path.strip_prefix("/v1/organization/usage/") else {
        return invalid_url();
    };
    let Some((_, fields, groups)) = OPENAI_KINDS.iter().find(|(k, _, _)| *k == kind) else {
        return invalid_url();
    };
    if r.method != "GET" {
        return invalid_url();
    }
    if r.header("authorization") != Some(&format!("Bearer {OPENAI_ADMIN_KEY}")) {
        return openai_error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: an admin key is required",
        );
    }
    if ledger.failing_kinds.lock().unwrap().contains(kind) {
        return openai_error(
            500,
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        );
    }
    let bad = |param: &str, message: &str| {
        Reply::json(
            400,
            json!({"error": {"message": message, "type": "invalid_request_error",
                             "param": param, "code": null}}),
        )
    };
    let unix = |name: &str| {
        r.query_values(name)
            .first()
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|t| DateTime::from_timestamp(t, 0))
    };
    let Some(start) = unix("start_time") else {
        return bad("start_time", "start_time is required (unix seconds)");
    };
    let bucket_width = r.query_values("bucket_width").first().cloned();
    let Some((width, default_limit, max)) = width_and_limits(bucket_width.as_deref()) else {
        return bad("bucket_width", "bucket_width must be one of 1m, 1h, 1d");
    };
    let limit = match r.query_values("limit").first() {
        None => default_limit,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => return bad("limit", &format!("limit must be between 1 and {max}")),
        },
    };
    let group_by = r.query_values("group_by");
    if let Some(g) = group_by.iter().find(|g| !groups.contains(&g.as_str())) {
        return bad(
            "group_by",
            &format!("Invalid group_by value for {kind}: {g}"),
        );
    }
    let page = match r.query_values("page").first() {
        None => None,
        Some(p) => match p
            .strip_prefix("page_")
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(|t| DateTime::from_timestamp(t, 0))
        {
            Some(t) => Some(t),
            None => return bad("page", "invalid page cursor"),
        },
    };
    let q = Query {
        start: start.duration_trunc(width).unwrap_or(start),
        end: unix("end_time").unwrap_or_else(Utc::now),
        width,
        limit,
        group_by,
        key_ids: r.query_values("api_key_ids"),
    };
    let (data, next) = buckets(&ledger.visible(), kind, &q, page);
    let data: Vec<Value> = data
        .into_iter()
        .map(|(at, results)| {
            let results: Vec<Value> = results
                .into_iter()
                .map(|mut m| {
                    for f in *fields {
                        m.entry(f.to_string()).or_insert(json!(0));
                    }
                    m.insert(
                        "object".into(),
                        json!(format!("organization.usage.{kind}.result")),
                    );
                    Value::Object(m)
                })
                .collect();
            json!({"object": "bucket", "start_time": at.timestamp(),
                   "end_time": (at + width).timestamp(), "results": results})
        })
        .collect();
    Reply::json(
        200,
        json!({"object": "page", "data": data, "has_more": next.is_some(),
               "next_page": next.map(|t| format!("page_{}", t.timestamp()))}),
    )
}

/// OpenAI's costs: daily buckets only, grouped by `project_id` and `line_item` as asked,
/// amounts in dollars (`{"value": 0.06, "currency": "usd"}`).
fn openai_costs(ledger: &UsageLedger, r: &Received) -> Reply {
    if r.method != "GET" {
        return openai_error(
            404,
            "invalid_request_error",
            None,
            &format!("Invalid URL ({} {})", r.method, r.path),
        );
    }
    if r.header("authorization") != Some(&format!("Bearer {OPENAI_ADMIN_KEY}")) {
        return openai_error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: an admin key is required",
        );
    }
    let bad = |param: &str, message: &str| {
        Reply::json(
            400,
            json!({"error": {"message": message, "type": "invalid_request_error",
                             "param": param, "code": null}}),
        )
    };
    let unix = |name: &str| {
        r.query_values(name)
            .first()
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|t| DateTime::from_timestamp(t, 0))
    };
    let Some(start) = unix("start_time") else {
        return bad("start_time", "start_time is required (unix seconds)");
    };
    if r.query_values("bucket_width").iter().any(|w| w != "1d") {
        return bad("bucket_width", "bucket_width must be 1d");
    }
    let group_by = r.query_values("group_by");
    if let Some(g) = group_by
        .iter()
        .find(|g| !["project_id", "line_item"].contains(&g.as_str()))
    {
        return bad(
            "group_by",
            &format!("Invalid group_by value for costs: {g}"),
        );
    }
    let limit = match r.query_values("limit").first().map(|l| l.parse::<usize>()) {
        None => 7,
        Some(Ok(n)) if (1..=180).contains(&n) => n,
        Some(_) => return bad("limit", "limit must be between 1 and 180"),
    };
    let end = unix("end_time").unwrap_or_else(Utc::now);
    let charges = ledger.charges.lock().unwrap().clone();
    let grouped = |name: &str, value: &str| {
        group_by
            .iter()
            .any(|g| g == name)
            .then(|| value.to_string())
    };
    let mut data = Vec::new();
    let page = r
        .query_values("page")
        .first()
        .and_then(|p| p.strip_prefix("page_")?.parse::<i64>().ok())
        .and_then(|t| DateTime::from_timestamp(t, 0));
    let mut at = page.unwrap_or(start.duration_trunc(Duration::days(1)).unwrap_or(start));
    while at < end && data.len() < limit {
        let mut sums: BTreeMap<(Option<String>, Option<String>), f64> = BTreeMap::new();
        for c in charges.iter().filter(|c| c.day == at) {
            *sums
                .entry((
                    grouped("project_id", &c.project),
                    grouped("line_item", &c.line_item),
                ))
                .or_default() += c.dollars.as_f64().unwrap_or_default();
        }
        let results: Vec<Value> = sums
            .into_iter()
            .map(|((project, item), value)| {
                json!({"object": "organization.costs.result",
                       "amount": {"value": value, "currency": "usd"},
                       "line_item": item, "project_id": project})
            })
            .collect();
        data.push(json!({"object": "bucket", "start_time": at.timestamp(),
                         "end_time": (at + Duration::days(1)).timestamp(), "results": results}));
        at += Duration::days(1);
    }
    let more = at < end;
    Reply::json(
        200,
        json!({"object": "page", "data": data, "has_more": more,
               "next_page": more.then(|| format!("page_{}", at.timestamp()))}),
    )
}

/// Anthropic's usage report: `x-api-key` (an admin key) and `anthropic-version` required,
/// `starting_at` required.
fn anthropic(ledger: &UsageLedger, r: &Received) -> Reply {
    let refuse = |message: &str| anthropic_error(400, "invalid_request_error", message);
    if r.header("anthropic-version") != Some("2023-06-01") {
        return refuse("anthropic-version: header is required");
    }
    if r.header("x-api-key") != Some(ANTHROPIC_ADMIN_KEY) {
        return anthropic_error(
            401,
            "authentication_error",
            "invalid x-api-key: an admin key is required",
        );
    }
    if r.path != "/v1/organizations/usage_report/messages" {
        return anthropic_error(404, "not_found_error", "Not found");
    }
    if r.method != "GET" {
        return anthropic_error(405, "invalid_request_error", "method not allowed");
    }
    let time = |name: &str| {
        r.query_values(name)
            .first()
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let Some(start) = time("starting_at") else {
        return refuse("starting_at: Field required (RFC 3339)");
    };
    let bucket_width = r.query_values("bucket_width").first().cloned();
    let Some((width, default_limit, max)) = width_and_limits(bucket_width.as_deref()) else {
        return refuse("bucket_width: Input should be '1d', '1m' or '1h'");
    };
    let limit = match r.query_values("limit").first() {
        None => default_limit,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => return refuse(&format!("limit: must be between 1 and {max}")),
        },
    };
    let group_by = r.query_values("group_by[]");
    if let Some(g) = group_by
        .iter()
        .find(|g| !ANTHROPIC_GROUPS.contains(&g.as_str()))
    {
        return refuse(&format!("group_by: unknown value `{g}`"));
    }
    let page = match r.query_values("page").first() {
        None => None,
        Some(p) => match DateTime::parse_from_rfc3339(p) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => return refuse("page: invalid cursor"),
        },
    };
    let q = Query {
        start: start.duration_trunc(width).unwrap_or(start),
        end: time("ending_at").unwrap_or_else(Utc::now),
        width,
        limit,
        group_by,
        key_ids: r.query_values("api_key_ids[]"),
    };
    let (data, next) = buckets(&ledger.visible(), "messages", &q, page);
    let data: Vec<Value> = data
        .into_iter()
        .map(|(at, results)| {
            let results: Vec<Value> = results
                .into_iter()
                .map(|m| {
                    let n = |f: &str| m.get(f).cloned().unwrap_or(json!(0));
                    json!({
                        "api_key_id": m["api_key_id"], "model": m["model"],
                        "workspace_id": null, "service_tier": null, "context_window": null,
                        "uncached_input_tokens": n(ANTHROPIC_FIELDS[0]),
                        "cache_read_input_tokens": n(ANTHROPIC_FIELDS[1]),
                        "cache_creation": {"ephemeral_5m_input_tokens": n(ANTHROPIC_FIELDS[2]),
                                           "ephemeral_1h_input_tokens": n(ANTHROPIC_FIELDS[3])},
                        "output_tokens": n(ANTHROPIC_FIELDS[4]),
                        "server_tool_use": {"web_search_requests": 0},
                    })
                })
                .collect();
            json!({"starting_at": at.to_rfc3339(), "ending_at": (at + width).to_rfc3339(),
                   "results": results})
        })
        .collect();
    Reply::json(
        200,
        json!({"data": data, "has_more": next.is_some(),
               "next_page": next.map(|t| t.to_rfc3339())}),
    )
}

/// Both providers' usage APIs on one stand-in (their paths do not overlap).
pub async fn usage_standin(ledger: Arc<UsageLedger>) -> StandIn {
    StandIn::start(move |r, _| {
        if r.path.starts_with("/v1/organizations/") {
            anthropic(&ledger, r)
        } else if r.path == "/v1/organization/costs" {
            openai_costs(&ledger, r)
        } else {
            openai(&ledger, r)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    async fn get(url: &str, auth: (&str, &str), extra: &[(&str, &str)]) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(url).header(auth.0, auth.1);
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn without_a_limit_both_apis_page_hourly_buckets_by_24_and_daily_by_7() {
        let s = usage_standin(Arc::new(UsageLedger::default())).await;
        let start = hour() - Duration::days(10);
        let (t, end) = (start.timestamp(), hour().timestamp());
        let bearer = ("authorization", &*format!("Bearer {OPENAI_ADMIN_KEY}"));
        let version = [("anthropic-version", "2023-06-01")];
        let anthropic_key = ("x-api-key", ANTHROPIC_ADMIN_KEY);
        let at = |d: DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (width, buckets) in [("1h", 24), ("1d", 7)] {
            let openai = format!(
                "{}/v1/organization/usage/completions?start_time={t}&end_time={end}&bucket_width={width}",
                s.url
            );
            let (_, page) = get(&openai, bearer, &[]).await;
            assert_eq!(page["data"].as_array().unwrap().len(), buckets, "{width}");
            let anthropic = format!(
                "{}/v1/organizations/usage_report/messages?starting_at={}&ending_at={}&bucket_width={width}",
                s.url,
                at(start),
                at(hour())
            );
            let (_, page) = get(&anthropic, anthropic_key, &version).await;
            assert_eq!(page["data"].as_array().unwrap().len(), buckets, "{width}");
        }
    }

    #[tokio::test]
    async fn the_usage_stand_in_serves_what_the_providers_serve_and_refuses_the_rest() {
        let ledger = Arc::new(UsageLedger::default());
        ledger.set_now(hour() + Duration::hours(1));
        let at = hour();
        ledger.add(
            "images",
            "key_a",
            "gpt-image-1",
            at,
            &[("images", 4), ("num_model_requests", 2)],
            at,
        );
        ledger.add(
            "images",
            "key_b",
            "dall-e-3",
            at,
            &[("images", 1), ("num_model_requests", 1)],
            at,
        );
        // not visible until 05:00
        ledger.add(
            "embeddings",
            "key_a",
            "text-embedding-3-small",
            at,
            &[("input_tokens", 9)],
            at + Duration::hours(2),
        );
        ledger.add(
            "messages",
            "apikey_1",
            "claude-sonnet-4-5",
            at,
            &[
                ("uncached_input_tokens", 10),
                ("ephemeral_5m_input_tokens", 5),
            ],
            at,
        );
        let s = usage_standin(ledger.clone()).await;
        let bearer = ("authorization", &*format!("Bearer {OPENAI_ADMIN_KEY}"));
        let t = at.timestamp();
        let images = format!(
            "{}/v1/organization/usage/images?start_time={t}&end_time={}&bucket_width=1h&group_by=api_key_id&group_by=model&api_key_ids=key_a",
            s.url,
            t + 3600
        );
        let (status, page) = get(&images, bearer, &[]).await;
        assert_eq!(status, 200, "{page}");
        let results = &page["data"][0]["results"];
        assert_eq!(results.as_array().unwrap().len(), 1, "{page}");
        assert_eq!(results[0]["api_key_id"], "key_a");
        assert_eq!(results[0]["model"], "gpt-image-1");
        assert_eq!(results[0]["images"], 4);
        assert_eq!(results[0]["object"], "organization.usage.images.result");
        // not grouped by key: one result of both keys, without a key id
        let (_, page) = get(
            &format!(
                "{}/v1/organization/usage/images?start_time={t}&end_time={}&bucket_width=1h",
                s.url,
                t + 3600
            ),
            bearer,
            &[],
        )
        .await;
        assert_eq!(page["data"][0]["results"][0]["images"], 5, "{page}");
        assert_eq!(page["data"][0]["results"][0]["api_key_id"], Value::Null);
        // late data: empty until the stand-in's clock reaches it
        let embeddings = images.replace("/images?", "/embeddings?");
        let (_, page) = get(&embeddings, bearer, &[]).await;
        assert_eq!(page["data"][0]["results"], json!([]), "{page}");
        ledger.set_now(at + Duration::hours(2));
        let (_, page) = get(&embeddings, bearer, &[]).await;
        assert_eq!(page["data"][0]["results"][0]["input_tokens"], 9, "{page}");
        // without bucket_width: daily buckets (OpenAI's default)
        let (_, page) = get(
            &format!(
                "{}/v1/organization/usage/images?start_time={t}&end_time={}",
                s.url,
                t + 3600
            ),
            bearer,
            &[],
        )
        .await;
        assert_eq!(
            page["data"][0]["end_time"].as_i64().unwrap()
                - page["data"][0]["start_time"].as_i64().unwrap(),
            86_400
        );

        // what OpenAI refuses
        for (url, auth, status, code_or_param) in [
            (
                images.clone(),
                ("authorization", "Bearer sk-proj-not-admin"),
                401,
                "invalid_api_key",
            ),
            (
                images.replace("/usage/images", "/usage/videos"),
                bearer,
                404,
                "",
            ),
            (
                images.replace("bucket_width=1h", "bucket_width=2h"),
                bearer,
                400,
                "bucket_width",
            ),
            (
                images.replace(&format!("start_time={t}&"), ""),
                bearer,
                400,
                "start_time",
            ),
            (
                images.replace("/usage/images", "/usage/vector_stores"),
                bearer,
                400,
                "group_by",
            ),
            (format!("{images}&limit=169"), bearer, 400, "limit"),
        ] {
            let (got, body) = get(&url, auth, &[]).await;
            assert_eq!(got, status, "{url}: {body}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            if status == 401 {
                assert_eq!(body["error"]["code"], code_or_param);
            } else if status == 400 {
                assert_eq!(body["error"]["param"], code_or_param);
            }
        }
        let post = reqwest::Client::new()
            .post(&images)
            .header(bearer.0, bearer.1)
            .send()
            .await
            .unwrap();
        assert_eq!(post.status().as_u16(), 404, "Invalid URL (POST …)");

        // costs: daily, grouped as asked
        ledger.charge("proj_x", "gpt-4o, input", at - Duration::hours(3), "1.5");
        ledger.charge("proj_x", "gpt-4o, output", at - Duration::hours(3), "2.5");
        let day = (at - Duration::hours(3)).timestamp();
        let costs = format!(
            "{}/v1/organization/costs?start_time={day}&end_time={}&bucket_width=1d&group_by=project_id",
            s.url,
            day + 86_400
        );
        let (status, page) = get(&costs, bearer, &[]).await;
        assert_eq!(status, 200, "{page}");
        let result = &page["data"][0]["results"][0];
        assert_eq!(result["amount"]["value"], 4.0, "{page}");
        assert_eq!(result["project_id"], "proj_x");
        assert_eq!(result["line_item"], Value::Null);
        let (status, body) = get(&costs.replace("=1d", "=1h"), bearer, &[]).await;
        assert_eq!(
            (status, &body["error"]["param"]),
            (400, &json!("bucket_width"))
        );

        // Anthropic
        let report = format!(
            "{}/v1/organizations/usage_report/messages?starting_at={}&ending_at={}&bucket_width=1h&group_by[]=api_key_id&group_by[]=model",
            s.url,
            at.to_rfc3339(),
            (at + Duration::hours(1)).to_rfc3339()
        )
        .replace('+', "%2B");
        let version = [("anthropic-version", "2023-06-01")];
        let (status, page) = get(&report, ("x-api-key", ANTHROPIC_ADMIN_KEY), &version).await;
        assert_eq!(status, 200, "{page}");
        let result = &page["data"][0]["results"][0];
        assert_eq!(result["api_key_id"], "apikey_1");
        assert_eq!(result["cache_creation"]["ephemeral_5m_input_tokens"], 5);
        for (url, key, headers, status, kind) in [
            (
                report.clone(),
                "sk-ant-api-not-admin",
                &version[..],
                401,
                "authentication_error",
            ),
            (
                report.clone(),
                ANTHROPIC_ADMIN_KEY,
                &[][..],
                400,
                "invalid_request_error",
            ),
            (
                report.replace("bucket_width=1h", "bucket_width=1w"),
                ANTHROPIC_ADMIN_KEY,
                &version[..],
                400,
                "invalid_request_error",
            ),
            (
                report.replace("group_by[]=model", "group_by[]=user"),
                ANTHROPIC_ADMIN_KEY,
                &version[..],
                400,
                "invalid_request_error",
            ),
            (
                report.replace("/messages?", "/cost?"),
                ANTHROPIC_ADMIN_KEY,
                &version[..],
                404,
                "not_found_error",
            ),
        ] {
            let (got, body) = get(&url, ("x-api-key", key), headers).await;
            assert_eq!(got, status, "{url}: {body}");
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], kind, "{body}");
        }
    }
}
