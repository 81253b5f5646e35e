//! Secrets never reach the logs: every log line written while channels deliver, fail and
//! retry (at TRACE level, dependencies included) is captured and searched for every secret.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use spendguard_domain::settings::{ChannelKind, PolicySet};
use spendguard_tests::aws;
use spendguard_tests::fanout::{FanoutWorld, lambda_sns_event, mode, quick_retries};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

/// One subscriber for the whole test binary (tests run in parallel threads): every line of
/// every test lands in the same buffer, and every test searches all of it.
fn capture() -> Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let writer = capture.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .init();
            capture
        })
        .clone()
}

fn logs() -> String {
    String::from_utf8(capture().0.lock().unwrap().clone()).unwrap()
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sns_of(event: &spendguard_domain::alert::AlertEvent) -> Value {
    lambda_sns_event(&json!({
        "Type": "Notification", "MessageId": aws::unique("m"), "TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts",
        "Message": serde_json::to_string(event).unwrap(), "Timestamp": "2026-11-20T18:00:00.000Z",
        "SignatureVersion": "1", "Signature": "x", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem", "UnsubscribeURL": "https://x"
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_appears_in_any_log_line() {
    capture();

    let (_kept, closed) = spendguard_tests::standin::refusing_port();
    let refused = format!("http://{closed}/services/T0/B0/refused-secret-path");
    let extra = [
        ("refused-slack", ChannelKind::Slack, refused.clone()),
        (
            "plain-http-slack",
            ChannelKind::Slack,
            "http://hooks.slack.example.com/services/T0/B0/plaintext-secret".to_string(),
        ),
    ];
    let w = FanoutWorld::new(quick_retries(), &extra, PolicySet::default()).await;
    let path = format!(
        "{}/../events/alert-fanout/emergency.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut event: spendguard_domain::alert::AlertEvent =
        serde_json::from_str(fixture["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    event.channels = [
        "ops-slack",
        "oncall-pager",
        "team-teams",
        "dev-discord",
        "audit-hook",
        "finance-email",
        "refused-slack",
        "plain-http-slack",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // failures, retries and successes all write log lines
    w.receivers["ops-slack"].set(mode::FAIL_500);
    w.receivers["dev-discord"].set(mode::THROTTLE_ONCE);
    assert!(w.fanout.handle(sns_of(&event)).await.is_err());
    w.receivers["ops-slack"].set(mode::OK);
    assert!(w.fanout.handle(sns_of(&event)).await.is_err());

    let logs = logs();
    assert!(
        logs.contains("delivery failed"),
        "the test saw the failures it means to check"
    );
    assert!(
        logs.lines().count() > 20,
        "a real amount of logging was captured"
    );
    let mut secrets = w.secret_values.clone();
    secrets.extend([
        refused,
        "plaintext-secret".to_string(),
        "refused-secret-path".to_string(),
    ]);
    for secret in &secrets {
        // the whole value, and for URLs their secret path too
        let mut needles = vec![secret.clone()];
        if let Some(path) = secret.split("/hook-").nth(1) {
            needles.push(path.to_string());
        }
        if let Ok(v) = serde_json::from_str::<Value>(secret) {
            needles.extend(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, x)| x.as_str().map(str::to_string))
                    .filter(|x| x.len() > 12 && !x.contains('@')),
            );
        }
        for needle in needles {
            assert!(
                !logs.contains(&needle),
                "a secret reached the logs: {needle}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_guard_logs_no_key_and_no_rotation_token() {
    use spendguard_domain::keys::{KeySpec, ProviderKind, RotationStrategy};
    use spendguard_domain::scope::Scope;
    use spendguard_tests::keyguard::KeyGuardWorld;
    capture();
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_log_1", true);
    w.anthropic.add("apikey_log_2", true);
    w.anthropic
        .valid
        .lock()
        .unwrap()
        .insert("sk-ant-new-key-value-for-logs".into());
    let arn = w
        .secret(
            "logged",
            r#"{"key_id": "apikey_log_1", "api_key": "sk-ant-old-key-value-for-logs"}"#,
        )
        .await;
    w.secrets
        .rotate_secret()
        .secret_id(&arn)
        .rotate_immediately(false)
        .rotation_rules(
            aws_sdk_secretsmanager::types::RotationRulesType::builder()
                .automatically_after_days(30)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let spec = KeySpec {
        id: "logged".into(),
        provider: ProviderKind::Anthropic,
        scope: Scope::parse("anthropic/logs/k").unwrap(),
        secret_arn: Some(arn.clone()),
        key_id: Some("apikey_log_1".into()),
        project_id: None,
        user: None,
        rotation: Some(RotationStrategy::Staged),
        allow_delete: false,
    };
    w.register(vec![spec]).await;
    // a staged rotation, with a RotationToken on every step
    let token = uuid::Uuid::new_v4().to_string();
    let current = w.current_value(&arn).await;
    w.secrets
        .put_secret_value()
        .secret_id(&arn)
        .client_request_token(&token)
        .secret_string(current)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    w.secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"key_id": "apikey_log_2", "api_key": "sk-ant-new-key-value-for-logs"}"#)
        .version_stages("SPENDGUARD_STAGED")
        .send()
        .await
        .unwrap();
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let event = json!({"Step": step, "SecretId": arn, "ClientRequestToken": token, "RotationToken": "rotation-token-secret-7f3a9c"});
        w.handler.handle(event).await.unwrap();
    }
    // an emergency and a restore, with a provider failure on the way
    w.anthropic
        .fail_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let disable =
        json!({"action": "disable", "scope": "anthropic/logs", "reason": "test", "actor": "carol"});
    assert!(w.handler.handle(disable.clone()).await.is_err());
    w.handler.handle(disable).await.unwrap();
    w.handler
        .handle(json!({"action": "restore", "scope": "anthropic/logs", "actor": "carol"}))
        .await
        .unwrap();

    let logs = logs();
    assert!(logs.contains("rotation step"), "the rotation was logged");
    for secret in [
        "rotation-token-secret-7f3a9c",
        "sk-ant-old-key-value-for-logs",
        "sk-ant-new-key-value-for-logs",
        "sk-ant-admin-test",
        "sk-admin-openai-test",
    ] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}
