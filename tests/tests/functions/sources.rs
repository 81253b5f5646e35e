//! Spend sources against local stand-ins serving the documented response shapes (OpenAI,
//! Anthropic) and against moto (Cost Explorer): pagination, retries, errors, and units.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use spendguard_app::ports::sources::{SourceError, SpendRequest, SpendSource};
use spendguard_aws::cost_explorer::CostExplorer;
use spendguard_domain::budget::{Budget, SourceSpec};
use spendguard_domain::money::FxRates;
use spendguard_domain::period::WindowKind;
use spendguard_domain::secret::Secret;
use spendguard_http::client::HttpSettings;
use spendguard_http::sources::anthropic::AnthropicCosts;
use spendguard_http::sources::openai::OpenAiCosts;
use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::aws::{self, RequestCounter};
use spendguard_tests::conformance::budget;
use spendguard_tests::standin::{Reply, StandIn};

const NOW: &str = "2026-11-03T12:00:00Z";

fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

fn unix(day: &str) -> i64 {
    day.parse::<NaiveDate>()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

fn quick() -> HttpSettings {
    HttpSettings {
        max_attempts: 3,
        max_backoff: StdDuration::from_millis(20),
        timeout: StdDuration::from_secs(5),
    }
}

fn with_source(id: &str, kind: WindowKind, source: SourceSpec) -> Budget {
    let mut b = budget(id, "openai", kind, 100);
    b.source = source;
    b
}

async fn spend_of(
    source: &dyn SpendSource,
    budgets: &[Budget],
) -> Result<BTreeMap<String, Decimal>, SourceError> {
    let refs: Vec<&Budget> = budgets.iter().collect();
    let out = source
        .spend(&SpendRequest {
            fresh_pending: &[],
            budgets: &refs,
            now: now(),
            rates: &FxRates::default(),
        })
        .await?;
    Ok(budgets
        .iter()
        .map(|b| {
            (
                b.id.clone(),
                out[&b.id][&b.windows[0].kind]
                    .as_ref()
                    .expect("window spend")
                    .actual,
            )
        })
        .collect())
}

/// OpenAI: a 429 first, then two pages; amounts are JSON numbers in dollars.
async fn openai_standin() -> StandIn {
    StandIn::start(|r, n| {
        assert_eq!(r.path, "/v1/organization/costs");
        if n == 0 {
            return Reply { status: 429, headers: vec![("retry-after", "0".into())], body: "{}".into(), ..Default::default() };
        }
        let result = |value: serde_json::Value, project: &str| {
            json!({"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"}, "line_item": null, "project_id": project})
        };
        if r.query_values("page").is_empty() {
            Reply::json(200, json!({
                "object": "page",
                "data": [
                    {"object": "bucket", "start_time": unix("2026-11-01"), "end_time": unix("2026-11-02"),
                     "results": [result(json!(0.06), "proj_a"), result(json!(12.34), "proj_b")]},
                    {"object": "bucket", "start_time": unix("2026-11-02"), "end_time": unix("2026-11-03"),
                     "results": [result(json!(1.5), "proj_a")]}
                ],
                "has_more": true,
                "next_page": "page_AAAA"
            }))
        } else {
            assert_eq!(r.query_values("page"), ["page_AAAA"]);
            Reply::json(200, json!({
                "object": "page",
                "data": [{"object": "bucket", "start_time": unix("2026-11-03"), "end_time": unix("2026-11-04"),
                          "results": [result(json!(1e-2), "proj_a")]}],
                "has_more": false,
                "next_page": null
            }))
        }
    })
    .await
}

/// Anthropic: a 500 first, then two pages; amounts are decimal strings in cents.
async fn anthropic_standin() -> StandIn {
    StandIn::start(|r, n| {
        assert_eq!(r.path, "/v1/organizations/cost_report");
        if n == 0 {
            return Reply::json(500, json!({"type": "error", "error": {"type": "api_error", "message": "overloaded"}}));
        }
        let item = |cents: &str, ws: Option<&str>| json!({"currency": "USD", "amount": cents, "workspace_id": ws, "description": null});
        if r.query_values("page").is_empty() {
            Reply::json(200, json!({
                "data": [{"starting_at": "2026-11-01T00:00:00Z", "ending_at": "2026-11-02T00:00:00Z",
                          "results": [item("1234", Some("wrk_b")), item("50.5", None)]}],
                "has_more": true,
                "next_page": "page_MjAyNi0xMS0wMg=="
            }))
        } else {
            Reply::json(200, json!({
                "data": [{"starting_at": "2026-11-03T00:00:00Z", "ending_at": "2026-11-04T00:00:00Z",
                          "results": [item("100", Some("wrk_b"))]}],
                "has_more": false,
                "next_page": null
            }))
        }
    })
    .await
}

#[tokio::test]
async fn openai_costs_are_paginated_retried_and_grouped_by_project() {
    let standin = openai_standin().await;
    let source = OpenAiCosts::new(
        reqwest::Client::new(),
        &standin.url,
        Secret::new("sk-admin-test"),
        quick(),
    );
    let budgets = [
        with_source(
            "org",
            WindowKind::Monthly,
            SourceSpec::Openai { project_id: None },
        ),
        with_source(
            "a",
            WindowKind::Monthly,
            SourceSpec::Openai {
                project_id: Some("proj_a".into()),
            },
        ),
        with_source(
            "a-today",
            WindowKind::Daily,
            SourceSpec::Openai {
                project_id: Some("proj_a".into()),
            },
        ),
        with_source(
            "none",
            WindowKind::Monthly,
            SourceSpec::Openai {
                project_id: Some("proj_zzz".into()),
            },
        ),
    ];
    let spend = spend_of(&source, &budgets).await.unwrap();
    assert_eq!(spend["org"], Decimal::new(1391, 2)); // 0.06 + 12.34 + 1.5 + 0.01
    assert_eq!(spend["a"], Decimal::new(157, 2));
    assert_eq!(spend["a-today"], Decimal::new(1, 2));
    assert_eq!(spend["none"], Decimal::ZERO);

    let received = standin.received();
    assert_eq!(
        received.len(),
        3,
        "429, page 1, page 2: one walk for all budgets"
    );
    for r in &received {
        assert_eq!(r.header("authorization"), Some("Bearer sk-admin-test"));
        assert_eq!(r.query_values("bucket_width"), ["1d"]);
        assert_eq!(r.query_values("group_by"), ["project_id"]);
        assert_eq!(
            r.query_values("start_time"),
            [unix("2026-11-01").to_string()]
        );
    }
}

#[tokio::test]
async fn anthropic_cents_are_divided_by_one_hundred() {
    let standin = anthropic_standin().await;
    let source = AnthropicCosts::new(
        reqwest::Client::new(),
        &standin.url,
        Secret::new("sk-ant-admin-test"),
        quick(),
    );
    let budgets = [
        with_source(
            "org",
            WindowKind::Monthly,
            SourceSpec::Anthropic { workspace_id: None },
        ),
        with_source(
            "b",
            WindowKind::Monthly,
            SourceSpec::Anthropic {
                workspace_id: Some("wrk_b".into()),
            },
        ),
    ];
    let spend = spend_of(&source, &budgets).await.unwrap();
    assert_eq!(spend["b"], Decimal::new(1334, 2)); // 1234 + 100 cents
    assert_eq!(spend["org"], Decimal::new(13845, 3)); // + 50.5 cents
    let received = standin.received();
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(r.header("x-api-key"), Some("sk-ant-admin-test"));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.query_values("group_by[]"), ["workspace_id"]);
        assert_eq!(r.query_values("starting_at"), ["2026-11-01T00:00:00Z"]);
    }
}

#[tokio::test]
async fn the_same_spend_in_cents_and_in_dollars_is_the_same_decimal() {
    let (openai, anthropic) = (openai_standin().await, anthropic_standin().await);
    let dollars = OpenAiCosts::new(
        reqwest::Client::new(),
        &openai.url,
        Secret::new("k"),
        quick(),
    );
    let cents = AnthropicCosts::new(
        reqwest::Client::new(),
        &anthropic.url,
        Secret::new("k"),
        quick(),
    );
    // OpenAI proj_b reported 12.34 (dollars); Anthropic wrk_b reported "1234" (cents), both on 1 Nov
    let from_dollars = with_source(
        "x",
        WindowKind::Monthly,
        SourceSpec::Openai {
            project_id: Some("proj_b".into()),
        },
    );
    let from_cents = with_source(
        "x",
        WindowKind::Monthly,
        SourceSpec::Anthropic {
            workspace_id: Some("wrk_b".into()),
        },
    );
    let refs = [&from_dollars];
    let a = dollars
        .spend(&SpendRequest {
            fresh_pending: &[],
            budgets: &refs,
            now: "2026-11-01T20:00:00Z".parse().unwrap(),
            rates: &FxRates::default(),
        })
        .await
        .unwrap();
    let refs = [&from_cents];
    let b = cents
        .spend(&SpendRequest {
            fresh_pending: &[],
            budgets: &refs,
            now: "2026-11-01T20:00:00Z".parse().unwrap(),
            rates: &FxRates::default(),
        })
        .await
        .unwrap();
    let a = a["x"][&WindowKind::Monthly].as_ref().unwrap().actual;
    let b = b["x"][&WindowKind::Monthly].as_ref().unwrap().actual;
    assert_eq!(a, Decimal::new(1234, 2));
    assert_eq!(a, b);
    assert_eq!(a.to_string(), b.to_string(), "same value and same scale");
}

#[tokio::test]
async fn refused_requests_are_not_retried_and_throttling_gives_up() {
    let unauthorized =
        StandIn::start(|_, _| Reply::json(401, json!({"error": {"message": "invalid admin key"}})))
            .await;
    let source = OpenAiCosts::new(
        reqwest::Client::new(),
        &unauthorized.url,
        Secret::new("sk-wrong"),
        quick(),
    );
    let budgets = [with_source(
        "org",
        WindowKind::Monthly,
        SourceSpec::Openai { project_id: None },
    )];
    let err = spend_of(&source, &budgets).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Unavailable { source_kind: "openai", message } if message.contains("401")),
        "{err}"
    );
    assert!(
        !err.to_string().contains("sk-wrong"),
        "the key never appears in errors"
    );
    assert_eq!(unauthorized.received().len(), 1);

    let throttled = StandIn::start(|_, _| Reply {
        status: 429,
        headers: vec![("retry-after", "0".into())],
        body: String::new(),
        ..Default::default()
    })
    .await;
    let source = AnthropicCosts::new(
        reqwest::Client::new(),
        &throttled.url,
        Secret::new("k"),
        quick(),
    );
    let budgets = [with_source(
        "org",
        WindowKind::Monthly,
        SourceSpec::Anthropic { workspace_id: None },
    )];
    let err = spend_of(&source, &budgets).await.unwrap_err();
    assert!(
        err.to_string().contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(throttled.received().len(), 3);
}

#[tokio::test]
async fn malformed_answers_are_reported_not_guessed() {
    let cases = [
        ("not json", "costs page"),
        (
            r#"{"data":[{"start_time":1,"results":[{"amount":{"value":"abc","currency":"usd"}}]}]}"#,
            "not a decimal",
        ),
        (
            r#"{"data":[{"start_time":1,"results":[{"amount":{"value":1,"currency":"doubloons"}}]}]}"#,
            "ISO 4217",
        ),
    ];
    for (body, expected) in cases {
        let standin = StandIn::start(move |_, _| Reply {
            status: 200,
            headers: vec![],
            body: body.into(),
            ..Default::default()
        })
        .await;
        let source = OpenAiCosts::new(
            reqwest::Client::new(),
            &standin.url,
            Secret::new("k"),
            quick(),
        );
        let budgets = [with_source(
            "org",
            WindowKind::Monthly,
            SourceSpec::Openai { project_id: None },
        )];
        let err = spend_of(&source, &budgets).await.unwrap_err();
        assert!(
            matches!(err, SourceError::BadResponse { .. }),
            "{body}: {err}"
        );
        assert!(err.to_string().contains(expected), "{body}: {err}");
    }
}

#[tokio::test]
async fn cost_explorer_is_asked_once_and_then_served_from_the_cache() {
    let sdk = aws::sdk().await;
    let counter = RequestCounter::default();
    let client = aws_sdk_costexplorer::Client::from_conf(
        aws_sdk_costexplorer::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let metric = |amount: &str| json!({"UnblendedCost": {"Amount": amount, "Unit": "USD"}});
    aws::moto_api(
        "/moto-api/static/ce/cost-and-usage-results",
        &json!({"results": [{
            "ResultsByTime": [
                {"TimePeriod": {"Start": "2026-11-01", "End": "2026-11-02"}, "Total": {}, "Estimated": false,
                 "Groups": [{"Keys": ["Amazon Elastic Compute Cloud - Compute"], "Metrics": metric("40.25")},
                            {"Keys": ["AWS Lambda"], "Metrics": metric("0.75")}]},
                {"TimePeriod": {"Start": "2026-11-02", "End": "2026-11-03"}, "Total": {}, "Estimated": true,
                 "Groups": [{"Keys": ["AWS Lambda"], "Metrics": metric("1.50")}]}
            ],
            "DimensionValueAttributes": []
        }]}),
    )
    .await;
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let source = CostExplorer::new(client, store, chrono::Duration::hours(6));
    let budgets = [
        with_source(
            "account",
            WindowKind::Monthly,
            SourceSpec::CostExplorer { service: None },
        ),
        with_source(
            "lambda",
            WindowKind::Monthly,
            SourceSpec::CostExplorer {
                service: Some("AWS Lambda".into()),
            },
        ),
    ];
    let first = spend_of(&source, &budgets).await.unwrap();
    assert_eq!(first["account"], Decimal::new(4250, 2));
    assert_eq!(first["lambda"], Decimal::new(225, 2));
    assert_eq!(counter.count(), 1, "one paid request for all budgets");
    let second = spend_of(&source, &budgets).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(
        counter.count(),
        1,
        "the second run is served from the cache"
    );
}
