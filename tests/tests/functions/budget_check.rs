//! budget-check end to end against moto: the production wiring (`app::checker`), DynamoDB,
//! SNS with an SQS queue subscribed to count what was really published.

use std::collections::BTreeMap;
use std::sync::Arc;

use budget_check::app;
use budget_check::config::{Config, Role};
use budget_check::handler::{self, HandlerError};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_app::env::SourcesConfig;
use spendguard_app::flows::check::PendingAgeMetric;
use spendguard_app::flows::check::{CheckOptions, Checker, DEFAULT_CLAIM_LEASE};
use spendguard_app::flows::nightly::MemoryMetrics;
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::sources::SpendSource;
use spendguard_app::ports::store::AlertStore;
use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::SpendStore;
use spendguard_app::ports::store::StateStore;
use spendguard_app::sources::counters::UsageCounters;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_aws::sns::SnsBus;
use spendguard_domain::budget::{
    Action, Basis, Budget, Severity, SourceSpec, Threshold, Tier, Window,
};
use spendguard_domain::money::Currency;
use spendguard_domain::period::{WindowKind, YearMonth, Zone};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_tests::aws::{self, TopicProbe};
use spendguard_tests::conformance::record;
use spendguard_tests::faults::FaultProxy;
use spendguard_tests::hotitem::ingest_usage;

fn tier(name: &str, percent: i64, actions: Vec<Action>) -> Tier {
    Tier {
        name: name.into(),
        threshold: Threshold::Percent(Decimal::from(percent)),
        basis: Basis::Actual,
        severity: Severity::for_tier_name(name).unwrap_or(Severity::Warning),
        actions,
    }
}

fn monthly_budget(id: &str, scope: &str, limit: i64) -> Budget {
    Budget {
        id: id.into(),
        description: None,
        scope: Scope::parse(scope).unwrap(),
        currency: Currency::USD,
        zone: Zone::UTC,
        windows: vec![Window {
            provider_cap: false,
            kind: WindowKind::Monthly,
            limit: Decimal::from(limit),
            tiers: vec![
                tier("warning", 50, vec![Action::Notify]),
                tier(
                    "critical",
                    80,
                    vec![
                        Action::Notify,
                        Action::ReduceLimits {
                            factor: Decimal::new(5, 1),
                        },
                    ],
                ),
                tier("emergency", 100, vec![Action::Notify, Action::DisableKeys]),
            ],
        }],
        source: SourceSpec::Usage,
        routing: BTreeMap::from([("emergency".to_string(), vec!["log".to_string()])]),
    }
}

fn config(table: &str, topic: &str) -> Config {
    Config {
        table: table.into(),
        alerts_topic_arn: topic.into(),
        sources: SourcesConfig::default(),
        claim_lease_seconds: 300,
        alert_signing_key_arn: None,
        role: Role::Check,
    }
}

fn scheduled_event() -> Value {
    serde_json::from_str(include_str!("../../../events/budget-check/scheduled.json")).unwrap()
}

struct World {
    sdk: aws_config::SdkConfig,
    store: DynamoStore,
    table: String,
    probe: TopicProbe,
}

async fn world(budgets: Vec<Budget>) -> World {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    store
        .put_policy(&PolicySet {
            budgets,
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let probe = TopicProbe::new(&sdk).await;
    World {
        sdk,
        store,
        table,
        probe,
    }
}

/// A checker on the world's store, reading its usage counters, publishing to its topic.
fn usage_checker(w: &World, clock: Arc<FixedClock>) -> Checker {
    let store: Arc<dyn StateStore> = Arc::new(w.store.clone());
    Checker {
        store: store.clone(),
        bus: Arc::new(SnsBus::new(
            aws_sdk_sns::Client::new(&w.sdk),
            &w.probe.topic_arn,
        )),
        sources: vec![Arc::new(UsageCounters::new(store)) as Arc<dyn SpendSource>],
        key_usage: Vec::new(),
        clock,
        claim_lease: DEFAULT_CLAIM_LEASE,
        provider_caps: Vec::new(),
        pending_age: None,
    }
}

/// The webhook's ingest of `records` at `now` and nothing after it: no stream roll-up.
async fn ingest_without_roll_up(
    w: &World,
    records: &[spendguard_domain::usage::UsageRecord],
    now: DateTime<Utc>,
) {
    let policy = w.store.load_policy().await.unwrap();
    spendguard_app::flows::ingest::ingest_usage(&w.store, &policy.budgets, records, None, now)
        .await
        .unwrap();
}

/// SNS envelopes -> (alert event, message attributes).
fn alerts(envelopes: &[Value]) -> Vec<(Value, Value)> {
    envelopes
        .iter()
        .map(|e| {
            let event: Value = serde_json::from_str(e["Message"].as_str().unwrap()).unwrap();
            (event, e["MessageAttributes"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_runs_publish_each_crossing_once() {
    let w = world(vec![
        monthly_budget("prod", "openai/prod", 100),
        monthly_budget("other", "anthropic", 1000),
    ])
    .await;
    // $85 on openai/prod this month: warning (50 %) and critical (80 %) are crossed
    let now = Utc::now();
    let records = vec![
        record("u1", "openai/prod/key-1", 6000, now),
        record("u2", "openai/prod/key-2", 2500, now),
    ];
    let policy = w.store.load_policy().await.unwrap();
    ingest_usage(&w.store, &policy.budgets, &records, None, now)
        .await
        .unwrap();

    let checker = Arc::new(
        app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
            .await
            .unwrap(),
    );
    let mut runs = Vec::new();
    for _ in 0..50 {
        let checker = checker.clone();
        runs.push(tokio::spawn(async move {
            handler::handle(&checker, scheduled_event()).await
        }));
    }
    let mut published = 0;
    for r in runs {
        let report = r.await.unwrap().expect("every run succeeds");
        published += report.alerts.published;
    }
    assert_eq!(
        published, 2,
        "the runs together published each crossing once"
    );

    let delivered = alerts(&w.probe.drain().await);
    let mut per_crossing: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for (event, _) in &delivered {
        let key = ["budget_id", "window", "period_key", "tier"]
            .map(|k| event[k].as_str().unwrap().to_string());
        *per_crossing.entry(key.into()).or_default() += 1;
    }
    let period = format!("M#{}", YearMonth::of(now.date_naive()));
    assert_eq!(
        per_crossing,
        BTreeMap::from([
            (
                (
                    "prod".into(),
                    "monthly".into(),
                    period.clone(),
                    "critical".into()
                ),
                1
            ),
            (
                ("prod".into(), "monthly".into(), period, "warning".into()),
                1
            ),
        ])
    );
    // the attributes subscriptions filter on
    let (critical, attributes) = delivered
        .iter()
        .find(|(e, _)| e["tier"] == "critical")
        .unwrap();
    assert_eq!(attributes["severity"]["Value"], "critical");
    assert_eq!(attributes["actions"]["Type"], "String.Array");
    assert_eq!(
        attributes["actions"]["Value"],
        r#"["notify","reduce_limits"]"#
    );
    assert_eq!(critical["spend"]["amount"], "85");
    assert_eq!(critical["percent"], "85.0");

    // a later run finds everything already raised and publishes nothing
    let again = handler::handle(&checker, scheduled_event()).await.unwrap();
    assert_eq!(
        (again.alerts.published, again.alerts.already_raised),
        (0, 2)
    );
    assert!(w.probe.drain().await.is_empty());
}

/// A run after the crossings were raised reads their claims in one batch and writes none of
/// them again (ADR 015): its only write is its audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_run_reads_raised_claims_in_one_batch_and_rewrites_none() {
    let budgets: Vec<Budget> = (0..30)
        .map(|i| monthly_budget(&format!("b{i:02}"), &format!("openai/team/key-{i:02}"), 100))
        .collect();
    let w = world(budgets).await;
    let now = Utc::now();
    // $85 on each key: warning and critical crossed, 60 crossings in all
    let records: Vec<_> = (0..30)
        .map(|i| {
            record(
                &format!("u{i}"),
                &format!("openai/team/key-{i:02}"),
                8500,
                now,
            )
        })
        .collect();
    let policy = w.store.load_policy().await.unwrap();
    ingest_usage(&w.store, &policy.budgets, &records, None, now)
        .await
        .unwrap();
    let proxy = FaultProxy::start(Vec::new()).await;
    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &proxy.sdk().await)
        .await
        .unwrap();
    let first = handler::handle(&checker, scheduled_event()).await.unwrap();
    assert_eq!(first.alerts.published, 60);
    let writes_before = proxy.writes_seen();
    let again = handler::handle(&checker, scheduled_event()).await.unwrap();
    assert_eq!(
        (again.alerts.published, again.alerts.already_raised),
        (0, 60)
    );
    assert_eq!(
        proxy.writes_seen() - writes_before,
        1,
        "the later run wrote its audit entry and nothing else"
    );
    assert_eq!(
        w.probe.drain().await.len(),
        60,
        "each crossing published once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_and_changes_nothing() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let now = Utc::now();
    ingest_usage(
        &w.store,
        &w.store.load_policy().await.unwrap().budgets,
        &[record("d1", "openai/prod", 12000, now)],
        None,
        now,
    )
    .await
    .unwrap();
    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    let report = handler::handle(&checker, json!({"dry_run": true}))
        .await
        .unwrap();
    assert_eq!(report.alerts.would_publish, 3);
    assert_eq!(
        report.budgets[0].windows[0].highest_tier.as_deref(),
        Some("emergency")
    );
    assert!(
        w.probe.drain().await.is_empty(),
        "a dry run publishes nothing"
    );
    assert!(
        w.store
            .audit_log(YearMonth::of(now.date_naive()), 10)
            .await
            .unwrap()
            .is_empty(),
        "and records nothing"
    );
    // the real run still raises all three: the dry run claimed nothing
    let report = handler::handle(&checker, json!({})).await.unwrap();
    assert_eq!(report.alerts.published, 3);
    assert_eq!(alerts(&w.probe.drain().await).len(), 3);
    let audit = w
        .store
        .audit_log(YearMonth::of(now.date_naive()), 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "manual");
    assert_eq!(audit[0].detail["alerts"]["published"], 3);
}

#[tokio::test]
async fn one_budget_on_demand_and_unknown_budgets_refused() {
    let w = world(vec![
        monthly_budget("prod", "openai/prod", 100),
        monthly_budget("dev", "openai/dev", 100),
    ])
    .await;
    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    let report = handler::handle(&checker, json!({"budget_id": "dev"}))
        .await
        .unwrap();
    assert_eq!(report.budgets.len(), 1);
    assert_eq!(report.budgets[0].budget_id, "dev");
    let err = handler::handle(&checker, json!({"budget_id": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(lambda_error_type(err), "UnknownBudget");
}

fn lambda_error_type(e: HandlerError) -> String {
    lambda_runtime::Diagnostic::from(e).error_type
}

#[tokio::test]
async fn a_failed_publish_releases_the_claim_and_the_next_run_publishes() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let now = Utc::now();
    ingest_usage(
        &w.store,
        &w.store.load_policy().await.unwrap().budgets,
        &[record("p1", "openai/prod", 6000, now)],
        None,
        now,
    )
    .await
    .unwrap();
    // a topic that does not exist: SNS refuses the publish
    let missing = format!("{}-gone", w.probe.topic_arn);
    let broken = app::checker(&config(&w.table, &missing), &w.sdk)
        .await
        .unwrap();
    let err = handler::handle(&broken, scheduled_event())
        .await
        .unwrap_err();
    assert_eq!(lambda_error_type(err), "CheckIncomplete");
    // fixed configuration: the alert that failed is published now, once
    let fixed = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    let report = handler::handle(&fixed, scheduled_event()).await.unwrap();
    assert_eq!(report.alerts.published, 1);
    assert_eq!(alerts(&w.probe.drain().await).len(), 1);
}

#[tokio::test]
async fn alerts_re_arm_in_the_next_period() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let store: Arc<dyn StateStore> = Arc::new(w.store.clone());
    let clock = Arc::new(FixedClock::new("2026-11-30T23:00:00Z".parse().unwrap()));
    let checker = usage_checker(&w, clock.clone());
    let budgets = store.load_policy().await.unwrap().budgets;
    ingest_usage(
        store.as_ref(),
        &budgets,
        &[record("nov", "openai/prod", 6000, clock_now(&clock))],
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    let options = CheckOptions {
        actor: "test".into(),
        ..CheckOptions::default()
    };
    assert_eq!(checker.run(&options).await.unwrap().alerts.published, 1);
    assert_eq!(checker.run(&options).await.unwrap().alerts.published, 0);
    // December: November's spend no longer counts; new spend crosses warning again
    clock.advance(Duration::hours(2));
    assert_eq!(checker.run(&options).await.unwrap().alerts.published, 0);
    ingest_usage(
        store.as_ref(),
        &budgets,
        &[record("dec", "openai/prod", 5000, clock_now(&clock))],
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    let december = checker.run(&options).await.unwrap();
    assert_eq!(december.alerts.published, 1);
    let delivered = alerts(&w.probe.drain().await);
    let periods: Vec<&str> = delivered
        .iter()
        .map(|(e, _)| e["period_key"].as_str().unwrap())
        .collect();
    assert_eq!(periods, ["M#2026-11", "M#2026-12"]);
}

/// A paging alert of a window taken out of its budget (the budget stays) recovers at the next
/// check: before, it stayed open and escalated until its period ended — a rolling window's
/// never does.
#[tokio::test]
async fn a_paging_alert_of_a_removed_window_recovers() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let store: Arc<dyn StateStore> = Arc::new(w.store.clone());
    let clock = Arc::new(FixedClock::new("2026-11-20T12:00:00Z".parse().unwrap()));
    let checker = usage_checker(&w, clock.clone());
    let budgets = store.load_policy().await.unwrap().budgets;
    ingest_usage(
        store.as_ref(),
        &budgets,
        &[record("r1", "openai/prod", 8500, clock_now(&clock))],
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    let options = CheckOptions {
        actor: "test".into(),
        ..CheckOptions::default()
    };
    checker.run(&options).await.unwrap();
    assert_eq!(
        store.open_alerts().await.unwrap().len(),
        1,
        "critical is open"
    );
    w.probe.drain().await;

    // the monthly window is replaced by a daily one; the budget stays
    let mut budget = monthly_budget("prod", "openai/prod", 100);
    budget.windows[0].kind = WindowKind::Daily;
    budget.windows[0].limit = Decimal::from(1000);
    store
        .put_policy(&PolicySet {
            budgets: vec![budget],
            ..PolicySet::default()
        })
        .await
        .unwrap();
    clock.advance(Duration::minutes(5));
    let report = checker.run(&options).await.unwrap();
    assert_eq!(report.alerts.recoveries, 1, "{report:?}");
    assert!(store.open_alerts().await.unwrap().is_empty());
    let delivered = alerts(&w.probe.drain().await);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0["kind"], "recovery");
    assert!(
        delivered[0].0["summary"]
            .as_str()
            .is_some_and(|m| m.contains("window was removed")),
        "{}",
        delivered[0].0
    );
}

fn clock_now(clock: &FixedClock) -> chrono::DateTime<Utc> {
    use spendguard_app::ports::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn aws_budgets_source_reads_calculated_spend_and_records_observations() {
    let mut budget = monthly_budget("aws-main", "aws/123456789012", 1000);
    // moto keeps budgets per account, shared by every test: a name of our own
    let name = aws::unique("monthly-total");
    budget.source = SourceSpec::AwsBudgets {
        budget_name: name.clone(),
    };
    budget.windows[0].tiers.push(Tier {
        name: "forecast-overrun".into(),
        threshold: Threshold::Percent(Decimal::from(110)),
        basis: Basis::Forecast,
        severity: Severity::Warning,
        actions: vec![Action::Notify],
    });
    let w = world(vec![budget]).await;
    let budgets = aws_sdk_budgets::Client::new(&w.sdk);
    let spend = |amount: &str| {
        aws_sdk_budgets::types::Spend::builder()
            .amount(amount)
            .unit("USD")
            .build()
            .unwrap()
    };
    budgets
        .create_budget()
        .account_id("123456789012")
        .budget(
            aws_sdk_budgets::types::Budget::builder()
                .budget_name(&name)
                .budget_limit(spend("1000"))
                .time_unit(aws_sdk_budgets::types::TimeUnit::Monthly)
                .budget_type(aws_sdk_budgets::types::BudgetType::Cost)
                .calculated_spend(
                    aws_sdk_budgets::types::CalculatedSpend::builder()
                        .actual_spend(spend("612.40"))
                        .forecasted_spend(spend("1180.00"))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut cfg = config(&w.table, &w.probe.topic_arn);
    cfg.sources.aws_account_id = Some("123456789012".into());
    let checker = app::checker(&cfg, &w.sdk).await.unwrap();
    let report = handler::handle(&checker, scheduled_event()).await.unwrap();
    let window = &report.budgets[0].windows[0];
    assert_eq!(window.spend.unwrap().amount, Decimal::new(61240, 2));
    assert_eq!(window.tiers_reached, ["warning", "forecast-overrun"]);
    let observed = w.store.observations("aws-main").await.unwrap();
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].actual.amount, Decimal::new(61240, 2));
    assert_eq!(
        observed[0].forecast.unwrap().amount,
        Decimal::new(118000, 2)
    );

    // a budget that uses AWS Budgets in a deployment not configured for it fails loudly
    let unconfigured = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    let err = handler::handle(&unconfigured, scheduled_event())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("source `aws_budgets` is used by budgets but not configured"),
        "{err}"
    );
}

/// Issue 20 §1-2: a stored counter that cannot be read back (a figure written before the
/// bounds, or edited by hand) fails only the windows that read it — loudly, with an operator
/// alert once per budget, window and period and a non-retryable error type — while every
/// other budget is evaluated and alerted as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_counter_fails_only_its_windows_loudly_and_once_per_period() {
    let w = world(vec![
        monthly_budget("poisoned", "app/a", 100),
        monthly_budget("healthy", "app/b", 100),
    ])
    .await;
    let now = Utc::now();
    let policy = w.store.load_policy().await.unwrap();
    ingest_usage(
        &w.store,
        &policy.budgets,
        &[
            record("a1", "app/a/k", 100, now),
            record("b1", "app/b/k", 6000, now),
        ],
        None,
        now,
    )
    .await
    .unwrap();
    // DynamoDB keeps 38 digits; Decimal reads at most 28
    let month = YearMonth::of(now.date_naive());
    aws::plant_counter(
        &w.sdk,
        &w.table,
        "app/a",
        &month.to_string(),
        &format!("d{}_cost.USD", now.format("%d")),
        "1e35",
    )
    .await;

    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    let err = handler::handle(&checker, scheduled_event())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert_eq!(lambda_error_type(err), "BudgetsUnevaluable", "{message}");
    assert!(message.contains("poisoned"), "{message}");
    let delivered = alerts(&w.probe.drain().await);
    let tiers: BTreeMap<(String, String), usize> =
        delivered.iter().fold(BTreeMap::new(), |mut m, (e, _)| {
            let key = (
                e["budget_id"].as_str().unwrap().to_string(),
                e["tier"].as_str().unwrap().to_string(),
            );
            *m.entry(key).or_default() += 1;
            m
        });
    assert_eq!(
        tiers,
        BTreeMap::from([
            (("healthy".into(), "warning".into()), 1),
            (("poisoned".into(), "budget_unevaluable".into()), 1),
        ]),
        "{delivered:#?}"
    );
    let (unevaluable, attributes) = delivered
        .iter()
        .find(|(e, _)| e["tier"] == "budget_unevaluable")
        .unwrap();
    assert_eq!(attributes["severity"]["Value"], "critical");
    assert!(
        unevaluable["summary"]
            .as_str()
            .unwrap()
            .contains("cannot be evaluated"),
        "{unevaluable}"
    );
    // the next run fails the same way, and alerts nobody again this period
    let again = handler::handle(&checker, scheduled_event())
        .await
        .unwrap_err();
    assert_eq!(lambda_error_type(again), "BudgetsUnevaluable");
    assert!(w.probe.drain().await.is_empty());
}

/// A window that cannot be evaluated says nothing about the tiers it had reached: its open
/// paging alerts stay open (a poisoned counter must not page "recovered" in the middle of an
/// incident), and only the `budget_unevaluable` alert recovers once it can be evaluated again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unevaluable_window_does_not_resolve_its_open_alerts() {
    let w = world(vec![monthly_budget("paging", "app/a", 100)]).await;
    let now = Utc::now();
    let policy = w.store.load_policy().await.unwrap();
    // $85 of $100: warning and critical are reached and open
    ingest_usage(
        &w.store,
        &policy.budgets,
        &[record("a1", "app/a/k", 8500, now)],
        None,
        now,
    )
    .await
    .unwrap();
    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    handler::handle(&checker, scheduled_event()).await.unwrap();
    let mut raised: Vec<String> = alerts(&w.probe.drain().await)
        .iter()
        .map(|(e, _)| e["tier"].as_str().unwrap().to_string())
        .collect();
    raised.sort();
    assert_eq!(raised, ["critical", "warning"]);

    let month = YearMonth::of(now.date_naive());
    aws::plant_counter(
        &w.sdk,
        &w.table,
        "app/a",
        &month.to_string(),
        &format!("d{}_cost.USD", now.format("%d")),
        "1e35",
    )
    .await;
    let err = handler::handle(&checker, scheduled_event())
        .await
        .unwrap_err();
    assert_eq!(lambda_error_type(err), "BudgetsUnevaluable");
    let delivered = alerts(&w.probe.drain().await);
    let kinds: Vec<(String, String)> = delivered
        .iter()
        .map(|(e, _)| {
            (
                e["tier"].as_str().unwrap_or_default().to_string(),
                e["summary"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 1, "only the unevaluable alert: {kinds:#?}");
    assert_eq!(kinds[0].0, "budget_unevaluable", "{kinds:#?}");
    let open: Vec<String> = w
        .store
        .open_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.event.tier)
        .collect();
    for tier in ["critical", "budget_unevaluable"] {
        assert!(open.iter().any(|t| t == tier), "{tier} not open: {open:?}");
    }

    // repaired: the unevaluable alert recovers, the critical one (still reached) stays open
    aws::plant_counter(
        &w.sdk,
        &w.table,
        "app/a",
        &month.to_string(),
        &format!("d{}_cost.USD", now.format("%d")),
        "85",
    )
    .await;
    handler::handle(&checker, scheduled_event()).await.unwrap();
    let summaries: Vec<String> = alerts(&w.probe.drain().await)
        .iter()
        .map(|(e, _)| e["summary"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert!(
        summaries[0].starts_with("RECOVERED") && summaries[0].contains("evaluated again"),
        "{summaries:#?}"
    );
    let open: Vec<String> = w
        .store
        .open_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.event.tier)
        .collect();
    assert_eq!(open, ["critical"]);
}

/// A key's hour counter that cannot be read is a blind spot of theft detection: the run
/// fails naming the key and the hour, rather than skipping the key quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_hour_counter_fails_theft_detection_visibly() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let key = spendguard_domain::keys::KeySpec {
        id: "watched".into(),
        provider: spendguard_domain::keys::ProviderKind::Anthropic,
        scope: Scope::parse("anthropic/team/k1").unwrap(),
        secret_arn: None,
        key_id: Some("apikey_watched".into()),
        project_id: None,
        user: None,
        rotation: None,
        allow_delete: false,
    };
    store
        .put_policy(&PolicySet {
            keys: vec![key],
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let probe = TopicProbe::new(&sdk).await;
    let hour = spendguard_domain::usage::start_of_hour(Utc::now());
    aws_sdk_dynamodb::Client::new(&sdk)
        .update_item()
        .table_name(&table)
        .key(
            "PK",
            aws_sdk_dynamodb::types::AttributeValue::S("SPEND#anthropic/team/k1".into()),
        )
        .key(
            "SK",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("H#{}", hour.format("%Y-%m-%dT%H"))),
        )
        .update_expression("SET #c = :v")
        .expression_attribute_names("#c", "t_cost.USD")
        .expression_attribute_values(
            ":v",
            aws_sdk_dynamodb::types::AttributeValue::N("1e35".into()),
        )
        .send()
        .await
        .unwrap();
    let checker = app::checker(&config(&table, &probe.topic_arn), &sdk)
        .await
        .unwrap();
    let err = handler::handle(&checker, scheduled_event())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("theft detection of key watched") && message.contains("1e35"),
        "{message}"
    );
}

/// The pending usage items of `leaf` as the table's stream reports them (the documented Lambda
/// event shape, built from the keys the store wrote).
async fn stream_event_of(w: &World, leaf: &str) -> Value {
    use aws_sdk_dynamodb::types::AttributeValue;
    let out = aws_sdk_dynamodb::Client::new(&w.sdk)
        .query()
        .table_name(&w.table)
        .key_condition_expression("PK = :pk AND begins_with(SK, :pending)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("SPEND#{leaf}")))
        .expression_attribute_values(":pending", AttributeValue::S("P#".into()))
        .send()
        .await
        .unwrap();
    let records: Vec<Value> = out
        .items()
        .iter()
        .map(|item| {
            let text = |name: &str| item[name].as_s().unwrap().clone();
            json!({
                "eventSource": "aws:dynamodb",
                "eventName": "INSERT",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "Keys": {"PK": {"S": text("PK")}, "SK": {"S": text("SK")}},
                    "SequenceNumber": format!("seq-{}", text("SK")),
                    "StreamViewType": "KEYS_ONLY",
                },
            })
        })
        .collect();
    assert!(!records.is_empty(), "{leaf} has pending items");
    json!({ "Records": records })
}

/// ADR 031, a stalled stream: a stream batch rolls up the leaves it names (once: its
/// redelivery moves nothing), and the manual `{"roll_up": "all"}` every other one, after which
/// the project's counter is exact and the check alerts. (The scheduled check rolls up too:
/// `a_stalled_stream_delays_an_ancestor_alert_by_one_check_at_most`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_recovered_by_the_manual_roll_up() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let now = Utc::now();
    let records = vec![
        record("s1", "openai/prod/key-1", 6000, now),
        record("s2", "openai/prod/key-2", 2500, now),
    ];
    ingest_without_roll_up(&w, &records, now).await;
    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    let project_cost = || async {
        let key = spendguard_domain::usage::CounterKey {
            scope: Scope::parse("openai/prod").unwrap(),
            zone: Zone::UTC,
            month: YearMonth::of(now.date_naive()),
        };
        let counters = w
            .store
            .read_counters(std::slice::from_ref(&key))
            .await
            .unwrap();
        counters
            .get(&key)
            .map(|m| {
                m.days
                    .values()
                    .map(|t| t.get(spendguard_domain::usage::Metric::Cost(Currency::USD)))
                    .sum()
            })
            .unwrap_or(Decimal::ZERO)
    };
    let batch = stream_event_of(&w, "openai/prod/key-1").await;
    let rolled = |answer| match answer {
        handler::Answer::RolledUp(r) => r,
        other => panic!("not a roll-up: {other:?}"),
    };
    let first = rolled(
        handler::handle_any(&checker, Role::RollUp, batch.clone())
            .await
            .unwrap(),
    );
    assert_eq!(first.leaves, 1);
    assert!(first.moved > 0, "{first:?}");
    assert_eq!(project_cost().await, Decimal::from(60));
    let again = rolled(
        handler::handle_any(&checker, Role::RollUp, batch)
            .await
            .unwrap(),
    );
    assert_eq!(again.moved, 0, "a redelivered batch moves nothing");

    let all = rolled(
        handler::handle_any(&checker, Role::RollUp, json!({"roll_up": "all"}))
            .await
            .unwrap(),
    );
    assert!(all.moved > 0, "{all:?}");
    assert_eq!(project_cost().await, Decimal::from(85));
    let report = handler::handle(&checker, scheduled_event()).await.unwrap();
    assert_eq!(report.alerts.published, 2, "warning and critical");

    let refused = handler::handle_any(&checker, Role::RollUp, json!({"roll_up": "some"})).await;
    assert!(
        matches!(refused, Err(HandlerError::InvalidEvent(_))),
        "{refused:?}"
    );
}

/// budget-check's binary is deployed as two functions (ADR 031): the scheduled check and the
/// stream's roll-up. A stream wired to the check is refused and rolls nothing up (it ran the
/// roll-up, and its invocations kept the check's dead man's switch green); a check event sent
/// to the roll-up function is refused rather than run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_deployed_role_refuses_the_others_events() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let now = Utc::now();
    let records = vec![record("r1", "openai/prod/key-1", 6000, now)];
    ingest_without_roll_up(&w, &records, now).await;
    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();
    let batch = stream_event_of(&w, "openai/prod/key-1").await;

    let refused = handler::handle_any(&checker, Role::Check, batch.clone()).await;
    assert!(
        matches!(&refused, Err(HandlerError::InvalidEvent(m)) if m.contains("SPENDGUARD_ROLE=roll-up")),
        "{refused:?}"
    );
    let refused = handler::handle_any(&checker, Role::RollUp, scheduled_event()).await;
    assert!(
        matches!(&refused, Err(HandlerError::InvalidEvent(m)) if m.contains("budget-check")),
        "{refused:?}"
    );
    // the refused stream batch moved nothing: the roll-up function still finds it pending
    let answer = handler::handle_any(&checker, Role::RollUp, batch)
        .await
        .unwrap();
    let handler::Answer::RolledUp(rolled) = answer else {
        panic!("not a roll-up: {answer:?}");
    };
    assert_eq!(rolled.moved, 1, "{rolled:?}");
}

/// One leaf that cannot be rolled up (here a pending item the roll-up cannot read) does not
/// hold back the others of its stream batch: they are rolled up, and the answer names only
/// the failing leaf's records (`batchItemFailures`, ReportBatchItemFailures), which the
/// mapping retries and then sends to the failed-events queue. (The first build failed the
/// whole batch: every leaf in it waited for the bad one, then went to the queue with it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_leaf_fails_only_its_own_stream_records() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let now = Utc::now();
    let records = vec![
        record("g1", "openai/prod/key-1", 6000, now),
        record("b1", "openai/prod/key-2", 2500, now),
    ];
    ingest_without_roll_up(&w, &records, now).await;
    // key-2's pending item made unreadable (its deltas' list gone)
    let bad = stream_event_of(&w, "openai/prod/key-2").await;
    let bad_sk = bad["Records"][0]["dynamodb"]["Keys"]["SK"]["S"]
        .as_str()
        .unwrap()
        .to_string();
    aws_sdk_dynamodb::Client::new(&w.sdk)
        .update_item()
        .table_name(&w.table)
        .key("PK", AttributeValue::S("SPEND#openai/prod/key-2".into()))
        .key("SK", AttributeValue::S(bad_sk.clone()))
        .update_expression("REMOVE targets")
        .send()
        .await
        .unwrap();
    let good = stream_event_of(&w, "openai/prod/key-1").await;
    let mut batch = good["Records"].as_array().unwrap().clone();
    batch.extend(bad["Records"].as_array().unwrap().iter().cloned());
    let checker = app::checker(&config(&w.table, &w.probe.topic_arn), &w.sdk)
        .await
        .unwrap();

    let answer = handler::handle_any(&checker, Role::RollUp, json!({ "Records": batch }))
        .await
        .unwrap();
    let handler::Answer::RolledUp(rolled) = answer else {
        panic!("not a roll-up: {answer:?}");
    };
    // key-1's item moved (by the batch's call, which then failed on key-2's item: its count
    // is not in `moved`, which sums the leaf-by-leaf pass)
    assert!(
        spendguard_tests::hotitem::pending_sks(&w.sdk, &w.table, "openai/prod/key-1")
            .await
            .is_empty(),
        "key-1's pending item: {rolled:?}"
    );
    let failed: Vec<&str> = rolled
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, [format!("seq-{bad_sk}")]);
    let json = serde_json::to_value(handler::Answer::RolledUp(rolled)).unwrap();
    assert_eq!(
        json["batchItemFailures"],
        json!([{ "itemIdentifier": format!("seq-{bad_sk}") }])
    );
}

/// `{"roll_up": "all"}` on the 1st of a month rolls up the previous month's leaves too (the
/// first build took the months of now - 32 days, now and tomorrow: on December 1st, October
/// and December; November's pending spend stayed pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_up_everything_on_the_first_covers_the_previous_month() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let now = "2026-12-01T00:30:00Z".parse().unwrap();
    let records = vec![
        record(
            "nov",
            "openai/prod/key-1",
            6000,
            "2026-11-30T12:00:00Z".parse().unwrap(),
        ),
        record(
            "dec",
            "openai/prod/key-2",
            2500,
            "2026-12-01T00:10:00Z".parse().unwrap(),
        ),
    ];
    ingest_without_roll_up(&w, &records, now).await;
    let checker = usage_checker(&w, Arc::new(FixedClock::new(now)));
    let answer = handler::handle_any(&checker, Role::RollUp, json!({"roll_up": "all"}))
        .await
        .unwrap();
    let handler::Answer::RolledUp(rolled) = answer else {
        panic!("not a roll-up: {answer:?}");
    };
    assert_eq!(rolled.moved, 2, "both months' pending items: {rolled:?}");
    let project = |month: &str| spendguard_domain::usage::CounterKey {
        scope: Scope::parse("openai/prod").unwrap(),
        zone: Zone::UTC,
        month: YearMonth::of(format!("{month}-01").parse().unwrap()),
    };
    let keys = [project("2026-11"), project("2026-12")];
    let counters = w.store.read_counters(&keys).await.unwrap();
    let cost = |k| {
        counters
            .get(k)
            .map(|m: &spendguard_domain::usage::MonthCounters| {
                m.days
                    .values()
                    .map(|t| t.get(spendguard_domain::usage::Metric::Cost(Currency::USD)))
                    .sum::<Decimal>()
            })
    };
    assert_eq!(cost(&keys[0]), Some(Decimal::from(60)), "November");
    assert_eq!(cost(&keys[1]), Some(Decimal::from(25)), "December");
}

/// `budget` with one daily window instead of its monthly one.
fn daily(mut budget: Budget) -> Budget {
    budget.windows[0].kind = WindowKind::Daily;
    budget
}

/// Review finding 1: while the stream stalls (no roll-up runs), the scheduled check rolls up
/// whatever is pending before it evaluates, so spend that crossed an ancestor's tiers is
/// alerted by the next check, not when the stream recovers. (Before, the check read only the
/// rolled-up counters: `openai/prod` read 0 and nothing was published.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_delays_an_ancestor_alert_by_one_check_at_most() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let now = "2026-12-07T11:30:00Z".parse().unwrap();
    let records = vec![
        record("s1", "openai/prod/key-1", 6000, now),
        record("s2", "openai/prod/key-2", 2500, now),
    ];
    // the webhook's ingest, and no stream roll-up after it
    ingest_without_roll_up(&w, &records, now).await;
    let clock = Arc::new(FixedClock::new(now + Duration::minutes(4)));
    let checker = usage_checker(&w, clock);

    let report = handler::handle(&checker, scheduled_event()).await.unwrap();
    assert_eq!(
        report.alerts.published, 2,
        "warning and critical of openai/prod"
    );
    assert_eq!(report.pending.leaves, 2, "{:?}", report.pending);
    assert!(report.pending.moved >= 2, "{:?}", report.pending);
    // what the stream delivers later finds nothing left
    let batch = rolled_up_answer(
        handler::handle_any(&checker, Role::RollUp, json!({"roll_up": "all"}))
            .await
            .unwrap(),
    );
    assert_eq!(batch.moved, 0, "{batch:?}");
    let report = handler::handle(&checker, scheduled_event()).await.unwrap();
    assert_eq!(report.alerts.published, 0, "each crossing once");
    assert_eq!(report.pending.leaves, 0, "nothing pending any more");
}

fn rolled_up_answer(answer: handler::Answer) -> handler::RolledUp {
    match answer {
        handler::Answer::RolledUp(r) => r,
        other => panic!("not a roll-up: {other:?}"),
    }
}

/// Review finding 1, the day's end: a daily `openai` budget crossed at 23:58 by keys whose
/// roll-up is stalled is alerted by the first check after the crossing even when that check
/// runs after midnight: it evaluates the period of the spend it rolled up, not only today's.
/// (Before, the crossing was never alerted: the nightly run rolled it up at 02:00 and the
/// checks after it evaluated the new day.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_crossing_rolled_up_after_midnight_is_alerted_in_its_own_day() {
    let w = world(vec![daily(monthly_budget("openai-day", "openai", 100))]).await;
    let crossing = "2026-12-07T23:58:00Z".parse().unwrap();
    let records = vec![
        record("d1", "openai/prod/key-1", 6000, crossing),
        record("d2", "openai/dev/key-2", 4500, crossing),
    ];
    ingest_without_roll_up(&w, &records, crossing).await;
    let clock = Arc::new(FixedClock::new("2026-12-08T00:00:30Z".parse().unwrap()));
    let checker = usage_checker(&w, clock);

    handler::handle(&checker, scheduled_event()).await.unwrap();
    let published = alerts(&w.probe.drain().await);
    let tiers: Vec<(&str, &str)> = published
        .iter()
        .map(|(event, _)| {
            (
                event["period_key"].as_str().unwrap_or_default(),
                event["tier"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(tiers.len(), 3, "warning, critical, emergency: {tiers:?}");
    assert!(
        tiers
            .iter()
            .all(|(period, _)| period.contains("2026-12-07")),
        "the crossing's own day: {tiers:?}"
    );
}

/// The crossing of `a_daily_crossing_rolled_up_after_midnight_is_alerted_in_its_own_day`, but
/// rolled up by the stream (usage-rollup) a few seconds after midnight, before the check: the
/// check finds nothing pending, yet the day that ended holds spend no evaluation has seen. The
/// roll-up that moves spend across a period boundary records that spend's quarter-hour, and the
/// next check evaluates the periods that ended since. (Before, nothing was alerted: the check
/// evaluated only what it rolled up itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_the_stream_rolls_up_after_its_day_ended_is_alerted_by_the_next_check() {
    let w = world(vec![daily(monthly_budget("openai-day", "openai", 100))]).await;
    let crossing = "2026-12-07T23:59:50Z".parse().unwrap();
    let records = vec![
        record("e1", "openai/prod/key-1", 6000, crossing),
        record("e2", "openai/dev/key-2", 4500, crossing),
    ];
    ingest_without_roll_up(&w, &records, crossing).await;
    // the stream's roll-up, ten seconds after midnight
    let stream = usage_checker(
        &w,
        Arc::new(FixedClock::new("2026-12-08T00:00:10Z".parse().unwrap())),
    );
    let rolled = rolled_up_answer(
        handler::handle_any(&stream, Role::RollUp, json!({"roll_up": "all"}))
            .await
            .unwrap(),
    );
    assert_eq!(rolled.moved, 2, "{rolled:?}");
    assert_eq!(
        w.store.late_spend().await.unwrap().since(),
        Some("2026-12-07T23:45:00Z".parse().unwrap()),
        "the roll-up marked the quarter-hour of the spend it moved late"
    );

    let checker = usage_checker(
        &w,
        Arc::new(FixedClock::new("2026-12-08T00:03:00Z".parse().unwrap())),
    );
    let report = handler::handle(&checker, scheduled_event()).await.unwrap();
    assert_eq!(report.pending.leaves, 0, "nothing left pending");
    let published = alerts(&w.probe.drain().await);
    let tiers: Vec<&str> = published
        .iter()
        .filter(|(event, _)| {
            event["period_key"]
                .as_str()
                .unwrap_or_default()
                .contains("2026-12-07")
        })
        .map(|(event, _)| event["tier"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        tiers.len(),
        3,
        "warning, critical, emergency of the 7th: {published:?}"
    );
    assert!(
        published
            .iter()
            .all(|(event, _)| event["raised_at"] == "2026-12-08T00:03:00Z"),
        "raised when the check raised them, not at the day's last second: {published:?}"
    );
    let late = w.store.late_spend().await.unwrap();
    assert!(
        late.marks.iter().all(|m| m.quarters.is_empty()),
        "settled: {late:?}"
    );
    // settled: the next check raises no crossing again (it recovers them, their day ended)
    handler::handle(&checker, scheduled_event()).await.unwrap();
    let again: Vec<_> = alerts(&w.probe.drain().await)
        .into_iter()
        .filter(|(event, _)| event["kind"] != "recovery")
        .collect();
    assert!(again.is_empty(), "each crossing once: {again:?}");
}

/// A dry run rolls up what is pending (it moves spend, which changes no total) but raises
/// nothing: the ended periods it rolled spend into are still evaluated by the next real
/// check. (Before, the dry run's roll-up consumed them: the real check found nothing pending
/// and the crossing of the day that ended was never alerted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_leaves_the_ended_periods_it_rolled_up_to_the_next_check() {
    let w = world(vec![daily(monthly_budget("openai-day", "openai", 100))]).await;
    let crossing = "2026-12-07T23:58:00Z".parse().unwrap();
    let records = vec![
        record("f1", "openai/prod/key-1", 6000, crossing),
        record("f2", "openai/dev/key-2", 4500, crossing),
    ];
    ingest_without_roll_up(&w, &records, crossing).await;
    let checker = usage_checker(
        &w,
        Arc::new(FixedClock::new("2026-12-08T00:01:00Z".parse().unwrap())),
    );
    let dry = handler::handle(&checker, json!({"dry_run": true}))
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert!(
        alerts(&w.probe.drain().await).is_empty(),
        "a dry run publishes nothing"
    );
    assert!(
        w.store.late_spend().await.unwrap().since().is_some(),
        "a dry run settles nothing"
    );

    handler::handle(&checker, scheduled_event()).await.unwrap();
    let published = alerts(&w.probe.drain().await);
    let days: Vec<&str> = published
        .iter()
        .map(|(event, _)| event["period_key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(days.len(), 3, "the 7th's three tiers: {published:?}");
    assert!(days.iter().all(|d| d.contains("2026-12-07")), "{days:?}");
}

/// Review S4: every scheduled run emits `PendingUsageAge`, how long the oldest pending item it
/// found had waited since it was written (not its record's time), and 0 when nothing was
/// pending, so that the `pending-usage-age` alarm sees a dead or disabled stream (each check
/// finds minutes-old items) and a backlog that grows. (Before, nothing measured it: only a
/// warning log when more leaves were pending than one check takes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_emits_how_long_the_oldest_pending_usage_waited() {
    let w = world(vec![monthly_budget("prod", "openai/prod", 100)]).await;
    let written: chrono::DateTime<Utc> = "2026-12-07T11:30:00Z".parse().unwrap();
    // a backfilled record two days old, written first; a fresh one written a minute later
    for (id, key, at, now) in [
        (
            "old",
            "openai/prod/key-1",
            written - Duration::days(2),
            written,
        ),
        (
            "new",
            "openai/prod/key-2",
            written,
            written + Duration::minutes(1),
        ),
    ] {
        ingest_without_roll_up(&w, &[record(id, key, 1000, at)], now).await;
    }
    let clock = Arc::new(FixedClock::new(written + Duration::minutes(4)));
    let metrics = Arc::new(MemoryMetrics::default());
    let mut checker = usage_checker(&w, clock.clone());
    checker.pending_age = Some(PendingAgeMetric {
        sink: metrics.clone(),
        function: "test-budget-check".into(),
    });

    handler::handle(&checker, scheduled_event()).await.unwrap();
    clock.advance(Duration::minutes(5));
    handler::handle(&checker, scheduled_event()).await.unwrap();

    let lines: Vec<Value> = metrics
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ages: Vec<(&Value, &Value, &Value)> = lines
        .iter()
        .map(|v| {
            (
                &v["FunctionName"],
                &v["PendingUsageAge"],
                &v["_aws"]["Timestamp"],
            )
        })
        .collect();
    let ms = |at: chrono::DateTime<Utc>| json!(at.timestamp_millis());
    assert_eq!(
        ages,
        vec![
            (
                &json!("test-budget-check"),
                &json!(240),
                &ms(written + Duration::minutes(4))
            ),
            (
                &json!("test-budget-check"),
                &json!(0),
                &ms(written + Duration::minutes(9))
            ),
        ],
        "4 minutes waited by the item written first, then nothing pending"
    );
}

/// A record of a day that had already ended when it was reported (a backfill) is counted, but
/// its ended day is not evaluated again when its roll-up comes after a period boundary: the
/// late-spend mark is when the spend was counted on its key, not when it happened, so the
/// ancestors see what they would have seen had it been counted in them at ingest (as the
/// embedded store does). (Marked by the record's time, the backfill raised yesterday's
/// alerts today.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_record_of_an_ended_day_raises_nothing_for_that_day() {
    let w = world(vec![daily(monthly_budget("openai-day", "openai", 100))]).await;
    let reported = "2026-12-08T10:05:00Z".parse().unwrap();
    let records = vec![record(
        "backfill",
        "openai/prod/key-1",
        15000,
        "2026-12-07T12:00:00Z".parse().unwrap(),
    )];
    ingest_without_roll_up(&w, &records, reported).await;
    // rolled up after the quarter-hour boundary of 10:15
    let stream = usage_checker(
        &w,
        Arc::new(FixedClock::new("2026-12-08T10:16:00Z".parse().unwrap())),
    );
    let rolled = rolled_up_answer(
        handler::handle_any(&stream, Role::RollUp, json!({"roll_up": "all"}))
            .await
            .unwrap(),
    );
    assert_eq!(rolled.moved, 1, "{rolled:?}");
    let late = w.store.late_spend().await.unwrap();
    assert_eq!(
        late.since(),
        Some("2026-12-08T10:00:00Z".parse().unwrap()),
        "marked by when it was counted (10:05), not when it happened: {late:?}"
    );
    let checker = usage_checker(
        &w,
        Arc::new(FixedClock::new("2026-12-08T10:20:00Z".parse().unwrap())),
    );
    handler::handle(&checker, scheduled_event()).await.unwrap();
    let days: Vec<String> = alerts(&w.probe.drain().await)
        .iter()
        .map(|(event, _)| event["period_key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        days.iter().all(|d| !d.contains("2026-12-07")),
        "nothing for the 7th: {days:?}"
    );
}

/// Review of a741783, B-3: two keys cross a daily `openai` budget a second before midnight,
/// each webhook evaluation seeing only its own pending spend; the healthy stream rolls both up
/// a second later, in the same quarter-hour (no late mark), after the day's last check. The
/// first check of the next day evaluates the day that ended since the last check once more,
/// at its end. (Before, nothing was alerted: that check evaluated only the new day.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_rolled_up_after_the_days_last_check_is_alerted_in_its_day() {
    let w = world(vec![daily(monthly_budget("openai-day", "openai", 100))]).await;
    let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
    let check_at = |t: &str| usage_checker(&w, Arc::new(FixedClock::new(at(t))));
    // the day's last check, before the crossing
    handler::handle(&check_at("2026-12-07T23:57:00Z"), scheduled_event())
        .await
        .unwrap();
    for (id, key, cents) in [
        ("g1", "openai/prod/key-1", 6000),
        ("g2", "openai/dev/key-2", 4500),
    ] {
        let crossing = at("2026-12-07T23:59:58Z");
        ingest_without_roll_up(&w, &[record(id, key, cents, crossing)], crossing).await;
    }
    let rolled = rolled_up_answer(
        handler::handle_any(
            &check_at("2026-12-07T23:59:59Z"),
            Role::RollUp,
            json!({"roll_up": "all"}),
        )
        .await
        .unwrap(),
    );
    assert_eq!(rolled.moved, 2, "{rolled:?}");
    assert!(
        w.store.late_spend().await.unwrap().marks.is_empty(),
        "moved before midnight: not late"
    );
    assert!(alerts(&w.probe.drain().await).is_empty());

    handler::handle(&check_at("2026-12-08T00:02:00Z"), scheduled_event())
        .await
        .unwrap();
    let days: Vec<String> = alerts(&w.probe.drain().await)
        .iter()
        .map(|(event, _)| event["period_key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(days, ["D#2026-12-07"; 3], "the 7th's three tiers");
}
