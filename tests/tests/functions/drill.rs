//! The stop-path drill (issue 22 part 4) through key-guard as deployed: the drill reads what
//! every stop would write and changes nothing; a problem (here an admin key the provider
//! refuses) is one critical alert on the alerts topic per problem and day, naming the key and
//! the fix; a healthy set-up raises none.

use serde_json::{Value, json};
use spendguard_app::ports::store::PolicyStore;
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_tests::aws::{self, TopicProbe};
use spendguard_tests::keyguard::KeyGuardWorld;

use crate::key_guard::key;

/// The world's keys: an Anthropic key, an OpenAI key in a project with its secret, an IAM key;
/// a budget whose emergency tier pages `oncall`.
async fn drilled_world() -> (KeyGuardWorld, Vec<KeySpec>) {
    let mut policy = parse_budgets(
        "budgets.toml",
        r#"
        version = 1
        [routing]
        emergency = ["log"]
        [[budget]]
        id = "ai"
        scope = "ai"
        [[budget.window]]
        period = "monthly"
        limit = "5000"
        tiers = [{ name = "emergency", percent = 100, actions = ["disable_keys"] }]
        "#,
    )
    .unwrap();
    policy.keys.clear();
    let w = KeyGuardWorld::new(policy).await;
    w.anthropic.add("apikey_d1", true);
    w.openai.add_in_project("proj_d", "key_d2");
    let secret = w
        .secret(
            "drill-openai",
            r#"{"key_id": "key_d2", "api_key": "sk-proj-drill"}"#,
        )
        .await;
    let user = aws::unique("drill");
    let (access_key, _) = w.iam_key(&user).await;
    let keys = vec![
        KeySpec {
            key_id: Some("apikey_d1".into()),
            ..key("anthropic-d1", ProviderKind::Anthropic, "ai/research/d1")
        },
        KeySpec {
            key_id: Some("key_d2".into()),
            project_id: Some("proj_d".into()),
            secret_arn: Some(secret),
            ..key("openai-d2", ProviderKind::Openai, "ai/prod/d2")
        },
        KeySpec {
            user: Some(user),
            key_id: Some(access_key),
            ..key("iam-d3", ProviderKind::AwsIam, "ai/batch/d3")
        },
    ];
    w.register(keys.clone()).await;
    (w, keys)
}

/// key-guard as deployed, publishing to `probe`'s topic, with the Anthropic admin key read
/// from `anthropic_admin_key` (a secret ARN).
async fn deployed(
    w: &KeyGuardWorld,
    probe: &TopicProbe,
    anthropic_admin_key: Option<String>,
) -> key_guard::handler::Handler {
    let config = key_guard::config::Config {
        alerts_topic_arn: Some(probe.topic_arn.clone()),
        anthropic_admin_key_arn: anthropic_admin_key.or(w.config.anthropic_admin_key_arn.clone()),
        ..w.config.clone()
    };
    key_guard::app::handler(&config, &w.sdk)
        .await
        .expect("key-guard starts")
}

/// The drill alerts on the topic, as published (the SNS envelopes' messages).
async fn drill_alerts(probe: &TopicProbe) -> Vec<Value> {
    probe
        .drain()
        .await
        .into_iter()
        .map(|envelope| serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap())
        .filter(|alert: &Value| alert["kind"] == "drill")
        .collect()
}

/// The problems the drill reported for our keys (other tests' tagged resources share moto).
fn key_problems(report: &Value) -> Vec<Value> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["subject"].as_str().unwrap().starts_with("key "))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_stop_path_raises_nothing_and_changes_nothing() {
    let (w, keys) = drilled_world().await;
    let probe = TopicProbe::new(&w.sdk).await;
    let handler = deployed(&w, &probe, None).await;
    let policy_before = w.store.load_policy().await.unwrap();
    let report = handler.handle(json!({"action": "drill"})).await.unwrap();
    assert_eq!(key_problems(&report), Vec::<Value>::new(), "{report:#}");
    // each key was read at its provider (and the OpenAI key's secret): nothing written
    assert!(
        report["checked"].as_u64().unwrap() >= keys.len() as u64 + 2,
        "{report:#}"
    );
    assert!(drill_alerts(&probe).await.is_empty());
    assert!(w.anthropic.writes.lock().unwrap().is_empty());
    assert!(w.openai.writes.lock().unwrap().is_empty());
    assert_eq!(w.anthropic.active("apikey_d1"), Some(true));
    assert_eq!(w.store.load_policy().await.unwrap(), policy_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_key_is_one_critical_alert_a_day_naming_the_key_and_the_fix() {
    let (w, _) = drilled_world().await;
    let probe = TopicProbe::new(&w.sdk).await;
    // the Anthropic admin key spendguard holds was revoked at Anthropic
    let revoked = w
        .secret("anthropic-admin-revoked", "sk-ant-admin-revoked")
        .await;
    let handler = deployed(&w, &probe, Some(revoked)).await;

    let report = handler.handle(json!({"action": "drill"})).await.unwrap();
    let problems = key_problems(&report);
    assert_eq!(problems.len(), 1, "{report:#}");
    assert_eq!(problems[0]["subject"], "key anthropic-d1");
    assert!(
        problems[0]["problem"].as_str().unwrap().contains("401"),
        "{problems:#?}"
    );
    let alerts = drill_alerts(&probe).await;
    let ours: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["details"]["subject"] == "key anthropic-d1")
        .collect();
    assert_eq!(ours.len(), 1, "{alerts:#?}");
    assert_eq!(ours[0]["severity"], "critical");
    assert_eq!(ours[0]["scope"], "ai/research/d1");
    assert!(
        ours[0]["summary"]
            .as_str()
            .unwrap()
            .contains("check the admin key"),
        "the fix is named: {}",
        ours[0]["summary"]
    );
    assert_eq!(ours[0]["channels"], json!(["log"]));
    assert_eq!(
        w.anthropic.active("apikey_d1"),
        Some(true),
        "nothing stopped"
    );

    // the next drill the same day (a retry, or an operator's) reports it and alerts nothing new
    let again = handler.handle(json!({"action": "drill"})).await.unwrap();
    assert_eq!(key_problems(&again).len(), 1);
    assert!(
        drill_alerts(&probe)
            .await
            .iter()
            .all(|a| a["details"]["subject"] != "key anthropic-d1"),
        "one alert per problem per day"
    );
}
