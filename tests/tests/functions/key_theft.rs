//! A stolen key, end to end against moto: usage reports for a key that is used only in its
//! team's working hours jump to 20x its usual hour at an hour it is never used at; the next
//! scheduled budget-check (production wiring, five simulated minutes later) raises a critical
//! security finding on the alerts topic, and key-guard (production wiring) engages the kill
//! switch of the key's scope and disables the key at the Anthropic stand-in.

use std::sync::Arc;

use chrono::{Duration, Timelike, Utc};
use serde_json::{Value, json};
use spendguard_app::env::SourcesConfig;
use spendguard_app::flows::check::CheckOptions;
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::SpendStore;
use spendguard_domain::alert::{AlertEvent, AlertKind};
use spendguard_domain::budget::Action;
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::period::Zone;
use spendguard_domain::records::SwitchState;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::usage::USAGE_MARKER_TTL;
use spendguard_domain::usage::UsageEntry;
use spendguard_tests::admin_apis::{ProviderState, anthropic_standin};
use spendguard_tests::aws;
use spendguard_tests::conformance::record;
use spendguard_tests::fanout::lambda_sns_event;
use spendguard_tests::standin::{Received, Reply, StandIn};
use spendguard_tests::webhook::{WebhookWorld, signed_usage};

const SCOPE: &str = "anthropic/search/key-7";

/// The key both tests watch: an Anthropic key of the search team.
fn search_key() -> KeySpec {
    KeySpec {
        id: "search-key".into(),
        provider: ProviderKind::Anthropic,
        scope: Scope::parse(SCOPE).unwrap(),
        secret_arn: None,
        key_id: Some("apikey_search".into()),
        project_id: None,
        user: None,
        rotation: None,
        allow_delete: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stolen_key_is_disabled_by_the_next_scheduled_check() {
    let policy = PolicySet {
        keys: vec![search_key()],
        ..PolicySet::default()
    };
    let w = WebhookWorld::new(policy).await;
    // the start of this hour: the checks 5 and 10 minutes later, and an acknowledgement "for
    // the rest of the finding's day", fall on the same day whenever the test runs (at 23:58 a
    // run from now would cross midnight and find its acknowledgement over)
    let now = Utc::now();
    let reported_at = spendguard_domain::usage::start_of_hour(now);
    let hour = reported_at.hour() as i64;

    // three weeks of working hours: eight hours a day starting three hours after this one
    // (so this hour and the next are hours the key is never used at), $1.50 and 40 requests each
    let midnight = reported_at
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let mut history = Vec::new();
    for day in 1..=21 {
        for offset in 3..11 {
            let when = midnight - Duration::days(day) + Duration::hours((hour + offset) % 24);
            let mut r = record(&format!("h-{day}-{offset}"), SCOPE, 150, when);
            r.requests = 40;
            history.push(UsageEntry::of(&r, &[Zone::UTC]));
        }
    }
    w.store
        .ingest_usage(&history, reported_at, USAGE_MARKER_TTL)
        .await
        .unwrap();

    // minute 0: the application reports this hour's usage through the webhook, signed
    let records: Vec<Value> = (0..6)
        .map(|i| {
            json!({"id": format!("theft-{i}"), "scope": SCOPE, "requests": 100,
                   "cost": {"amount": "5.00", "currency": "USD"},
                   "timestamp": reported_at.to_rfc3339()})
        })
        .collect();
    let body = json!({ "records": records }).to_string();
    let response = w
        .send(signed_usage(&body, "msg-theft", now.timestamp()))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);

    // minute 5: the next scheduled check, with the production wiring (alerts signed)
    let signing_key = aws::secret(
        &w.sdk,
        "alert-signing",
        "alert-signing-0123456789abcdef0123456789abcdef0123456789abcdef",
    )
    .await;
    let checked_at = reported_at + Duration::minutes(5);
    let mut backends = spendguard_aws::backends::deployed(&w.sdk, &w.table);
    backends.clock = Arc::new(FixedClock::new(checked_at));
    let check_config = budget_check::config::Config {
        table: w.table.clone(),
        alerts_topic_arn: w.config.alerts_topic_arn.clone(),
        sources: SourcesConfig::default(),
        claim_lease_seconds: 300,
        alert_signing_key_arn: Some(signing_key.clone()),
        role: budget_check::config::Role::Check,
    };
    let bus = budget_check::app::alerts_bus(&check_config, &w.sdk, &backends);
    let checker = budget_check::app::checker_with(&check_config, &w.sdk, backends, Arc::new(bus))
        .await
        .unwrap();
    let options = CheckOptions {
        actor: "schedule".into(),
        ..CheckOptions::default()
    };
    let report = checker.run(&options).await.unwrap();
    assert_eq!(report.security.findings.len(), 1, "{:?}", report.security);
    assert_eq!(report.security.findings[0].outcome, "published");

    let published = w.probe.drain().await;
    let findings: Vec<AlertEvent> = published
        .iter()
        .map(|e| serde_json::from_str(e["Message"].as_str().unwrap()).unwrap())
        .filter(|a: &AlertEvent| a.kind == AlertKind::Security)
        .collect();
    assert_eq!(findings.len(), 1);
    let finding = &findings[0];
    assert_eq!(finding.tier, "security-critical");
    assert!(finding.actions.contains(&Action::DisableKeys));

    // on-call reads it and says it was expected (with a reason, through fan-out): the pattern
    // stays quiet for the rest of the day; the finding already published still acts
    let fanout = alert_fanout::app::fanout(
        &alert_fanout::config::Config {
            table: w.table.clone(),
            retry: spendguard_tests::fanout::quick_retries(),
            alert_signing_key_arn: None,
            operator: None,
        },
        &w.sdk,
    );
    let acked = fanout
        .handle(
            json!({"action": "ack", "alert_id": finding.alert_id, "actor": "alice",
                       "reason": "planned re-index"}),
        )
        .await
        .unwrap();
    assert_eq!(acked["expected"], "planned re-index", "{acked}");
    let mut backends = spendguard_aws::backends::deployed(&w.sdk, &w.table);
    backends.clock = Arc::new(FixedClock::new(checked_at + Duration::minutes(5)));
    let later = budget_check::app::checker_with(
        &budget_check::config::Config {
            table: w.table.clone(),
            alerts_topic_arn: w.config.alerts_topic_arn.clone(),
            sources: SourcesConfig::default(),
            claim_lease_seconds: 300,
            alert_signing_key_arn: None,
            role: budget_check::config::Role::Check,
        },
        &w.sdk,
        backends,
        Arc::new(spendguard_local::memory_bus::MemoryBus::default()),
    )
    .await
    .unwrap()
    .run(&options)
    .await
    .unwrap();
    assert_eq!(later.security.findings[0].outcome, "acknowledged");

    // key-guard receives it from its SNS subscription (filtered on `actions`)
    let anthropic = Arc::new(ProviderState::default());
    anthropic.add("apikey_search", true);
    let standin = anthropic_standin(anthropic.clone()).await;
    let guard = key_guard::app::handler(
        &key_guard::config::Config {
            table: w.table.clone(),
            anthropic_admin_key_arn: Some(
                aws::secret(&w.sdk, "anthropic-admin", "sk-ant-admin-test").await,
            ),
            anthropic_api_url: standin.url.clone(),
            anthropic_spend_limits: false,
            openai_admin_key_arn: None,
            openai_api_url: standin.url.clone(),
            gcp_credential_arn: None,
            gcp_token_url: None,
            gcp_billing_api_url: spendguard_http::gcp::BILLING_API.into(),
            gcp_iam_api_url: spendguard_http::gcp::IAM_API.into(),
            alerts_topic_arn: None,
            own_function_name: None,
            alert_signing_key_arn: Some(signing_key.clone()),
        },
        &w.sdk,
    )
    .await
    .unwrap();
    // as SNS hands it to key-guard's subscription, its signature attribute included
    let envelope = published
        .iter()
        .find(|e| e["Message"].as_str().unwrap().contains("\"security\""))
        .unwrap();
    // SNS delivers at least once: the same message twice acts once
    for _ in 0..2 {
        guard
            .handle(lambda_sns_event(envelope))
            .await
            .expect("signed by budget-check, carried out");
    }

    let switch = w
        .store
        .kill_switch(&Scope::parse(SCOPE).unwrap())
        .await
        .unwrap()
        .expect("the key's scope has a switch");
    assert!(
        matches!(switch.value.state, SwitchState::Engaged { .. }),
        "{:?}",
        switch.value.state
    );
    assert_eq!(anthropic.active("apikey_search"), Some(false));
    assert_eq!(
        anthropic.writes_for("apikey_search").len(),
        1,
        "disabled once"
    );

    let elapsed = checked_at - reported_at;
    println!(
        "stolen key: usage reported at minute 0, finding {} raised by the check at minute {}, key disabled at minute {}",
        finding.tier,
        elapsed.num_minutes(),
        elapsed.num_minutes()
    );
}

/// Anthropic's usage report as a stand-in: per key and hour, `tokens(key, hour)` tokens, one
/// page of at most `limit` hourly buckets at a time (the cursor is the next bucket's start).
fn anthropic_usage_report(
    tokens: impl Fn(&str, chrono::DateTime<Utc>) -> u64 + Send + Sync + 'static,
) -> impl Fn(&Received, usize) -> Reply + Send + Sync + 'static {
    move |r: &Received, _| {
        if r.path != "/v1/organizations/usage_report/messages"
            || r.header("x-api-key") != Some("sk-ant-admin-test")
        {
            return Reply::json(404, json!({"error": "no such route or key"}));
        }
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&Utc)
        };
        let start = at(&r
            .query_values("page")
            .pop()
            .unwrap_or_else(|| r.query_values("starting_at")[0].clone()));
        let end = at(&r.query_values("ending_at")[0]);
        let limit: i64 = r.query_values("limit")[0].parse().unwrap();
        let keys = r.query_values("api_key_ids[]");
        assert_eq!(r.query_values("bucket_width"), ["1h"]);
        assert_eq!(r.query_values("group_by[]"), ["api_key_id", "model"]);
        let mut data = Vec::new();
        let mut hour = start;
        while hour < end && (data.len() as i64) < limit {
            let results: Vec<Value> = keys
                .iter()
                .map(|k| (k, tokens(k, hour)))
                .filter(|(_, t)| *t > 0)
                .map(|(k, t)| {
                    json!({"api_key_id": k, "uncached_input_tokens": t * 3 / 4,
                                     "cache_read_input_tokens": 0, "output_tokens": t / 4,
                                     "cache_creation": {"ephemeral_5m_input_tokens": 0}})
                })
                .collect();
            data.push(json!({"starting_at": hour.to_rfc3339(),
                             "ending_at": (hour + Duration::hours(1)).to_rfc3339(),
                             "results": results}));
            hour += Duration::hours(1);
        }
        let more = hour < end;
        Reply::json(
            200,
            json!({"data": data, "has_more": more,
                   "next_page": if more { Some(hour.to_rfc3339()) } else { None }}),
        )
    }
}

/// A thief uses the key from elsewhere: the applications report nothing unusual (nothing at
/// all here), but Anthropic's usage report shows 20x the key's usual tokens at an hour it is
/// never used at. The scheduled check (production wiring, the provider's usage read once per
/// run) raises a critical finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thiefs_calls_are_found_in_the_providers_usage_report() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let now = Utc::now();
    let current = now
        .date_naive()
        .and_hms_opt(now.hour(), 0, 0)
        .unwrap()
        .and_utc();
    let key_hour =
        move |h: chrono::DateTime<Utc>| (h.hour() as i64 - now.hour() as i64).rem_euclid(24);
    // working hours: the eight hours starting three after this one; 40,000 tokens an hour.
    // This hour: 800,000 tokens (the thief).
    let standin = StandIn::start(anthropic_usage_report(move |key, hour| {
        match (key, hour >= current, key_hour(hour)) {
            ("apikey_search", true, 0) => 800_000,
            ("apikey_search", false, 3..=10) => 40_000,
            _ => 0,
        }
    }))
    .await;
    store
        .put_policy(&PolicySet {
            keys: vec![search_key()],
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let admin_key = aws::secret(&sdk, "anthropic-admin", "sk-ant-admin-test").await;
    let bus = Arc::new(spendguard_local::memory_bus::MemoryBus::default());
    let checker = budget_check::app::checker_with(
        &budget_check::config::Config {
            table: table.clone(),
            alerts_topic_arn: "unused: the bus is in memory".into(),
            sources: SourcesConfig {
                anthropic_admin_key_arn: Some(admin_key),
                anthropic_api_url: standin.url.clone(),
                ..SourcesConfig::default()
            },
            claim_lease_seconds: 300,
            alert_signing_key_arn: None,
            role: budget_check::config::Role::Check,
        },
        &sdk,
        spendguard_aws::backends::deployed(&sdk, &table),
        bus.clone(),
    )
    .await
    .unwrap();
    let options = CheckOptions {
        actor: "schedule".into(),
        ..CheckOptions::default()
    };
    let report = checker.run(&options).await.unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let findings = bus.events();
    assert_eq!(findings.len(), 1, "{:?}", report.security);
    assert_eq!(findings[0].tier, "security-critical");
    assert!(
        findings[0]
            .summary
            .contains("800000 tokens (20x the usual 40000)"),
        "{}",
        findings[0].summary
    );
    // the provider was asked for the run's two hours once, and for the baseline's four weeks
    // (672 hours, four pages of 168) once
    let asked = standin.received();
    assert_eq!(asked.len(), 1 + 4, "{asked:#?}");
    // a later run the same day reuses the cached baseline: one more request
    checker.run(&options).await.unwrap();
    assert_eq!(standin.received().len(), 6);
    assert_eq!(bus.events().len(), 1, "raised once");
}
