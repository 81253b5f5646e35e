//! alert-fanout end to end: real HTTP stand-ins for the chat and paging services, SES and
//! the store through moto, alerts raised by budget-check and carried by SNS.

use std::collections::HashMap;
use std::sync::Arc;

use alert_fanout::config::OperatorRoute;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_app::flows::check::{CheckOptions, Checker, DEFAULT_CLAIM_LEASE};
use spendguard_app::flows::fanout::FanoutError;
use spendguard_app::ports::clock::{Clock, FixedClock};
use spendguard_app::ports::sources::SpendSource;
use spendguard_app::ports::store::AlertStore;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::StateStore;
use spendguard_app::sources::counters::UsageCounters;
use spendguard_aws::sns::SnsBus;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::budget::{
    Action, Basis, Budget, Severity, SourceSpec, Threshold, Tier, Window,
};
use spendguard_domain::money::Currency;
use spendguard_domain::period::{WindowKind, Zone};
use spendguard_domain::records::{KillSwitch, SwitchState};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::{
    ChannelKind, EscalationLevel, EscalationPolicy, PolicySet, Settings,
};
use spendguard_http::poster::RetryPolicy;
use spendguard_tests::aws::{self, TopicProbe};
use spendguard_tests::conformance::record;
use spendguard_tests::fanout::{
    FanoutWorld, PAGERDUTY_KEY, PagerDuty, WEBHOOK_SECRET, lambda_sns_event, mode, quick_retries,
};
use spendguard_tests::hotitem::ingest_usage;
use spendguard_tests::webhook::python;

const ALL: [&str; 6] = [
    "ops-slack",
    "oncall-pager",
    "team-teams",
    "dev-discord",
    "audit-hook",
    "finance-email",
];

fn fixture_event(name: &str) -> AlertEvent {
    let path = format!(
        "{}/../events/alert-fanout/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_str(v["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap()
}

fn golden(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../functions/alert-fanout/tests/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn sns_of(event: &AlertEvent) -> Value {
    lambda_sns_event(&json!({
        "Type": "Notification", "MessageId": aws::unique("m"), "TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts",
        "Message": serde_json::to_string(event).unwrap(), "Timestamp": "2026-11-20T18:00:00.000Z",
        "SignatureVersion": "1", "Signature": "x", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem", "UnsubscribeURL": "https://x"
    }))
}

fn delivered(w: &FanoutWorld, name: &str) -> Vec<spendguard_tests::standin::Received> {
    w.receivers[name].received()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_channel_receives_its_golden_payload_exactly_once() {
    let w = FanoutWorld::new(RetryPolicy::default(), &[], PolicySet::default()).await;
    let mut event = fixture_event("emergency");
    event.channels = ALL.iter().map(|s| s.to_string()).collect();
    w.store
        .put_kill_switch(
            &KillSwitch {
                scope: Scope::parse("openai/dev/key-dev1").unwrap(),
                state: SwitchState::Engaged {
                    reason: "emergency".into(),
                    actor: "key-guard".into(),
                    at: event.raised_at,
                    incident: "test".into(),
                    incidents: vec!["test".into()],
                },
                limit_factor: Decimal::ZERO,
                updated_at: event.raised_at,
                released: Vec::new(),
            },
            None,
            &spendguard_tests::conformance::audit("engaged"),
        )
        .await
        .unwrap();
    let result = w
        .fanout
        .handle(sns_of(&event))
        .await
        .expect("all delivered");
    assert_eq!(
        result["delivered"][0]["channels"].as_array().unwrap().len(),
        7,
        "six channels and the log"
    );

    let body =
        |name: &str| -> Value { serde_json::from_str(&delivered(&w, name)[0].body).unwrap() };
    let golden_json = |name: &str| -> Value { serde_json::from_str(&golden(name)).unwrap() };
    for name in [
        "ops-slack",
        "oncall-pager",
        "team-teams",
        "dev-discord",
        "audit-hook",
    ] {
        assert_eq!(delivered(&w, name).len(), 1, "{name}");
    }
    assert_eq!(body("ops-slack"), golden_json("emergency.slack.json"));
    assert_eq!(
        body("oncall-pager"),
        golden_json("emergency.pagerduty.json")
    );
    assert_eq!(body("team-teams"), golden_json("emergency.teams.json"));
    assert_eq!(body("dev-discord"), golden_json("emergency.discord.json"));
    assert_eq!(delivered(&w, "oncall-pager")[0].path, "/v2/enqueue");

    // the webhook body is the alert, signed so that the standardwebhooks package verifies it
    let hook = &delivered(&w, "audit-hook")[0];
    let mut expected = serde_json::to_value(&event).unwrap();
    expected["kill_switch"] = json!("engaged on openai/dev/key-dev1");
    assert_eq!(body("audit-hook"), expected);
    let headers: HashMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|h| (h, hook.header(h).unwrap()))
        .collect();
    let verdict = python(
        json!({"op": "webhook-verify", "secret": WEBHOOK_SECRET, "headers": headers, "body": hook.body}),
    );
    assert_eq!(verdict["valid"], true, "{verdict}");

    // SES (through moto) took the HTML part of the golden e-mail
    let emails: Vec<Value> = w
        .sent_emails()
        .await
        .into_iter()
        .filter(|m| m["subject"] == event.subject())
        .collect();
    assert_eq!(emails.len(), 1);
    assert_eq!(
        emails[0]["body"].as_str().unwrap().to_string() + "\n",
        golden("emergency.email.html")
    );
    assert_eq!(emails[0]["destinations"]["ToAddresses"], json!(w.email_to));

    // delivered again (SNS at-least-once): nothing is sent twice
    let again = w.fanout.handle(sns_of(&event)).await.unwrap();
    assert!(again.to_string().contains("already_sent"));
    for name in [
        "ops-slack",
        "oncall-pager",
        "team-teams",
        "dev-discord",
        "audit-hook",
    ] {
        assert_eq!(delivered(&w, name).len(), 1, "{name} after a replay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_broken_channel_never_blocks_the_others_and_a_retry_sends_only_what_failed() {
    let (_kept, closed) = spendguard_tests::standin::refusing_port();
    let refused = format!("http://{closed}/hook");
    let extra = [
        ("refused-slack", ChannelKind::Slack, refused),
        (
            "plain-http-slack",
            ChannelKind::Slack,
            "http://hooks.slack.example.com/services/T0/B0/plaintext".to_string(),
        ),
    ];
    let w = FanoutWorld::new(quick_retries(), &extra, PolicySet::default()).await;
    w.receivers["ops-slack"].set(mode::FAIL_500);
    w.receivers["dev-discord"].set(mode::THROTTLE_ONCE);
    w.receivers["team-teams"].set(mode::HANG);
    let mut event = fixture_event("critical");
    event.channels = ALL
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().map(|e| e.0.to_string()))
        .collect();

    let err = w.fanout.handle(sns_of(&event)).await.unwrap_err();
    let FanoutError::DeliveryFailed { failures } = &err else {
        panic!("{err}")
    };
    let failed: Vec<&str> = failures
        .iter()
        .map(|f| f.split(':').next().unwrap())
        .collect();
    assert_eq!(
        failed,
        [
            "ops-slack",
            "team-teams",
            "refused-slack",
            "plain-http-slack"
        ],
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|f| f.contains("HTTP 500")),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|f| f.contains("timed out")),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|f| f.contains("connection failed")),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|f| f.contains("TLS-less")),
        "{failures:?}"
    );
    assert_eq!(
        alert_fanout::handler::diagnostic(err).error_type,
        "DeliveryFailed"
    );
    // the healthy and the throttled-then-healthy channels got exactly one message each
    assert_eq!(delivered(&w, "oncall-pager").len(), 1);
    assert_eq!(delivered(&w, "audit-hook").len(), 1);
    let discord = delivered(&w, "dev-discord");
    assert_eq!(discord.len(), 2, "429 with Retry-After, then delivered");
    assert_eq!(discord[0].body, discord[1].body);
    assert_eq!(
        delivered(&w, "ops-slack").len(),
        3,
        "three attempts at the failing channel"
    );

    // the failing services recover; Lambda's retry sends only to the channels that failed
    w.receivers["ops-slack"].set(mode::OK);
    w.receivers["team-teams"].set(mode::OK);
    let err = w.fanout.handle(sns_of(&event)).await.unwrap_err();
    let FanoutError::DeliveryFailed { failures } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        failures.len(),
        2,
        "only the unreachable and the TLS-less channels remain: {failures:?}"
    );
    // each channel has accepted exactly one message over both invocations
    for name in [
        "ops-slack",
        "team-teams",
        "oncall-pager",
        "audit-hook",
        "dev-discord",
    ] {
        let accepted = delivered(&w, name).iter().filter(|r| r.accepted()).count();
        assert_eq!(accepted, 1, "{name}");
    }
    assert_eq!(delivered(&w, "oncall-pager").len(), 1, "not sent twice");
    assert_eq!(delivered(&w, "audit-hook").len(), 1, "not sent twice");
    assert_eq!(delivered(&w, "dev-discord").len(), 2, "not sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_sns_event_three_times_at_once_yields_one_message_per_channel() {
    let w = Arc::new(FanoutWorld::new(RetryPolicy::default(), &[], PolicySet::default()).await);
    let mut event = fixture_event("critical");
    event.channels = ALL.iter().map(|s| s.to_string()).collect();
    let sns = sns_of(&event);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (w, sns) = (w.clone(), sns.clone());
        tasks.push(tokio::spawn(async move { w.fanout.handle(sns).await }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("each invocation succeeds: delivered, already sent, or in progress elsewhere");
    }
    for name in [
        "ops-slack",
        "oncall-pager",
        "team-teams",
        "dev-discord",
        "audit-hook",
    ] {
        assert_eq!(delivered(&w, name).len(), 1, "{name}");
    }
    let emails = w
        .sent_emails()
        .await
        .into_iter()
        .filter(|m| m["subject"] == event.subject())
        .count();
    assert_eq!(emails, 1);
}

fn paging_budget(id: &str, scope: &str, channels: &[&str]) -> Budget {
    let tier = |name: &str, percent: i64, severity| Tier {
        name: name.into(),
        threshold: Threshold::Percent(Decimal::from(percent)),
        basis: Basis::Actual,
        severity,
        actions: vec![Action::Notify],
    };
    Budget {
        id: id.into(),
        description: None,
        scope: Scope::parse(scope).unwrap(),
        currency: Currency::USD,
        zone: Zone::UTC,
        windows: vec![Window {
            provider_cap: false,
            kind: WindowKind::Daily,
            limit: Decimal::from(10),
            tiers: vec![
                tier("critical", 80, Severity::Critical),
                tier("emergency", 100, Severity::Emergency),
            ],
        }],
        source: SourceSpec::Usage,
        routing: ["critical", "emergency"]
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    channels.iter().map(|c| c.to_string()).collect(),
                )
            })
            .collect(),
    }
}

fn checker(w: &FanoutWorld, topic: &str, clock: Arc<FixedClock>) -> Checker {
    let store: Arc<dyn StateStore> = Arc::new(w.store.clone());
    Checker {
        sources: vec![Arc::new(UsageCounters::new(store.clone())) as Arc<dyn SpendSource>],
        key_usage: Vec::new(),
        store,
        bus: Arc::new(SnsBus::new(aws_sdk_sns::Client::new(&w.sdk), topic)),
        clock,
        claim_lease: DEFAULT_CLAIM_LEASE,
        provider_caps: Vec::new(),
        pending_age: None,
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Everything budget-check published since the last call, handed to fan-out like SNS would.
async fn fan_out(w: &FanoutWorld, probe: &TopicProbe) -> Vec<AlertEvent> {
    let mut events = Vec::new();
    for envelope in probe.drain().await {
        w.fanout
            .handle(lambda_sns_event(&envelope))
            .await
            .expect("delivered");
        events.push(serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap());
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_gets_a_trigger_then_a_resolve_with_the_same_dedup_key() {
    let policy = PolicySet {
        budgets: vec![paging_budget("dev", "openai/dev", &["oncall-pager"])],
        settings: Settings::default(),
        keys: Vec::new(),
    };
    let w = FanoutWorld::new(RetryPolicy::default(), &[], policy).await;
    let probe = TopicProbe::new(&w.sdk).await;
    let clock = Arc::new(FixedClock::new(at("2026-11-20T18:00:00Z")));
    let check = checker(&w, &probe.topic_arn, clock.clone());
    let budgets = w.store.load_policy().await.unwrap().budgets;
    ingest_usage(
        &w.store,
        &budgets,
        &[record("pd-1", "openai/dev/k", 850, clock.now())],
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    let options = CheckOptions {
        actor: "test".into(),
        ..CheckOptions::default()
    };
    check.run(&options).await.unwrap();
    let raised = fan_out(&w, &probe).await;
    assert_eq!(raised.len(), 1);
    // the day ends: the critical alert recovers
    clock.set(at("2026-11-21T00:05:00Z"));
    let report = check.run(&options).await.unwrap();
    assert_eq!(report.alerts.recoveries, 1);
    fan_out(&w, &probe).await;
    check.run(&options).await.unwrap();
    assert!(
        probe.drain().await.is_empty(),
        "a recovery is published once"
    );

    let pd: Vec<Value> = delivered(&w, "oncall-pager")
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(pd.len(), 2);
    assert_eq!(
        (
            pd[0]["event_action"].as_str(),
            pd[1]["event_action"].as_str()
        ),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
    assert_eq!(pd[0]["dedup_key"], raised[0].alert_id.as_str());
    assert_eq!(pd[1]["routing_key"], PAGERDUTY_KEY);
    assert!(
        w.store.open_alerts().await.unwrap().is_empty(),
        "recovered alerts are closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_emergency_reaches_level_two_and_an_acknowledged_one_does_not() {
    let settings = Settings {
        escalation: EscalationPolicy {
            levels: vec![
                EscalationLevel {
                    after_minutes: 15,
                    channels: vec!["oncall-pager".into()],
                },
                EscalationLevel {
                    after_minutes: 45,
                    channels: vec!["cto-slack".into()],
                },
            ],
        },
        ..Settings::default()
    };
    let budgets = vec![
        paging_budget("ignored", "openai/a", &["ops-slack"]),
        paging_budget("handled", "openai/b", &["ops-slack"]),
    ];
    let w = FanoutWorld::new(
        RetryPolicy::default(),
        &[],
        PolicySet {
            budgets,
            settings,
            keys: Vec::new(),
        },
    )
    .await;
    let probe = TopicProbe::new(&w.sdk).await;
    let clock = Arc::new(FixedClock::new(at("2026-11-20T09:00:00Z")));
    let check = checker(&w, &probe.topic_arn, clock.clone());
    let policy = w.store.load_policy().await.unwrap();
    let usage = [
        record("a", "openai/a/k", 1200, clock.now()),
        record("b", "openai/b/k", 1200, clock.now()),
    ];
    ingest_usage(&w.store, &policy.budgets, &usage, None, Utc::now())
        .await
        .unwrap();
    let options = CheckOptions {
        actor: "schedule".into(),
        ..CheckOptions::default()
    };
    check.run(&options).await.unwrap();
    let raised = fan_out(&w, &probe).await;
    assert_eq!(raised.len(), 4, "critical and emergency for both budgets");
    let handled = raised
        .iter()
        .find(|e| e.budget_id == "handled" && e.tier == "emergency")
        .unwrap();
    let ack = w
        .fanout
        .handle(json!({"action": "ack", "alert_id": handled.alert_id, "actor": "alice"}))
        .await
        .unwrap();
    assert_eq!(ack["by"], "alice");

    let mut escalations = Vec::new();
    for minutes in [10, 16, 30, 46, 60] {
        clock.set(at("2026-11-20T09:00:00Z") + Duration::minutes(minutes));
        check.run(&options).await.unwrap();
        for e in fan_out(&w, &probe).await {
            escalations.push((
                minutes,
                e.budget_id.clone(),
                e.tier.clone(),
                e.escalation_level,
                e.channels.clone(),
            ));
        }
    }
    let level = |l| Some(l);
    assert_eq!(
        escalations,
        vec![
            (
                16,
                "ignored".to_string(),
                "critical".to_string(),
                level(1),
                vec!["oncall-pager".to_string()]
            ),
            (
                16,
                "ignored".to_string(),
                "emergency".to_string(),
                level(1),
                vec!["oncall-pager".to_string()]
            ),
            (
                16,
                "handled".to_string(),
                "critical".to_string(),
                level(1),
                vec!["oncall-pager".to_string()]
            ),
            (
                46,
                "ignored".to_string(),
                "critical".to_string(),
                level(2),
                vec!["cto-slack".to_string()]
            ),
            (
                46,
                "ignored".to_string(),
                "emergency".to_string(),
                level(2),
                vec!["cto-slack".to_string()]
            ),
            (
                46,
                "handled".to_string(),
                "critical".to_string(),
                level(2),
                vec!["cto-slack".to_string()]
            ),
        ],
        "the acknowledged emergency never escalates; the others do, each level once"
    );
    let cto: Vec<Value> = delivered(&w, "cto-slack")
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(cto.len(), 3);
    assert!(cto.iter().all(|m| {
        m["text"]
            .as_str()
            .unwrap()
            .starts_with("⏫ ESCALATED to level 2")
    }));
    assert!(cto.iter().all(|m| {
        !m["text"]
            .as_str()
            .unwrap()
            .contains("handled daily budget at 120.0 % (tier emergency)")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_to_a_digest_channel_go_out_together_once_per_interval() {
    let mut w = FanoutWorld::new(RetryPolicy::default(), &[], PolicySet::default()).await;
    let clock = Arc::new(FixedClock::new(at("2026-11-20T18:00:00Z")));
    w.fanout.fanout.clock = clock.clone();
    let warning = fixture_event("warning");
    let mut second = warning.clone();
    second.alert_id = "0000000000000000000000000000abcd".into();
    for e in [&warning, &second, &warning] {
        let mut e = e.clone();
        e.channels = vec!["digest-slack".into(), "ops-slack".into()];
        let report = w.fanout.handle(sns_of(&e)).await.unwrap();
        assert!(report.to_string().contains("queued_for_digest"), "{report}");
    }
    assert_eq!(
        delivered(&w, "ops-slack").len(),
        2,
        "channels without a digest get each warning once"
    );
    let flush = json!({"action": "flush_digests"});
    clock.advance(Duration::minutes(30));
    assert_eq!(
        w.fanout.handle(flush.clone()).await.unwrap()["digests_sent"],
        0,
        "not due before 60 minutes"
    );
    clock.advance(Duration::minutes(31));
    assert_eq!(
        w.fanout.handle(flush.clone()).await.unwrap()["digests_sent"],
        1
    );
    assert_eq!(
        w.fanout.handle(flush).await.unwrap()["digests_sent"],
        0,
        "each warning goes out once"
    );
    let digests = delivered(&w, "digest-slack");
    assert_eq!(digests.len(), 1);
    let text: Value = serde_json::from_str(&digests[0].body).unwrap();
    assert_eq!(
        text["text"],
        "🟡 spendguard digest for digest-slack: 2 warnings"
    );
}

/// Crash consistency of fan-out: stopped right after each one of its writes (a channel's
/// delivery claim, a delivery recorded), then retried as Lambda retries a failed asynchronous
/// invocation (about a minute later, then two more): every channel receives the alert once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fanout_stopped_after_any_write_then_retried_delivers_to_each_channel_once() {
    use spendguard_tests::faults::{FaultProxy, Rule};
    let channels = ["ops-slack", "oncall-pager", "audit-hook"];
    let mut event = fixture_event("critical");
    event.channels = channels.iter().map(|s| s.to_string()).collect();
    let sns = sns_of(&event);
    let accepted =
        |w: &FanoutWorld, name: &str| delivered(w, name).iter().filter(|r| r.accepted()).count();

    // attempts never time out here: a late answer would be a second delivery by design, and
    // this test counts deliveries; a claim held by a stopped invocation is waited for 5 s
    let patient = RetryPolicy {
        attempt_timeout: std::time::Duration::from_secs(5),
        deadline: std::time::Duration::from_secs(5),
        ..quick_retries()
    };
    // uninterrupted, through the proxy only to count the writes
    let w = FanoutWorld::new(patient, &[], PolicySet::default()).await;
    let counting = FaultProxy::start(vec![]).await;
    w.fanout_through(&counting.sdk().await, Utc::now())
        .handle(sns.clone())
        .await
        .unwrap();
    let writes = counting.writes_seen();
    for name in channels {
        assert_eq!(accepted(&w, name), 1, "{name}");
    }
    assert_eq!(
        writes,
        2 * channels.len(),
        "a claim and a record per channel"
    );

    for n in 1..=writes {
        let w = FanoutWorld::new(patient, &[], PolicySet::default()).await;
        let proxy = FaultProxy::start(vec![Rule::crash_after_write(n)]).await;
        let crashed = w
            .fanout_through(&proxy.sdk().await, Utc::now())
            .handle(sns.clone())
            .await;
        assert_eq!(proxy.total_injected(), 1, "stopped after write {n}");
        assert!(crashed.is_err(), "after write {n}: the invocation fails");
        let mut retries = 0;
        for minutes in [1, 3] {
            retries += 1;
            let retry = w.fanout_through(&w.sdk, Utc::now() + Duration::minutes(minutes));
            if retry.handle(sns.clone()).await.is_ok() {
                break;
            }
            assert!(minutes < 3, "after write {n}: the last retry succeeds");
        }
        for name in channels {
            assert_eq!(
                accepted(&w, name),
                1,
                "{name} after write {n} ({retries} retries)"
            );
        }
    }
    eprintln!(
        "alert-fanout stopped after each of its {writes} writes, then retried: each channel once"
    );
}

// ------------------------------------------------------------ the deployment's own alarms

/// The CloudWatch notification recorded in `events/alert-fanout/{name}.json`.
fn alarm_message(name: &str) -> Value {
    let path = format!(
        "{}/../events/alert-fanout/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_str(v["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap()
}

/// Publishes `message` (as CloudWatch does: unsigned, no attributes) to the topic of `probe`
/// through moto, and returns the Lambda event SNS delivers.
async fn published(w: &FanoutWorld, probe: &TopicProbe, message: &str) -> Value {
    aws_sdk_sns::Client::new(&w.sdk)
        .publish()
        .topic_arn(&probe.topic_arn)
        .subject("ALARM: \"spendguard-alert-fanout-errors\" in EU (Ireland)")
        .message(message)
        .send()
        .await
        .unwrap();
    let mut envelopes = probe.drain().await;
    assert_eq!(envelopes.len(), 1, "{envelopes:#?}");
    lambda_sns_event(&envelopes.remove(0))
}

/// A fan-out whose operator route takes `probe`'s topic to `channels`, and the PagerDuty
/// stand-in behind `ops-pagerduty`.
async fn operator_world(
    channels: &[&str],
) -> (
    FanoutWorld,
    TopicProbe,
    alert_fanout::handler::Handler,
    PagerDuty,
) {
    let pd = PagerDuty::start().await;
    let w = FanoutWorld::new(
        quick_retries(),
        &[("ops-pagerduty", ChannelKind::Pagerduty, pd.secret())],
        PolicySet::default(),
    )
    .await;
    let probe = TopicProbe::new(&w.sdk).await;
    let fanout = alert_fanout::app::fanout(
        &alert_fanout::config::Config {
            operator: Some(OperatorRoute {
                topic_arn: probe.topic_arn.clone(),
                channels: channels.iter().map(|c| c.to_string()).collect(),
            }),
            ..w.config.clone()
        },
        &w.sdk,
    );
    (w, probe, fanout, pd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_reaches_the_operator_channels_once_however_often_sns_delivers_it() {
    let (w, probe, fanout, pd) =
        operator_world(&["ops-slack", "ops-pagerduty", "audit-hook"]).await;
    let mut firing = alarm_message("alarm-firing");
    // whatever a notification carries, an alarm orders nothing
    firing["actions"] = json!(["shutdown", "disable_keys"]);
    let event = published(&w, &probe, &firing.to_string()).await;
    // SNS delivers at least once: the same notification four times
    for _ in 0..4 {
        fanout.handle(event.clone()).await.expect("delivered");
    }
    assert_eq!(delivered(&w, "ops-slack").len(), 1);
    assert_eq!(pd.accepted().len(), 1);
    assert_eq!(delivered(&w, "audit-hook").len(), 1);
    for other in ["oncall-pager", "team-teams", "dev-discord", "cto-slack"] {
        assert!(delivered(&w, other).is_empty(), "{other}");
    }
    let slack: Value = serde_json::from_str(&delivered(&w, "ops-slack")[0].body).unwrap();
    assert_eq!(slack["text"], "🔔 ALARM: spendguard-alert-fanout-errors");
    let hook: Value = serde_json::from_str(&delivered(&w, "audit-hook")[0].body).unwrap();
    assert_eq!(
        (&hook["kind"], &hook["actions"]),
        (&json!("alarm"), &json!([]))
    );
    let trigger = &pd.accepted()[0];
    assert_eq!(trigger["event_action"], "trigger");
    let incident = trigger["dedup_key"].as_str().unwrap().to_string();
    assert_eq!(pd.incidents()[&incident], "triggered");
    // no key or switch was touched: nothing but deliveries happened
    assert!(
        w.store
            .kill_switches(&[Scope::root()])
            .await
            .unwrap()
            .is_empty()
    );

    // back to OK: the same incident is resolved, chat hears it once too
    let ok = published(&w, &probe, &alarm_message("alarm-ok").to_string()).await;
    for _ in 0..2 {
        fanout.handle(ok.clone()).await.expect("delivered");
    }
    assert_eq!(pd.accepted().len(), 2);
    assert_eq!(pd.accepted()[1]["event_action"], "resolve");
    assert_eq!(pd.incidents()[&incident], "resolved");
    let slack: Vec<Value> = delivered(&w, "ops-slack")
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(slack.len(), 2);
    assert_eq!(
        slack[1]["text"],
        "✅ RESOLVED: spendguard-alert-fanout-errors is OK again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_without_an_operator_route_or_to_an_unknown_channel_fails_the_invocation() {
    // no route: the notification is an error that says what to configure
    let w = FanoutWorld::new(quick_retries(), &[], PolicySet::default()).await;
    let probe = TopicProbe::new(&w.sdk).await;
    let event = published(&w, &probe, &alarm_message("alarm-firing").to_string()).await;
    let error = w.fanout.handle(event).await.unwrap_err();
    assert!(matches!(error, FanoutError::InvalidEvent(_)), "{error}");
    assert!(error.to_string().contains("no operator route"), "{error}");
    assert!(delivered(&w, "ops-slack").is_empty());

    // a route to a channel the budgets file lacks: the others are served, the invocation fails
    // (an alarm other than fan-out's own: those are not retried, see below)
    let (w, probe, fanout, _pd) = operator_world(&["ops-slack", "ops-typo"]).await;
    let mut alarm = alarm_message("alarm-firing");
    alarm["AlarmName"] = json!("spendguard-budget-check-silent");
    let event = published(&w, &probe, &alarm.to_string()).await;
    let error = fanout.handle(event).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("ops-typo: channel `ops-typo` is not defined in the settings"),
        "{error}"
    );
    assert_eq!(delivered(&w, "ops-slack").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_topic_carries_no_alert_signed_or_not() {
    use spendguard_app::ports::bus::AlertBus;
    use spendguard_app::signing::AlertSigning;
    let (w, probe, _, pd) = operator_world(&["ops-slack", "ops-pagerduty"]).await;
    let signing_arn = aws::secret(
        &w.sdk,
        "alert-signing",
        "alert-signing-0123456789abcdef0123456789abcdef0123456789abcdef",
    )
    .await;
    let fanout = alert_fanout::app::fanout(
        &alert_fanout::config::Config {
            alert_signing_key_arn: Some(signing_arn.clone()),
            operator: Some(OperatorRoute {
                topic_arn: probe.topic_arn.clone(),
                channels: vec!["ops-slack".into(), "ops-pagerduty".into()],
            }),
            ..w.config.clone()
        },
        &w.sdk,
    );
    // a Budgets-style emergency that orders a stop, published to the operator topic: unsigned
    // (someone trying to skip the signature), then even signed with the deployment's key
    let mut alert = fixture_event("emergency");
    alert.actions = vec![Action::DisableKeys, Action::Shutdown];
    alert.channels = vec!["ops-slack".into(), "oncall-pager".into()];
    let unsigned = published(&w, &probe, &serde_json::to_string(&alert).unwrap()).await;
    let vault = spendguard_aws::backends::deployed(&w.sdk, &w.table).vault;
    SnsBus::new(aws_sdk_sns::Client::new(&w.sdk), &probe.topic_arn)
        .signed(AlertSigning::configured(&vault, Some(&signing_arn)))
        .publish(&alert)
        .await
        .unwrap();
    let signed = lambda_sns_event(&probe.drain().await.remove(0));
    assert!(
        signed["Records"][0]["Sns"]["MessageAttributes"]["spendguard_signature"].is_object(),
        "{signed:#}"
    );
    for event in [unsigned, signed] {
        let error = fanout.handle(event).await.unwrap_err();
        assert!(matches!(error, FanoutError::InvalidEvent(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("not a CloudWatch alarm notification (that topic carries nothing else): `AlarmName`: missing"),
            "{error}"
        );
    }
    for name in ["ops-slack", "oncall-pager"] {
        assert!(delivered(&w, name).is_empty(), "{name}");
    }
    assert!(pd.accepted().is_empty());
    // and an alarm from any other topic is not taken on the operator topic's word: unsigned,
    // it is refused like any forgery
    let other = TopicProbe::new(&w.sdk).await;
    let event = published(&w, &other, &alarm_message("alarm-firing").to_string()).await;
    let error = fanout.handle(event).await.unwrap_err();
    assert!(matches!(error, FanoutError::Forged(_)), "{error}");
    assert!(delivered(&w, "ops-slack").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_outs_own_alarm_that_cannot_be_delivered_does_not_fail_again() {
    let (w, probe, fanout, _pd) = operator_world(&["ops-slack"]).await;
    w.receivers["ops-slack"].set(mode::FAIL_500);
    // fan-out's errors alarm: failing again would keep that alarm changing state
    let own = published(&w, &probe, &alarm_message("alarm-firing").to_string()).await;
    let out = fanout.handle(own).await.expect("logged, not retried");
    assert_eq!(
        out["delivered"][0]["channels"][0][1]["outcome"], "failed",
        "{out:#}"
    );
    // any other alarm that cannot be delivered fails the invocation (retried, then queued)
    let mut other = alarm_message("alarm-firing");
    other["AlarmName"] = json!("spendguard-key-guard-errors");
    let event = published(&w, &probe, &other.to_string()).await;
    let error = fanout.handle(event).await.unwrap_err();
    assert!(
        matches!(error, FanoutError::DeliveryFailed { .. }),
        "{error}"
    );
}
