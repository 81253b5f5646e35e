//! Secrets never reach the logs: every log line written while channels deliver, fail and
//! retry (at TRACE level, dependencies included) is captured and searched for every secret.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use spendguard_core::budget::{ChannelKind, PolicySet};
use spendguard_tests::aws;
use spendguard_tests::fanout::{FanoutWorld, lambda_sns_event, mode, quick_retries};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sns_of(event: &spendguard_core::alert::AlertEvent) -> Value {
    lambda_sns_event(&json!({
        "Type": "Notification", "MessageId": aws::unique("m"), "TopicArn": "arn:aws:sns:us-east-1:123456789012:alerts",
        "Message": serde_json::to_string(event).unwrap(), "Timestamp": "2026-11-20T18:00:00.000Z",
        "SignatureVersion": "1", "Signature": "x", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem", "UnsubscribeURL": "https://x"
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_appears_in_any_log_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!(
        "http://{}/services/T0/B0/refused-secret-path",
        closed.local_addr().unwrap()
    );
    drop(closed);
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
    let mut event: spendguard_core::alert::AlertEvent =
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

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
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
