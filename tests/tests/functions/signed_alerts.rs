//! Who may order a kill (issue 23 part 2): every alert spendguard publishes is signed with the
//! deployment's alert-signing key; key-guard and fan-out act only on what verifies. A message
//! published to the alerts topic by anyone else — unsigned, signed with another key, or a
//! genuine one altered — is refused, audited, and changes nothing. Published through moto's
//! SNS, delivered as Lambda receives it (the SQS probe's envelope, attributes included).

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use spendguard_app::ports::store::{AuditLog, KeyStore};
use spendguard_app::signing::AlertSigning;
use spendguard_aws::sns::SnsBus;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::budget::Action;
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::period::YearMonth;
use spendguard_domain::settings::PolicySet;
use spendguard_tests::aws::{self, TopicProbe};
use spendguard_tests::fanout::{FanoutWorld, lambda_sns_event, quick_retries};
use spendguard_tests::keyguard::KeyGuardWorld;

use crate::key_guard::{emergency, key};

const SIGNING_KEY: &str = "alert-signing-0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "someone-elses-0123456789abcdef0123456789abcdef0123456789abcde";

/// An emergency that disables the keys of `anthropic/sig`.
fn emergency_alert(id: &str) -> AlertEvent {
    let event = emergency("anthropic/sig", id, vec![Action::DisableKeys]);
    serde_json::from_str(event["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap()
}

/// Publishes `alert` through `bus` and returns the Lambda event SNS would deliver.
async fn delivered(bus: &SnsBus, probe: &TopicProbe, alert: &AlertEvent) -> Value {
    use spendguard_app::ports::bus::AlertBus;
    bus.publish(alert).await.unwrap();
    let mut envelopes = probe.drain().await;
    assert_eq!(envelopes.len(), 1, "{envelopes:#?}");
    lambda_sns_event(&envelopes.remove(0))
}

async fn refusals(store: &dyn AuditLog) -> Vec<Value> {
    store
        .audit_log(YearMonth::of(Utc::now().date_naive()), 200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "forged_alert_refused")
        .map(|e| e.detail)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_guard_carries_out_only_alerts_spendguard_signed() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_sig", true);
    w.register(vec![spendguard_domain::keys::KeySpec {
        key_id: Some("apikey_sig".into()),
        ..key("sig", ProviderKind::Anthropic, "anthropic/sig/k")
    }])
    .await;
    let signing_arn = w.secret("alert-signing", SIGNING_KEY).await;
    let other_arn = w.secret("other-signing", OTHER_KEY).await;
    let config = key_guard::config::Config {
        alert_signing_key_arn: Some(signing_arn.clone()),
        ..w.config.clone()
    };
    let guard = key_guard::app::handler(&config, &w.sdk).await.unwrap();
    let probe = TopicProbe::new(&w.sdk).await;
    let vault = spendguard_aws::backends::deployed(&w.sdk, &w.config.table).vault;
    let sns = || aws_sdk_sns::Client::new(&w.sdk);
    let spendguard = SnsBus::new(sns(), &probe.topic_arn)
        .signed(AlertSigning::configured(&vault, Some(&signing_arn)));
    let another_principal = SnsBus::new(sns(), &probe.topic_arn);
    let another_key = SnsBus::new(sns(), &probe.topic_arn)
        .signed(AlertSigning::configured(&vault, Some(&other_arn)));

    // unsigned, signed with another key, and a genuine alert re-scoped to `*`
    let unsigned = delivered(&another_principal, &probe, &emergency_alert("forged-1")).await;
    let wrong_key = delivered(&another_key, &probe, &emergency_alert("forged-2")).await;
    let mut altered = delivered(&spendguard, &probe, &emergency_alert("forged-3")).await;
    let message = altered["Records"][0]["Sns"]["Message"]
        .as_str()
        .unwrap()
        .replace("\"scope\":\"anthropic/sig\"", "\"scope\":\"*\"");
    assert!(message.contains("\"scope\":\"*\""), "{message}");
    altered["Records"][0]["Sns"]["Message"] = json!(message);
    for (name, event) in [
        ("unsigned", unsigned),
        ("another key", wrong_key),
        ("altered", altered),
    ] {
        // an error: the errors alarm and the dead-letter queue show it
        let error = guard.handle(event).await.unwrap_err();
        assert!(
            error.to_string().contains("not signed by spendguard"),
            "{name}: {error}"
        );
        assert_eq!(w.anthropic.active("apikey_sig"), Some(true), "{name}");
    }
    let audited = refusals(&w.store).await;
    assert_eq!(audited.len(), 3, "each refusal audited: {audited:#?}");
    assert!(
        audited
            .iter()
            .any(|d| d["reason"].as_str().unwrap().contains("missing")),
        "{audited:#?}"
    );
    assert_eq!(
        audited
            .iter()
            .filter(|d| d["reason"].as_str().unwrap().contains("does not match"))
            .count(),
        2
    );
    assert!(
        w.store
            .kill_switch(&spendguard_domain::scope::Scope::parse("anthropic/sig").unwrap())
            .await
            .unwrap()
            .is_none(),
        "no switch engaged"
    );

    // the alert as spendguard publishes it is carried out
    let genuine = delivered(&spendguard, &probe, &emergency_alert("genuine-1")).await;
    let out = guard.handle(genuine).await.unwrap();
    assert_eq!(w.anthropic.active("apikey_sig"), Some(false), "{out:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_pages_nobody_for_a_forged_alert() {
    let w = FanoutWorld::new(quick_retries(), &[], PolicySet::default()).await;
    let signing_arn = aws::secret(&w.sdk, "alert-signing", SIGNING_KEY).await;
    let fanout = alert_fanout::app::fanout(
        &alert_fanout::config::Config {
            alert_signing_key_arn: Some(signing_arn.clone()),
            ..w.config.clone()
        },
        &w.sdk,
    );
    let probe = TopicProbe::new(&w.sdk).await;
    let vault = spendguard_aws::backends::deployed(&w.sdk, &w.table).vault;
    let sns = || aws_sdk_sns::Client::new(&w.sdk);
    let mut alert = emergency_alert("page-1");
    alert.channels = vec!["ops-slack".into()];
    let forged = delivered(&SnsBus::new(sns(), &probe.topic_arn), &probe, &alert).await;
    let error = fanout.handle(forged).await.unwrap_err();
    assert!(
        error.to_string().contains("not signed by spendguard"),
        "{error}"
    );
    assert!(
        w.receivers["ops-slack"].received().is_empty(),
        "nobody paged"
    );
    assert_eq!(refusals(&w.store).await.len(), 1);

    let signed = SnsBus::new(sns(), &probe.topic_arn)
        .signed(AlertSigning::configured(&vault, Some(&signing_arn)));
    let genuine = delivered(&signed, &probe, &alert).await;
    let out = fanout.handle(genuine).await.unwrap();
    assert_eq!(w.receivers["ops-slack"].received().len(), 1, "{out:#}");
}

/// What a signing key that cannot be read does: the invocation fails (and is retried), nothing
/// is acted on unverified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_signing_key_fails_the_invocation_and_acts_on_nothing() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_sig", true);
    w.register(vec![spendguard_domain::keys::KeySpec {
        key_id: Some("apikey_sig".into()),
        ..key("sig", ProviderKind::Anthropic, "anthropic/sig/k")
    }])
    .await;
    let config = key_guard::config::Config {
        alert_signing_key_arn: Some(format!(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}",
            aws::unique("missing")
        )),
        ..w.config.clone()
    };
    let guard = Arc::new(key_guard::app::handler(&config, &w.sdk).await.unwrap());
    let error = guard
        .handle(emergency(
            "anthropic/sig",
            "unverifiable",
            vec![Action::DisableKeys],
        ))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("secret"), "{error}");
    assert_eq!(w.anthropic.active("apikey_sig"), Some(true));
}
