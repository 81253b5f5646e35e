//! `spendguard invoke` runs every fixture in `events/` with the function's own handler: on the
//! embedded store, and against moto (`--aws`). The channels of `examples/budgets.toml` are
//! pointed at a local stand-in; each fixture's outcome is asserted, and a fixture added to
//! `events/` without an expectation here fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_tests::aws;
use spendguard_tests::standin::{Reply, StandIn};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const CHANNEL_SECRETS: [&str; 4] = ["slack-ops", "finance-email", "eng-managers", "pagerduty"];
const AWS_BUDGETS_TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:spendguard-aws-budgets";
const USAGE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the channels' secrets hold: the stand-in's URLs (e-mail channels become chat
/// channels here: SES is covered by the fan-out tests).
fn channel_secret(name: &str, standin: &str) -> String {
    match name {
        "pagerduty" => json!({"routing_key": "0123456789abcdef0123456789abcdef", "url": format!("{standin}/v2/enqueue")}).to_string(),
        other => format!("{standin}/hooks/{other}"),
    }
}

/// `examples/budgets.toml` with each channel secret replaced by `reference(name)`.
fn budgets(reference: impl Fn(&str) -> String) -> String {
    let mut text = std::fs::read_to_string(repo().join("examples/budgets.toml")).unwrap();
    assert!(text.contains("kind = \"email\""));
    text = text.replace("kind = \"email\"", "kind = \"slack\"");
    for name in CHANNEL_SECRETS {
        let arn =
            format!("\"arn:aws:secretsmanager:eu-west-1:123456789012:secret:spendguard/{name}\"");
        assert!(text.contains(&arn), "{name}");
        text = text.replace(&arn, &format!("\"{}\"", reference(name)));
    }
    text
}

async fn standin() -> StandIn {
    StandIn::start(|r, _| {
        if r.path == "/v2/enqueue" {
            Reply::json(202, json!({"status": "success", "dedup_key": "x"}))
        } else {
            Reply {
                status: 200,
                body: "ok".into(),
                ..Reply::default()
            }
        }
    })
    .await
}

fn invoke(function: &str, event: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(["invoke", function, "--event"])
        .arg(event)
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("run spendguard invoke")
}

/// The fixtures in the order they run (restore after disable), each with its expected exit code and a part of its output.
fn expectations(aws: bool) -> Vec<(&'static str, i32, &'static str)> {
    let incomplete_check = if aws {
        (0, "\"run_id\"")
    } else {
        (
            1,
            "source `aws_budgets` is used by budgets but not configured",
        )
    };
    // recorded SNS trigger events: taken as Lambda hands them over on the embedded store; a
    // deployment's store (--aws) verifies their signatures, and theirs are placeholders
    let (sns_daily, sns_monthly) = if aws {
        ((1, "SnsNotVerified"), (1, "SnsNotVerified"))
    } else {
        ((0, "\"observations\": 0"), (0, "\"observations\": 1"))
    };
    let keys_incomplete = if aws {
        (1, "KeysIncomplete")
    } else {
        (1, "withholding a secret needs Secrets Manager")
    };
    let rotation = if aws {
        (1, "Rotation")
    } else {
        (2, "needs Secrets Manager")
    };
    vec![
        (
            "budget-check/dry-run.json",
            incomplete_check.0,
            incomplete_check.1,
        ),
        (
            "budget-check/scheduled.json",
            incomplete_check.0,
            incomplete_check.1,
        ),
        (
            "budget-check/scheduler.json",
            incomplete_check.0,
            incomplete_check.1,
        ),
        (
            "budget-check/one-budget.json",
            0,
            "\"budget_id\": \"openai-prod\"",
        ),
        ("budget-webhook/usage.json", 0, r#"\"accepted\":2"#),
        ("budget-webhook/status.json", 0, "\"statusCode\": 401"),
        (
            "budget-webhook/gcp-pubsub-threshold.json",
            0,
            "the GCP push route is not enabled",
        ),
        (
            "budget-webhook/gcp-pubsub-forecast-threshold.json",
            0,
            "the GCP push route is not enabled",
        ),
        (
            "budget-webhook/gcp-pubsub-observation.json",
            0,
            "the GCP push route is not enabled",
        ),
        (
            "budget-webhook/gcp-pubsub-threshold-200-percent.json",
            0,
            "the GCP push route is not enabled",
        ),
        (
            "budget-webhook/sns-aws-budgets-daily-actual.json",
            sns_daily.0,
            sns_daily.1,
        ),
        (
            "budget-webhook/sns-aws-budgets-monthly-actual.json",
            sns_monthly.0,
            sns_monthly.1,
        ),
        (
            "budget-webhook/sns-aws-budgets-forecasted.json",
            sns_monthly.0,
            sns_monthly.1,
        ),
        (
            "budget-webhook/sns-http-notification.json",
            0,
            "\"statusCode\": 403",
        ),
        ("alert-fanout/warning.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/critical.json", 0, "\"outcome\": \"sent\""),
        // the fixture names no real alert: `spendguard ack` is tested in tests/operate.rs
        ("alert-fanout/ack.json", 1, "UnknownAlert"),
        ("alert-fanout/emergency.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/escalation.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/recovery.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/anomaly.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/report.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/unevaluable.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/drill.json", 0, "\"outcome\": \"sent\""),
        // the deployment's alarms, from the operator topic to its channels (OPERATOR_ROUTE)
        ("alert-fanout/alarm-firing.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/alarm-ok.json", 0, "\"outcome\": \"sent\""),
        ("alert-fanout/flush-digests.json", 0, "\"digests_sent\""),
        ("daily-aggregate/date.json", 0, "\"days\""),
        ("daily-aggregate/range.json", 0, "\"days\""),
        ("daily-aggregate/scheduled.json", 0, "\"days\""),
        (
            "key-guard/critical-alert-reduce-limits.json",
            0,
            "\"limit_factor\": \"0.5\"",
        ),
        (
            "key-guard/disable.json",
            keys_incomplete.0,
            keys_incomplete.1,
        ),
        (
            "key-guard/emergency-alert.json",
            keys_incomplete.0,
            keys_incomplete.1,
        ),
        ("key-guard/shutdown-dry-run.json", 0, "\"dry_run\": true"),
        // nothing opted in under aws/batch here: the switch is engaged, nothing else to stop
        ("key-guard/shutdown.json", 0, "\"switch\": \"engaged\""),
        ("key-guard/restore.json", 0, "restoring"),
        ("key-guard/status.json", 0, "\"switch\""),
        ("key-guard/drill.json", 0, "\"checked\""),
        (
            "key-guard/rotation-createSecret.json",
            rotation.0,
            rotation.1,
        ),
        ("key-guard/rotation-setSecret.json", rotation.0, rotation.1),
        ("key-guard/rotation-testSecret.json", rotation.0, rotation.1),
        (
            "key-guard/rotation-finishSecret.json",
            rotation.0,
            rotation.1,
        ),
    ]
}

/// Fan-out's route for the alarm fixtures: their topic, to two channels of the example budgets.
fn operator_route() -> [(String, String); 2] {
    [
        (
            "SPENDGUARD_OPERATOR_TOPIC_ARN".to_string(),
            "arn:aws:sns:eu-west-1:123456789012:spendguard-operator".to_string(),
        ),
        (
            "SPENDGUARD_OPERATOR_CHANNELS".to_string(),
            "ops-slack,oncall-pager".to_string(),
        ),
    ]
}

/// Every fixture in `events/` has an expectation, and no expectation names a missing file.
fn check_coverage(expected: &[(&str, i32, &str)]) {
    let mut on_disk = Vec::new();
    for dir in std::fs::read_dir(repo().join("events")).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            on_disk.push(format!(
                "{}/{}",
                dir.file_name().unwrap().to_string_lossy(),
                file.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = expected.iter().map(|(f, _, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every fixture needs an expectation here");
}

/// A fixture as this run sends it: the usage request signed now with fresh record times, the
/// other fixtures as they are.
fn prepared(fixture: &str, dir: &Path, signer: Option<&WebhookSecret>) -> PathBuf {
    let path = repo().join("events").join(fixture);
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    match fixture {
        "budget-webhook/usage.json" => {
            let now = chrono::Utc::now();
            let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
            for r in body["records"].as_array_mut().unwrap() {
                r["timestamp"] = json!(
                    (now - chrono::Duration::seconds(5))
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
            let body = body.to_string();
            event["body"] = json!(body);
            if let Some(signer) = signer {
                let id = event["headers"]["webhook-id"].as_str().unwrap().to_string();
                event["headers"]["webhook-timestamp"] = json!(now.timestamp().to_string());
                event["headers"]["webhook-signature"] =
                    json!(signer.sign(&id, now.timestamp(), body.as_bytes()));
            }
        }
        _ => return path,
    }
    let out = dir.join(fixture.replace('/', "-"));
    std::fs::write(&out, event.to_string()).unwrap();
    out
}

fn run_all(
    args: &[&str],
    env: &BTreeMap<String, String>,
    aws: bool,
    dir: &Path,
    signer: Option<&WebhookSecret>,
) {
    let expected = expectations(aws);
    check_coverage(&expected);
    let mut failures = Vec::new();
    for (fixture, code, needle) in expected {
        let function = fixture.split('/').next().unwrap();
        let event = prepared(fixture, dir, signer);
        let mut extra: Vec<&str> = args.to_vec();
        if fixture == "budget-webhook/usage.json" && !aws {
            extra.push("--sign");
        }
        let out = invoke(function, &event, &extra, env);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if out.status.code() != Some(code) || !all.contains(needle) {
            failures.push(format!(
                "{fixture}: exit {:?} (expected {code}), expected `{needle}` in:\n{all}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_runs_on_the_embedded_store() {
    let standin = standin().await;
    let dir = tempfile::tempdir().unwrap();
    for name in CHANNEL_SECRETS {
        std::fs::write(dir.path().join(name), channel_secret(name, &standin.url)).unwrap();
    }
    let file = dir.path().join("budgets.toml");
    std::fs::write(
        &file,
        budgets(|name| format!("file:{}", dir.path().join(name).display())),
    )
    .unwrap();
    let store = dir.path().join("state.db");
    let mut env = BTreeMap::from([(
        "SPENDGUARD_SNS_TOPIC_ARNS".to_string(),
        AWS_BUDGETS_TOPIC.to_string(),
    )]);
    env.extend(operator_route());
    let args = [
        "--store",
        store.to_str().unwrap(),
        "--budgets",
        file.to_str().unwrap(),
    ];
    run_all(&args, &env, false, dir.path(), None);
    // the alerts went out through the stand-in, PagerDuty included
    let received = standin.received();
    assert!(received.iter().any(|r| r.path == "/v2/enqueue"));
    assert!(received.iter().any(|r| r.path == "/hooks/slack-ops"));
    assert!(received.iter().all(|r| r.accepted()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_runs_against_moto() {
    let sdk = aws::sdk().await;
    let (_, table) = aws::new_store(&sdk).await;
    let standin = standin().await;
    let mut references = BTreeMap::new();
    for name in CHANNEL_SECRETS {
        references.insert(
            name,
            aws::secret(&sdk, name, &channel_secret(name, &standin.url)).await,
        );
    }
    let topic = aws_sdk_sns::Client::new(&sdk)
        .create_topic()
        .name(aws::unique("alerts"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let usage = aws::secret(&sdk, "usage", USAGE_SECRET).await;
    let status = aws::secret(&sdk, "status", "status-token-for-the-test-0123456789abcdef").await;
    // the AWS Budgets budget the examples read (moto keeps one account for every test)
    let spend = |a: &str| {
        aws_sdk_budgets::types::Spend::builder()
            .amount(a)
            .unit("USD")
            .build()
            .unwrap()
    };
    let _ = aws_sdk_budgets::Client::new(&sdk)
        .create_budget()
        .account_id("123456789012")
        .budget(
            aws_sdk_budgets::types::Budget::builder()
                .budget_name("monthly-total")
                .budget_limit(spend("5000"))
                .time_unit(aws_sdk_budgets::types::TimeUnit::Monthly)
                .budget_type(aws_sdk_budgets::types::BudgetType::Cost)
                .calculated_spend(
                    aws_sdk_budgets::types::CalculatedSpend::builder()
                        .actual_spend(spend("1200"))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await; // an earlier run in this moto may have created it
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("budgets.toml");
    std::fs::write(&file, budgets(|name| references[name].clone())).unwrap();
    let apply = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .args([
            "budgets",
            "apply",
            file.to_str().unwrap(),
            "--table",
            &table,
            "--yes",
        ])
        .output()
        .unwrap();
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    let mut env = BTreeMap::from([
        ("SPENDGUARD_TABLE".to_string(), table.clone()),
        ("SPENDGUARD_ALERTS_TOPIC_ARN".to_string(), topic),
        ("SPENDGUARD_USAGE_SECRET_ARN".to_string(), usage),
        ("SPENDGUARD_STATUS_TOKEN_ARN".to_string(), status),
        (
            "SPENDGUARD_SNS_TOPIC_ARNS".to_string(),
            AWS_BUDGETS_TOPIC.to_string(),
        ),
        (
            "SPENDGUARD_AWS_ACCOUNT_ID".to_string(),
            "123456789012".to_string(),
        ),
    ]);
    env.extend(operator_route());
    let signer = WebhookSecret::parse(USAGE_SECRET).unwrap();
    run_all(&["--aws"], &env, true, dir.path(), Some(&signer));
    assert!(standin.received().iter().any(|r| r.path == "/v2/enqueue"));
}
