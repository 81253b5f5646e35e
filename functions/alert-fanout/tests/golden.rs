//! What people and systems receive, pinned in golden files (reviewed by eye; regenerate with
//! `SPENDGUARD_BLESS=1 cargo test -p alert-fanout --test golden` and review the diff), and the
//! `events/alert-fanout/` fixtures built from the example budgets.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_domain::aggregate::{DailySummary, anomaly_event, report_event};
use spendguard_domain::alarm::AlarmNotification;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::budgets_file::load_budgets_file;
use spendguard_domain::daily::{DailyReport, Spike};
use spendguard_domain::evaluate::{WindowSpend, evaluate_window};
use spendguard_domain::forecast::RecentSpend;
use spendguard_domain::format;
use spendguard_domain::message::Message;
use spendguard_domain::money::Currency;
use spendguard_domain::period::{WindowKind, Zone};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Compares with the golden file, or writes it when blessing.
fn golden(relative: &str, actual: &str) {
    let path = repo().join(relative);
    if std::env::var_os("SPENDGUARD_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("{relative} is missing: run with SPENDGUARD_BLESS=1 and review it")
    });
    assert_eq!(
        actual, expected,
        "{relative} changed: if intended, bless and review the diff"
    );
}

fn policy() -> PolicySet {
    load_budgets_file(&repo().join("examples/budgets.toml")).unwrap()
}

fn crossing(
    policy: &PolicySet,
    budget: &str,
    kind: WindowKind,
    spend: WindowSpend,
    tier: &str,
    now: DateTime<Utc>,
) -> AlertEvent {
    let b = policy.budgets.iter().find(|b| b.id == budget).unwrap();
    let e = evaluate_window(b, kind, &spend, now, &policy.settings.forecast).unwrap();
    let c = e.crossings.iter().find(|c| c.tier.name == tier).unwrap();
    let mut event = AlertEvent::for_crossing(b, &e, c, now).expect("a calendar crossing");
    event.runbook_url = Some("https://wiki.example.com/spendguard/runbook".into());
    event
}

/// The example alerts: the same numbers as the README's quick start.
pub fn examples() -> Vec<(&'static str, AlertEvent)> {
    let p = policy();
    let now = at("2026-11-20T18:00:00Z");
    let recent = Some(RecentSpend {
        amount: Decimal::from(140),
        span: Duration::hours(37),
    });
    let prod = WindowSpend {
        recent,
        ..WindowSpend::actual(Decimal::from(1580))
    };
    let critical = crossing(
        &p,
        "openai-prod",
        WindowKind::Monthly,
        prod,
        "critical",
        now,
    );
    let emergency = crossing(
        &p,
        "openai-dev-key",
        WindowKind::Daily,
        WindowSpend::actual(Decimal::new(1120, 2)),
        "emergency",
        now,
    );
    let warning = crossing(
        &p,
        "search-feature",
        WindowKind::Weekly,
        WindowSpend::actual(Decimal::new(3306, 2)),
        "warning",
        now,
    );
    let recovery = critical.recovery("ended with its period", at("2026-12-01T05:00:00Z"));
    let escalation =
        emergency.escalation(1, vec!["oncall-pager".into()], now + Duration::minutes(16));
    let (anomaly, report) = nightly_examples(&p);
    vec![
        ("warning", warning),
        ("critical", critical),
        ("emergency", emergency),
        ("recovery", recovery),
        ("escalation", escalation),
        ("anomaly", anomaly),
        ("report", report),
        ("unevaluable", unevaluable_example(&p, now)),
        ("drill", drill_example(now)),
        ("alarm-firing", alarm_event(&alarm_notification("ALARM"))),
        ("alarm-ok", alarm_event(&alarm_notification("OK"))),
    ]
}

/// The operator topic of the example deployment (`spendguard`, eu-west-1).
const OPERATOR_TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:spendguard-operator";

/// What CloudWatch publishes to the operator topic when fan-out's errors alarm goes into
/// `state` (ALARM, then OK ten minutes later), in the shape AWS documents.
fn alarm_notification(state: &str) -> Value {
    let (old, at, reason) = match state {
        "ALARM" => (
            "OK",
            "2026-11-20T18:05:12.345+0000",
            "Threshold Crossed: 1 out of the last 1 datapoints [3.0 (20/11/26 18:00:00)] was greater than the threshold (0.0) (minimum 1 datapoint for OK -> ALARM transition).",
        ),
        _ => (
            "ALARM",
            "2026-11-20T18:15:12.345+0000",
            "Threshold Crossed: no datapoints were received for 1 period and 1 missing datapoint was treated as [NonBreaching].",
        ),
    };
    json!({
        "AlarmName": "spendguard-alert-fanout-errors",
        "AlarmDescription": "alert-fanout failed: alerts may not be reaching people.",
        "AWSAccountId": "123456789012",
        "AlarmConfigurationUpdatedTimestamp": "2026-11-01T09:00:00.000+0000",
        "NewStateValue": state,
        "NewStateReason": reason,
        "StateChangeTime": at,
        "Region": "EU (Ireland)",
        "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:spendguard-alert-fanout-errors",
        "OldStateValue": old,
        "OKActions": [OPERATOR_TOPIC],
        "AlarmActions": [OPERATOR_TOPIC],
        "InsufficientDataActions": [],
        "Trigger": {
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "StatisticType": "Statistic",
            "Statistic": "SUM",
            "Unit": null,
            "Dimensions": [{"value": "spendguard-alert-fanout", "name": "FunctionName"}],
            "Period": 300,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0.0,
            "TreatMissingData": "notBreaching",
            "EvaluateLowSampleCountPercentile": ""
        }
    })
}

fn alarm_event(notification: &Value) -> AlertEvent {
    AlarmNotification::parse(&notification.to_string())
        .unwrap()
        .event(vec!["ops-slack".into(), "ops-pagerduty".into()])
}

/// The SNS -> Lambda record of an alarm notification on the operator topic: unsigned, no
/// message attributes.
fn operator_sns_event(notification: &Value) -> Value {
    let state = notification["NewStateValue"].as_str().unwrap();
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": format!("{OPERATOR_TOPIC}:0c3d5b2a-7f41-4e1b-9a0d-6c2e8f1b3a77"),
        "Sns": {
            "Type": "Notification",
            "MessageId": if state == "OK" { "2a7c9e15-0b3d-5f48-9c61-7e2d4a8b0f93" } else { "6e1f0c4a-8d2b-5b7d-a1c2-3d4e5f607181" },
            "TopicArn": OPERATOR_TOPIC,
            "Subject": format!("{state}: \"spendguard-alert-fanout-errors\" in EU (Ireland)"),
            "Message": notification.to_string(),
            "Timestamp": notification["StateChangeTime"].as_str().unwrap().replace("+0000", "Z"),
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
            "UnsubscribeUrl": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {}
        }
    }]})
}

/// A monthly window of `openai-prod` that cannot be evaluated.
fn unevaluable_example(p: &PolicySet, now: DateTime<Utc>) -> AlertEvent {
    let b = p.budgets.iter().find(|b| b.id == "openai-prod").unwrap();
    let w = b.window(WindowKind::Monthly).unwrap();
    let period = spendguard_domain::period::Period::containing(WindowKind::Monthly, b.zone, now);
    AlertEvent::unevaluable(
        b,
        w,
        &period,
        "OpenAI's costs answered a currency without a rate: EUR",
        now,
    )
}

/// The stop-path drill finding that Anthropic refuses the admin key spendguard holds.
fn drill_example(now: DateTime<Utc>) -> AlertEvent {
    spendguard_domain::drill::DrillProblem {
        subject: "key anthropic-research-r1".into(),
        scope: Scope::parse("anthropic/research/key-r1").unwrap(),
        problem: "its provider refused a read: anthropic: refused: HTTP 401: invalid x-api-key"
            .into(),
        fix: "check the admin key (revoked or expired?) and that the key still exists".into(),
    }
    .alert(vec!["ops-slack".into(), "oncall-pager".into()], now)
}

/// The nightly run's two events for 19 Nov: a key that spent 8x its usual day, and the report.
fn nightly_examples(p: &PolicySet) -> (AlertEvent, AlertEvent) {
    let date: NaiveDate = "2026-11-19".parse().unwrap();
    let now = at("2026-11-20T02:00:00Z");
    let tally = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let spiking = DailySummary {
        scope: Scope::parse("openai/dev/key-dev1").unwrap(),
        zone: Zone::UTC,
        date,
        source: "usage".into(),
        day: tally(&[("cost.USD", "96.40"), ("requests", "41210")]),
        month_to_date: [(Currency::USD, "214.90".to_string())].into(),
        forecast: None,
        anomalies: vec![
            Spike {
                metric: "cost".into(),
                value: Decimal::new(9640, 2),
                expected: Decimal::new(1205, 2),
                factor: Decimal::from(5),
            },
            Spike {
                metric: "requests".into(),
                value: Decimal::from(41210),
                expected: Decimal::from(5150),
                factor: Decimal::from(3),
            },
        ],
    };
    let report = DailyReport {
        date,
        zone: Zone::UTC,
        total: [(Currency::USD, "171.25".to_string())].into(),
        top_scopes: vec![
            ("openai/dev".into(), "96.4 USD".into()),
            ("openai/prod".into(), "52.1 USD".into()),
            ("anthropic/search".into(), "22.75 USD".into()),
        ],
        top_models: vec![
            ("_model/openai:gpt-4o".into(), "131.9 USD".into()),
            (
                "_model/anthropic:claude-sonnet-4".into(),
                "22.75 USD".into(),
            ),
        ],
        movers: vec![("openai/dev/key-dev1".into(), "96.4".into(), "12.05".into())],
        at_risk: vec![("openai-prod".into(), "104".into())],
        anomalies: 1,
    };
    (
        anomaly_event(p, &spiking, now),
        report_event(p, &report, now),
    )
}

/// An SNS -> Lambda event carrying `event`, with the attributes budget-check sets.
fn sns_event(event: &AlertEvent) -> Value {
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": "arn:aws:sns:eu-west-1:123456789012:spendguard-alerts:5b1a6f0e-3e1c-4d6f-9a55-2f7a1c9b8e10",
        "Sns": {
            "Type": "Notification",
            "MessageId": format!("{}-sns", &event.alert_id[..8]),
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:spendguard-alerts",
            "Subject": event.subject(),
            "Message": serde_json::to_string(event).unwrap(),
            "Timestamp": event.raised_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
            "UnsubscribeUrl": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {
                "severity": {"Type": "String", "Value": event.severity.as_str()},
                "actions": {"Type": "String.Array", "Value": serde_json::to_string(&event.action_names()).unwrap()},
                "kind": {"Type": "String", "Value": serde_json::to_value(event.kind).unwrap()},
                "budget_id": {"Type": "String", "Value": event.budget_id}
            }
        }
    }]})
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

#[test]
fn fixtures_carry_the_example_alerts() {
    for (name, event) in examples() {
        let record = match name {
            // CloudWatch's notifications, as they reach fan-out from the operator topic
            "alarm-firing" => operator_sns_event(&alarm_notification("ALARM")),
            "alarm-ok" => operator_sns_event(&alarm_notification("OK")),
            _ => sns_event(&event),
        };
        golden(
            &format!("events/alert-fanout/{name}.json"),
            &pretty(&record),
        );
    }
    golden(
        "events/alert-fanout/ack.json",
        &pretty(
            &json!({"action": "ack", "alert_id": "REPLACE-WITH-THE-ALERT-ID", "actor": "alice"}),
        ),
    );
    golden(
        "events/alert-fanout/flush-digests.json",
        &pretty(&json!({"action": "flush_digests"})),
    );
}

#[test]
fn every_channel_payload_reads_well() {
    for (name, event) in examples() {
        let kill_switch = if name == "emergency" || name == "escalation" {
            "engaged on openai/dev/key-dev1"
        } else {
            "open"
        };
        let m = Message::Alert {
            event: Box::new(event.clone()),
            kill_switch: kill_switch.into(),
        };
        let dir = "functions/alert-fanout/tests/golden";
        golden(
            &format!("{dir}/{name}.slack.json"),
            &pretty(&format::slack(&m)),
        );
        // a report is not an incident: PagerDuty never receives one
        if name != "report" {
            golden(
                &format!("{dir}/{name}.pagerduty.json"),
                &pretty(&format::pagerduty(
                    &event,
                    "R0UT1NGK3Y0000000000000000000000",
                )),
            );
        }
        golden(
            &format!("{dir}/{name}.teams.json"),
            &pretty(&format::teams(&m)),
        );
        golden(
            &format!("{dir}/{name}.discord.json"),
            &pretty(&format::discord(&m)),
        );
        golden(
            &format!("{dir}/{name}.webhook.json"),
            &pretty(&format::webhook(&m)),
        );
        let mail = format::email(&m);
        golden(
            &format!("{dir}/{name}.email.txt"),
            &format!("Subject: {}\n\n{}", mail.subject, mail.text),
        );
        golden(&format!("{dir}/{name}.email.html"), &(mail.html + "\n"));
    }
}

#[test]
fn a_digest_lists_its_warnings() {
    let warning = examples().remove(0).1;
    let mut second = warning.clone();
    second.alert_id = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5".into();
    second.summary = second.summary.replace("16–22 Nov 2026", "23–29 Nov 2026");
    let m = Message::Digest {
        channel: "ops-slack".into(),
        events: vec![warning, second],
    };
    let dir = "functions/alert-fanout/tests/golden";
    golden(
        &format!("{dir}/digest.slack.json"),
        &pretty(&format::slack(&m)),
    );
    let mail = format::email(&m);
    golden(
        &format!("{dir}/digest.email.txt"),
        &format!("Subject: {}\n\n{}", mail.subject, mail.text),
    );
}

#[test]
fn pagerduty_resolves_what_it_triggered() {
    let all = examples();
    let critical = &all[1].1;
    let recovery = &all[3].1;
    let trigger = format::pagerduty(critical, "k");
    let resolve = format::pagerduty(recovery, "k");
    assert_eq!(
        (
            trigger["event_action"].as_str(),
            resolve["event_action"].as_str()
        ),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(trigger["dedup_key"], resolve["dedup_key"]);
    assert_eq!(trigger["dedup_key"], critical.alert_id.as_str());
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(
        format::pagerduty(&all[2].1, "k")["payload"]["severity"],
        "critical"
    );
}

#[test]
fn pagerduty_resolves_an_alarm_when_it_is_ok_again() {
    let all = examples();
    let event = |name: &str| all.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let (firing, ok) = (event("alarm-firing"), event("alarm-ok"));
    let trigger = format::pagerduty(&firing, "k");
    let resolve = format::pagerduty(&ok, "k");
    assert_eq!(
        (&trigger["event_action"], &resolve["event_action"]),
        (&json!("trigger"), &json!("resolve"))
    );
    // one incident per alarm: both state changes carry the same dedup_key
    assert_eq!(trigger["dedup_key"], resolve["dedup_key"]);
    assert_ne!(firing.alert_id, ok.alert_id);
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(
        trigger["payload"]["group"],
        "spendguard-alert-fanout-errors"
    );
    assert_eq!(
        trigger["links"][0]["href"],
        "https://github.com/spendguard/spendguard/blob/main/docs/deploy.md#alarm-alert-fanout-errors"
    );
}

#[test]
fn every_fixture_is_an_event_fanout_understands() {
    let dir = repo().join("events/alert-fanout");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        match v.get("Records") {
            Some(records) if records[0]["Sns"]["TopicArn"] == OPERATOR_TOPIC => {
                let message = records[0]["Sns"]["Message"].as_str().unwrap();
                AlarmNotification::parse(message)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Some(records) => {
                let message = records[0]["Sns"]["Message"].as_str().unwrap();
                serde_json::from_str::<AlertEvent>(message)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(records[0]["Sns"]["MessageAttributes"]["severity"]["Value"].is_string());
            }
            None => assert!(
                matches!(v["action"].as_str(), Some("ack" | "flush_digests")),
                "{}",
                path.display()
            ),
        }
        count += 1;
    }
    assert_eq!(count, 13);
}
