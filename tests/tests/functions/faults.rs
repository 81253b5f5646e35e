//! Faults between the functions and AWS (throttling, 500s, answers lost after the request was
//! carried out), injected by a proxy in front of moto. The results stay exact: usage counted
//! once, each alert published once, an emergency carried out once and completely.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::json;
use spendguard_app::ports::store::AlertStore;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_domain::budget::Budget;
use spendguard_domain::keys::KeySpec;
use spendguard_domain::period::WindowKind;
use spendguard_domain::records::SwitchState;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::usage::UsageRecord;
use spendguard_tests::aws::{self, TopicProbe};
use spendguard_tests::conformance::{budget, month_cost_now, record};
use spendguard_tests::faults::{Fault, FaultProxy, Rule};
use spendguard_tests::hotitem::ingest_usage;
use spendguard_tests::keyguard::KeyGuardWorld;

/// A new table holding `budgets`, with `records` already counted at `at`.
async fn table_with(
    sdk: &aws_config::SdkConfig,
    budgets: &[Budget],
    records: &[UsageRecord],
    at: chrono::DateTime<Utc>,
) -> (DynamoStore, String) {
    let (store, table) = aws::new_store(sdk).await;
    store
        .put_policy(&PolicySet {
            budgets: budgets.to_vec(),
            ..PolicySet::default()
        })
        .await
        .unwrap();
    if !records.is_empty() {
        ingest_usage(&store, budgets, records, None, at)
            .await
            .unwrap();
    }
    (store, table)
}

fn check_config(table: &str, topic: &str) -> budget_check::config::Config {
    budget_check::config::Config {
        table: table.into(),
        alerts_topic_arn: topic.into(),
        sources: Default::default(),
        claim_lease_seconds: 300,
        alert_signing_key_arn: None,
        role: budget_check::config::Role::Check,
    }
}

/// Overlapping batches, sent concurrently and retried by their senders until accepted, through
/// throttling, 500s and lost answers: every distinct record counts exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_counts_stay_exact_through_throttling_errors_and_lost_answers() {
    let sdk = aws::sdk().await;
    let budgets = vec![budget("b", "openai/prod", WindowKind::Monthly, 1_000_000)];
    let (direct, table) = table_with(&sdk, &budgets, &[], Utc::now()).await;
    let proxy = FaultProxy::start(vec![
        Rule {
            operation: "TransactWriteItems",
            body_contains: None,
            every: 3,
            limit: 12,
            fault: Fault::Throttle,
        },
        Rule {
            operation: "TransactWriteItems",
            body_contains: None,
            every: 5,
            limit: 8,
            fault: Fault::ServerError,
        },
        // carried out, answer lost: the SDK's retry meets the record's own marker
        Rule {
            operation: "TransactWriteItems",
            body_contains: None,
            every: 7,
            limit: 2,
            fault: Fault::Delay(Duration::from_secs(7)),
        },
        // carried out, connection broken mid-answer
        Rule {
            operation: "TransactWriteItems",
            body_contains: None,
            every: 4,
            limit: 3,
            fault: Fault::Drop,
        },
    ])
    .await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&proxy.sdk().await),
        &table,
    ));
    let now = Utc::now();
    // 10 batches of 10 records; each batch repeats half of the previous one: 55 distinct records
    let batches: Vec<Vec<_>> = (0..10)
        .map(|b| {
            (b * 5..b * 5 + 10)
                .map(|i| record(&format!("r{i}"), "openai/prod/key-1", 100 + i, now))
                .collect()
        })
        .collect();
    let distinct: Decimal = (0..55).map(|i| Decimal::new(100 + i, 2)).sum();
    let mut sends = Vec::new();
    for batch in batches {
        let (store, budgets) = (store.clone(), budgets.clone());
        sends.push(tokio::spawn(async move {
            // a sender retries a refused batch (the webhook answers 503 on a store error)
            for attempt in 0.. {
                match ingest_usage(store.as_ref(), &budgets, &batch, None, now).await {
                    Ok(_) => return attempt,
                    Err(e) => assert!(e.is_retryable(), "{e}"),
                }
            }
            unreachable!()
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    assert_eq!(month_cost_now(&direct, "openai/prod/key-1").await, distinct);
    assert_eq!(month_cost_now(&direct, "openai/prod").await, distinct);
    let injected = proxy.injected();
    assert!(proxy.total_injected() >= 10, "{injected:?}");
    assert!(injected.keys().any(|(_, f)| f == "Drop"), "{injected:?}");
    assert!(
        injected.keys().any(|(_, f)| f.starts_with("Delay")),
        "{injected:?}"
    );
    eprintln!("faults injected: {:?}", proxy.injected());
}

/// SNS throttles and fails the publishes of a check: every crossing still reaches the topic
/// exactly once (the claim is released on failure, and the next run publishes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_alert_is_published_once_when_sns_throttles_and_fails() {
    let sdk = aws::sdk().await;
    let budgets = vec![
        budget("a", "openai/prod", WindowKind::Monthly, 100),
        budget("b", "anthropic/research", WindowKind::Monthly, 100),
    ];
    let now = Utc::now();
    let (_, table) = table_with(
        &sdk,
        &budgets,
        &[
            record("x1", "openai/prod/k", 9000, now),
            record("x2", "anthropic/research/k", 9500, now),
        ],
        now,
    )
    .await;
    let probe = TopicProbe::new(&sdk).await;
    let proxy = FaultProxy::start(vec![
        Rule {
            operation: "Publish",
            body_contains: None,
            every: 1,
            limit: 3,
            fault: Fault::Throttle,
        },
        Rule {
            operation: "Publish",
            body_contains: None,
            every: 1,
            limit: 4,
            fault: Fault::ServerError,
        },
    ])
    .await;
    let config = check_config(&table, &probe.topic_arn);
    let checker = budget_check::app::checker(&config, &proxy.sdk().await)
        .await
        .unwrap();
    let event = json!({"source": "spendguard.schedule"});
    // runs until a run completes without a failed publish (the schedule does this every N minutes)
    let mut runs = 0;
    loop {
        runs += 1;
        match budget_check::handler::handle(&checker, event.clone()).await {
            Ok(_) => break,
            Err(budget_check::handler::HandlerError::Incomplete { .. }) if runs < 10 => continue,
            Err(e) => panic!("{e}"),
        }
    }
    // and more runs change nothing
    budget_check::handler::handle(&checker, event)
        .await
        .unwrap();
    let envelopes = probe.drain().await;
    assert_eq!(envelopes.len(), 2, "one warning per budget: {envelopes:#?}");
    assert_eq!(proxy.total_injected(), 7, "{:?}", proxy.injected());
    eprintln!("faults injected: {:?}", proxy.injected());
}

/// An emergency through throttled and failing store writes: the kill switch ends engaged and
/// each key is disabled at its provider exactly once, whatever the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emergency_completes_once_through_store_faults() {
    let world = KeyGuardWorld::new(PolicySet::default()).await;
    world.anthropic.add("key_a", true);
    world.anthropic.add("key_b", true);
    world
        .register(vec![
            serde_json::from_value::<KeySpec>(json!({"id": "a", "provider": "anthropic", "scope": "anthropic/research/a", "key_id": "key_a"})).unwrap(),
            serde_json::from_value::<KeySpec>(json!({"id": "b", "provider": "anthropic", "scope": "anthropic/research/b", "key_id": "key_b"})).unwrap(),
        ])
        .await;
    let proxy = FaultProxy::start(vec![
        Rule {
            operation: "PutItem",
            body_contains: None,
            every: 2,
            limit: 6,
            fault: Fault::Throttle,
        },
        Rule {
            operation: "UpdateItem",
            body_contains: None,
            every: 2,
            limit: 6,
            fault: Fault::ServerError,
        },
        Rule {
            operation: "TransactWriteItems",
            body_contains: None,
            every: 2,
            limit: 4,
            fault: Fault::Throttle,
        },
    ])
    .await;
    let handler = key_guard::app::handler(&world.config, &proxy.sdk().await)
        .await
        .unwrap();
    let disable = json!({"action": "disable", "scope": "anthropic/research", "reason": "faults", "actor": "test"});
    let mut invocations = 0;
    // Lambda retries a failed asynchronous invocation; an operator would re-run it
    while handler.handle(disable.clone()).await.is_err() {
        invocations += 1;
        assert!(invocations < 10);
    }
    // once more, as a duplicate delivery would
    handler.handle(disable).await.unwrap();
    let switch = world
        .store
        .kill_switch(&Scope::parse("anthropic/research").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(switch.value.state, SwitchState::Engaged { .. }));
    assert_eq!(world.anthropic.active("key_a"), Some(false));
    assert_eq!(world.anthropic.active("key_b"), Some(false));
    assert_eq!(
        world.anthropic.writes_for("key_a"),
        ["inactive"],
        "disabled once"
    );
    assert_eq!(
        world.anthropic.writes_for("key_b"),
        ["inactive"],
        "disabled once"
    );
    assert!(proxy.total_injected() > 0, "{:?}", proxy.injected());
    eprintln!("faults injected: {:?}", proxy.injected());
}

/// Fail-safe (ADR 013): when the store cannot take the alert's claim, the alert is published
/// anyway and the run says so; once the store is back the claim is taken and the topic sees
/// the alert again, which fan-out's per-channel claims deliver once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_is_published_even_when_the_store_refuses_its_claim() {
    let sdk = aws::sdk().await;
    let budgets = vec![budget("a", "openai/prod", WindowKind::Monthly, 100)];
    let now = Utc::now();
    let (_, table) = table_with(
        &sdk,
        &budgets,
        &[record("x1", "openai/prod/k", 9000, now)],
        now,
    )
    .await;
    let probe = TopicProbe::new(&sdk).await;
    // only the claims' writes fail (their items carry a lease)
    let proxy = FaultProxy::start(vec![Rule {
        operation: "PutItem",
        body_contains: Some("lease_until"),
        every: 1,
        limit: 1_000,
        fault: Fault::ServerError,
    }])
    .await;
    let config = check_config(&table, &probe.topic_arn);
    let checker = budget_check::app::checker(&config, &proxy.sdk().await)
        .await
        .unwrap();
    let event = json!({"source": "spendguard.schedule"});
    let err = budget_check::handler::handle(&checker, event.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("published without a claim"),
        "{err}"
    );
    assert_eq!(probe.drain().await.len(), 1, "published despite the store");
    assert!(
        proxy.total_injected() >= 4,
        "every attempt of the claim failed: {:?}",
        proxy.injected()
    );

    // the store is back: the claim is taken (the topic sees the alert once more), then never again
    let healthy = budget_check::app::checker(&config, &sdk).await.unwrap();
    budget_check::handler::handle(&healthy, event.clone())
        .await
        .unwrap();
    budget_check::handler::handle(&healthy, event)
        .await
        .unwrap();
    let again = probe.drain().await;
    assert_eq!(again.len(), 1, "{again:#?}");
    eprintln!("faults injected: {:?}", proxy.injected());
}

/// One budget over its warning (80 %) and critical (90 %, paging: an open alert is kept) tiers.
async fn crossed_budget(
    sdk: &aws_config::SdkConfig,
    at: chrono::DateTime<Utc>,
) -> (String, TopicProbe) {
    use spendguard_domain::budget::{Action, Basis, Severity, Threshold, Tier};
    let mut b = budget("crash", "openai/prod", WindowKind::Monthly, 100);
    b.windows[0].tiers.push(Tier {
        name: "critical".into(),
        threshold: Threshold::Percent(Decimal::from(90)),
        basis: Basis::Actual,
        severity: Severity::Critical,
        actions: vec![Action::Notify],
    });
    b.routing.insert("critical".into(), vec!["log".into()]);
    let (_, table) = table_with(sdk, &[b], &[record("c1", "openai/prod/k", 9500, at)], at).await;
    (table, TopicProbe::new(sdk).await)
}

async fn checker_at(
    sdk: &aws_config::SdkConfig,
    table: &str,
    topic: &str,
    at: chrono::DateTime<Utc>,
) -> spendguard_app::flows::check::Checker {
    let config = check_config(table, topic);
    let mut backends = spendguard_aws::backends::deployed(sdk, table);
    backends.clock = Arc::new(spendguard_app::ports::clock::FixedClock::new(at));
    // publishes go straight to SNS: the faults here are the store's
    let bus = spendguard_aws::sns::SnsBus::new(aws_sdk_sns::Client::new(&aws::sdk().await), topic);
    budget_check::app::checker_with(&config, sdk, backends, Arc::new(bus))
        .await
        .unwrap()
}

/// The end state that matters: which alerts reached the topic, which paging alerts are open.
async fn end_state(
    table: &str,
    probe: &TopicProbe,
) -> (std::collections::BTreeSet<String>, Vec<String>) {
    let published = probe
        .drain()
        .await
        .iter()
        .map(|e| {
            let event: serde_json::Value =
                serde_json::from_str(e["Message"].as_str().unwrap()).unwrap();
            event["alert_id"].as_str().unwrap().to_string()
        })
        .collect();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws::sdk().await), table);
    let mut open: Vec<String> = store
        .open_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.event.alert_id)
        .collect();
    open.sort();
    (published, open)
}

/// Crash consistency of budget-check: stopped right after each one of its writes, then run
/// again by the schedule (after the claim lease), it ends exactly as an uninterrupted run,
/// and a further run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_check_stopped_after_any_write_then_rerun_ends_as_if_uninterrupted() {
    let sdk = aws::sdk().await;
    let at = "2026-11-15T12:00:00Z".parse().unwrap();
    let later = at + chrono::Duration::minutes(6);
    let event = json!({"source": "spendguard.schedule"});

    // the uninterrupted run, through the proxy only to count its writes
    let (table, probe) = crossed_budget(&sdk, at).await;
    let counting = FaultProxy::start(vec![]).await;
    let checker = checker_at(&counting.sdk().await, &table, &probe.topic_arn, at).await;
    budget_check::handler::handle(&checker, event.clone())
        .await
        .unwrap();
    let writes = counting.writes_seen();
    let expected = end_state(&table, &probe).await;
    assert_eq!(expected.0.len(), 2, "warning and critical: {expected:?}");
    assert_eq!(
        expected.1.len(),
        1,
        "the critical alert is open: {expected:?}"
    );
    assert!(writes >= 3, "{writes} writes");

    for n in 1..=writes {
        let (table, probe) = crossed_budget(&sdk, at).await;
        let proxy = FaultProxy::start(vec![Rule::crash_after_write(n)]).await;
        let crashing = checker_at(&proxy.sdk().await, &table, &probe.topic_arn, at).await;
        let _ = budget_check::handler::handle(&crashing, event.clone()).await;
        assert_eq!(proxy.total_injected(), 1, "stopped after write {n}");
        let healthy = checker_at(&sdk, &table, &probe.topic_arn, later).await;
        budget_check::handler::handle(&healthy, event.clone())
            .await
            .unwrap();
        let report = budget_check::handler::handle(&healthy, event.clone())
            .await
            .unwrap();
        assert_eq!(
            report.alerts.published, 0,
            "after write {n}: a further run publishes nothing"
        );
        assert_eq!(
            end_state(&table, &probe).await,
            expected,
            "stopped after write {n} of {writes}"
        );
    }
    eprintln!(
        "budget-check stopped after each of its {writes} writes, then re-run: same end state"
    );
}

/// Crash consistency of key-guard's emergency: stopped right after each of its store writes,
/// then retried as Lambda retries (a minute later, and again after two more: a crashed
/// invocation's claim on a key holds for `KEY_ACTION_LEASE`), it ends with the switch engaged,
/// both keys recorded as stopped by spendguard, and each key disabled at the provider once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emergency_stopped_after_any_write_then_retried_ends_as_if_uninterrupted() {
    let disable = json!({"action": "disable", "scope": "anthropic/research", "reason": "crash", "actor": "test"});
    let keys = || {
        vec![
            serde_json::from_value::<KeySpec>(json!({"id": "a", "provider": "anthropic", "scope": "anthropic/research/a", "key_id": "key_a"})).unwrap(),
            serde_json::from_value::<KeySpec>(json!({"id": "b", "provider": "anthropic", "scope": "anthropic/research/b", "key_id": "key_b"})).unwrap(),
        ]
    };
    let world = || async {
        let w = KeyGuardWorld::new(PolicySet::default()).await;
        w.anthropic.add("key_a", true);
        w.anthropic.add("key_b", true);
        w.register(keys()).await;
        w
    };
    let state = |w: &KeyGuardWorld| {
        let store = w.store.clone();
        async move {
            let switch = store
                .kill_switch(&Scope::parse("anthropic/research").unwrap())
                .await
                .unwrap()
                .unwrap();
            let statuses: Vec<String> = store
                .keys()
                .await
                .unwrap()
                .iter()
                .map(|k| {
                    format!(
                        "{}={}",
                        k.spec.id,
                        serde_json::to_value(&k.status).unwrap()["status"]
                    )
                })
                .collect();
            (
                matches!(switch.value.state, SwitchState::Engaged { .. }),
                statuses,
            )
        }
    };
    // uninterrupted, through the proxy only to count the writes
    let w = world().await;
    let counting = FaultProxy::start(vec![]).await;
    let handler = key_guard::app::handler(&w.config, &counting.sdk().await)
        .await
        .unwrap();
    handler.handle(disable.clone()).await.unwrap();
    let writes = counting.writes_seen();
    let expected = state(&w).await;
    assert!(expected.0, "engaged");
    assert!(writes >= 3, "{writes} writes");

    for n in 1..=writes {
        let w = world().await;
        let proxy = FaultProxy::start(vec![Rule::crash_after_write(n)]).await;
        let crashing = key_guard::app::handler(&w.config, &proxy.sdk().await)
            .await
            .unwrap();
        let _ = crashing.handle(disable.clone()).await;
        assert_eq!(proxy.total_injected(), 1, "stopped after write {n}");
        let retry = |minutes: i64| {
            let (config, sdk, store) = (w.config.clone(), w.sdk.clone(), w.store.clone());
            async move {
                let backends = spendguard_app::backends::Backends {
                    store: Arc::new(store),
                    vault: Arc::new(spendguard_aws::secrets::SecretsManagerVault::new(
                        aws_sdk_secretsmanager::Client::new(&sdk),
                    )),
                    clock: Arc::new(spendguard_app::ports::clock::FixedClock::new(
                        Utc::now() + chrono::Duration::minutes(minutes),
                    )),
                };
                key_guard::app::handler_with(
                    &config,
                    &sdk,
                    backends,
                    key_guard::app::AwsKeys::Managed,
                )
                .await
                .unwrap()
            }
        };
        // Lambda's first retry may find the crashed invocation's claim on a key still held
        if retry(1).await.handle(disable.clone()).await.is_err() {
            retry(3).await.handle(disable.clone()).await.unwrap();
        }
        assert_eq!(
            state(&w).await,
            expected,
            "stopped after write {n} of {writes}"
        );
        assert_eq!(
            w.anthropic.writes_for("key_a"),
            ["inactive"],
            "after write {n}"
        );
        assert_eq!(
            w.anthropic.writes_for("key_b"),
            ["inactive"],
            "after write {n}"
        );
    }
    eprintln!("key-guard stopped after each of its {writes} writes, then retried: same end state");
}
