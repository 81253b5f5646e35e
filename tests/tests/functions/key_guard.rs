//! key-guard end to end: emergency stop and restore against stand-in admin APIs and moto
//! (IAM, Secrets Manager), and the Secrets Manager rotation protocol step by step.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{Duration, Utc};
use key_guard::handler::KeyGuardError;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_app::flows::guard::{GuardError, advance_ramps};
use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::KeyStore;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::budget::Action;
use spendguard_domain::keys::{KeySpec, KeyStatus, ProviderKind, RotationStrategy};
use spendguard_domain::records::SwitchState;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::{PolicySet, RestorePolicy};
use spendguard_tests::aws;
use spendguard_tests::faults::{Fault, FaultProxy, Rule};
use spendguard_tests::keyguard::KeyGuardWorld;

pub(crate) fn key(id: &str, provider: ProviderKind, scope: &str) -> KeySpec {
    KeySpec {
        id: id.into(),
        provider,
        scope: Scope::parse(scope).unwrap(),
        secret_arn: None,
        key_id: None,
        project_id: None,
        user: None,
        rotation: None,
        allow_delete: false,
    }
}

fn anthropic_key(id: &str, key_id: &str, scope: &str) -> KeySpec {
    KeySpec {
        key_id: Some(key_id.into()),
        ..key(id, ProviderKind::Anthropic, scope)
    }
}

/// `event` delivered to key-guard twice at the same time (at-least-once delivery).
pub(crate) async fn delivered_twice_at_once(
    handler: &Arc<key_guard::handler::Handler>,
    event: &Value,
) -> [Result<Value, KeyGuardError>; 2] {
    let (a, b) = (handler.clone(), handler.clone());
    let (e1, e2) = (event.clone(), event.clone());
    let (r1, r2) = tokio::join!(
        tokio::spawn(async move { a.handle(e1).await }),
        tokio::spawn(async move { b.handle(e2).await })
    );
    [r1.unwrap(), r2.unwrap()]
}

/// An emergency alert for `scope`, as budget-check publishes it and SNS delivers it.
pub(crate) fn emergency(scope: &str, alert_id: &str, actions: Vec<Action>) -> Value {
    let path = format!(
        "{}/../events/alert-fanout/emergency.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut alert: AlertEvent =
        serde_json::from_str(fixture["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    alert.scope = Scope::parse(scope).unwrap();
    alert.alert_id = alert_id.into();
    alert.actions = actions;
    let mut event = fixture.clone();
    event["Records"][0]["Sns"]["Message"] = json!(serde_json::to_string(&alert).unwrap());
    event
}

async fn status(w: &KeyGuardWorld, id: &str) -> KeyStatus {
    w.store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.spec.id == id)
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_emergencies_at_once_engage_the_switch_once_and_disable_each_key_once() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    for id in ["apikey_01", "apikey_02"] {
        w.anthropic.add(id, true);
    }
    w.register(vec![
        anthropic_key("research-1", "apikey_01", "anthropic/research/k1"),
        anthropic_key("research-2", "apikey_02", "anthropic/research/k2"),
    ])
    .await;
    let event = emergency(
        "anthropic/research",
        "alert-em-1",
        vec![Action::Notify, Action::DisableKeys],
    );
    let handler = Arc::new(w.handler);
    // one of them may find the other still working on a key: it fails (Lambda retries it)
    let results = delivered_twice_at_once(&handler, &event).await;
    assert!(
        results.iter().any(Result::is_ok),
        "{:?}",
        results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect::<Vec<_>>()
    );
    for id in ["apikey_01", "apikey_02"] {
        assert_eq!(
            w.anthropic.writes_for(id),
            ["inactive"],
            "{id} disabled exactly once"
        );
        assert_eq!(w.anthropic.active(id), Some(false));
    }
    let switch = w
        .store
        .kill_switch(&Scope::parse("anthropic/research").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(switch.version, 1, "engaged once");
    assert!(
        matches!(&switch.value.state, SwitchState::Engaged { incident, .. } if incident == "alert-em-1")
    );
    // a retry of the losing invocation completes without acting again
    handler.handle(event).await.expect("a retry succeeds");
    assert_eq!(w.anthropic.writes_for("apikey_01").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_midway_keeps_the_switch_engaged_and_a_retry_finishes() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    for id in ["apikey_11", "apikey_12", "apikey_13"] {
        w.anthropic.add(id, true);
    }
    w.register(vec![
        anthropic_key("k11", "apikey_11", "anthropic/prod/a"),
        anthropic_key("k12", "apikey_12", "anthropic/prod/b"),
        anthropic_key("k13", "apikey_13", "anthropic/prod/c"),
    ])
    .await;
    w.anthropic.fail_next.store(1, Ordering::SeqCst);
    let event = emergency("anthropic/prod", "alert-em-2", vec![Action::DisableKeys]);
    let err = w.handler.handle(event.clone()).await.unwrap_err();
    assert!(
        matches!(err, KeyGuardError::Guard(GuardError::Incomplete(_))),
        "{err}"
    );
    assert_eq!(
        lambda_runtime::Diagnostic::from(err).error_type,
        "KeysIncomplete"
    );
    let scope = Scope::parse("anthropic/prod").unwrap();
    assert!(
        matches!(
            w.store
                .kill_switch(&scope)
                .await
                .unwrap()
                .unwrap()
                .value
                .state,
            SwitchState::Engaged { .. }
        ),
        "still engaged"
    );
    let disabled: usize = ["apikey_11", "apikey_12", "apikey_13"]
        .iter()
        .filter(|id| w.anthropic.active(id) == Some(false))
        .count();
    assert_eq!(disabled, 2, "the other keys were stopped");

    w.handler
        .handle(event)
        .await
        .expect("the retry completes what was missing");
    for id in ["apikey_11", "apikey_12", "apikey_13"] {
        assert_eq!(w.anthropic.active(id), Some(false));
        assert_eq!(
            w.anthropic.writes_for(id),
            ["inactive"],
            "{id}: disabled once, never twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_re_enables_only_what_spendguard_disabled_and_ramps_the_factor() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_21", true);
    w.anthropic.add("apikey_22", false); // an operator disabled this one for another reason
    let iam_user = aws::unique("ci");
    let (iam_id, _) = w.iam_key(&iam_user).await;
    let openai_secret = w
        .secret(
            "openai-prod",
            r#"{"key_id": "key_1", "api_key": "sk-proj-original"}"#,
        )
        .await;
    w.openai.add_in_project("proj_1", "key_1");
    w.register(vec![
        anthropic_key("a21", "apikey_21", "team/x/anthropic"),
        anthropic_key("a22", "apikey_22", "team/x/anthropic-old"),
        KeySpec {
            user: Some(iam_user.clone()),
            key_id: Some(iam_id.clone()),
            ..key("ci", ProviderKind::AwsIam, "team/x/aws")
        },
        KeySpec {
            secret_arn: Some(openai_secret.clone()),
            project_id: Some("proj_1".into()),
            key_id: Some("key_1".into()),
            ..key("openai", ProviderKind::Openai, "team/x/openai")
        },
    ])
    .await;
    let original_version = w
        .versions(&openai_secret)
        .await
        .into_iter()
        .find(|(_, s)| s.contains(&"AWSCURRENT".to_string()))
        .unwrap()
        .0;

    let report = w.handler.handle(json!({"action": "disable", "scope": "team/x", "reason": "runaway loop", "actor": "alice"})).await.unwrap();
    assert_eq!(report["switch"], "engaged");
    assert_eq!(w.anthropic.active("apikey_21"), Some(false));
    assert!(!w.iam_active(&iam_user, &iam_id).await);
    assert!(
        w.current_value(&openai_secret)
            .await
            .starts_with("SPENDGUARD-WITHHELD"),
        "the OpenAI key is withheld"
    );
    assert_eq!(
        w.openai.active("key_1"),
        Some(true),
        "never deleted without allow_delete"
    );
    assert!(matches!(
        status(&w, "a22").await,
        KeyStatus::DisabledElsewhere { .. }
    ));
    assert!(w.anthropic.writes_for("apikey_22").is_empty());

    let restored = w
        .handler
        .handle(json!({"action": "restore", "scope": "team/x", "actor": "alice"}))
        .await
        .unwrap();
    assert_eq!(
        (
            restored["switch"].as_str(),
            restored["limit_factor"].as_str()
        ),
        (Some("restoring (step 1)"), Some("0.1"))
    );
    assert_eq!(w.anthropic.active("apikey_21"), Some(true));
    assert_eq!(
        w.anthropic.active("apikey_22"),
        Some(false),
        "the operator's key stays disabled"
    );
    assert!(w.anthropic.writes_for("apikey_22").is_empty());
    assert!(w.iam_active(&iam_user, &iam_id).await);
    assert_eq!(
        w.current_value(&openai_secret).await,
        r#"{"key_id": "key_1", "api_key": "sk-proj-original"}"#
    );
    let current = w
        .versions(&openai_secret)
        .await
        .into_iter()
        .find(|(_, s)| s.contains(&"AWSCURRENT".to_string()))
        .unwrap()
        .0;
    assert_eq!(
        current, original_version,
        "AWSCURRENT is back on the key's own version"
    );
    for id in ["a21", "ci", "openai"] {
        assert_eq!(status(&w, id).await, KeyStatus::Active, "{id}");
    }

    // the scheduled checks climb the ramp: 0.1 -> 0.5 -> 1.0 (open)
    let scope = Scope::parse("team/x").unwrap();
    let policy = RestorePolicy::default();
    let t0 = Utc::now();
    assert_eq!(
        advance_ramps(&w.store, &policy, t0 + Duration::minutes(2))
            .await
            .unwrap(),
        0,
        "not yet"
    );
    advance_ramps(&w.store, &policy, t0 + Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(
        w.store
            .kill_switch(&scope)
            .await
            .unwrap()
            .unwrap()
            .value
            .limit_factor,
        Decimal::new(5, 1)
    );
    advance_ramps(&w.store, &policy, t0 + Duration::minutes(12))
        .await
        .unwrap();
    let open = w.store.kill_switch(&scope).await.unwrap().unwrap().value;
    assert_eq!(
        (open.state, open.limit_factor),
        (SwitchState::Open, Decimal::ONE)
    );
    assert!(w.store.active_kill_switches().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_changed_by_an_operator_while_withheld_is_left_as_they_set_it() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let arn = w.secret("shared-key", "sk-original").await;
    w.register(vec![KeySpec {
        secret_arn: Some(arn.clone()),
        ..key("shared", ProviderKind::SecretOnly, "apps/shared")
    }])
    .await;
    w.handler
        .handle(json!({"action": "disable", "scope": "apps", "reason": "test", "actor": "bob"}))
        .await
        .unwrap();
    assert!(
        w.current_value(&arn)
            .await
            .starts_with("SPENDGUARD-WITHHELD")
    );
    w.secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("sk-replaced-by-operator")
        .send()
        .await
        .unwrap();
    let report = w
        .handler
        .handle(json!({"action": "restore", "scope": "apps", "actor": "bob"}))
        .await
        .unwrap();
    assert_eq!(report["keys"][0]["outcome"], "restored_with_notes");
    assert!(
        report["keys"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("left as the operator set it")
    );
    assert_eq!(w.current_value(&arn).await, "sk-replaced-by-operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_limits_throttles_without_disabling_and_recovery_lifts_it() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_31", true);
    w.register(vec![anthropic_key("k31", "apikey_31", "anthropic/batch/k")])
        .await;
    let half = Decimal::new(5, 1);
    let critical = emergency(
        "anthropic/batch",
        "alert-crit",
        vec![Action::Notify, Action::ReduceLimits { factor: half }],
    );
    let out = w.handler.handle(critical.clone()).await.unwrap();
    assert_eq!(out["alerts"][0]["limit_factor"], "0.5");
    assert_eq!(
        w.anthropic.active("apikey_31"),
        Some(true),
        "keys stay enabled"
    );
    // the alert recovers: budget-check publishes a recovery carrying the same actions
    let mut recovery = critical.clone();
    let mut alert: AlertEvent =
        serde_json::from_str(recovery["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    alert = alert.recovery("ended with its period", Utc::now());
    recovery["Records"][0]["Sns"]["Message"] = json!(serde_json::to_string(&alert).unwrap());
    let out = w.handler.handle(recovery).await.unwrap();
    assert_eq!(out["alerts"][0]["limit_factor"], "1");
}

/// A `high` security finding orders `rotate_keys`: key-guard starts the Secrets Manager
/// rotation of each key under the scope that has a secret and a strategy, once per finding
/// (Secrets Manager then runs the rotation steps tested below); keys stay enabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotate_keys_finding_starts_each_rotation_once() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_41", true);
    let arn = w.secret("search-key", "sk-ant-api03-rotate-me").await;
    w.register(vec![
        KeySpec {
            secret_arn: Some(arn.clone()),
            rotation: Some(RotationStrategy::Staged),
            ..anthropic_key("k41", "apikey_41", "anthropic/search/k41")
        },
        anthropic_key("k42", "apikey_42", "anthropic/search/k42"),
    ])
    .await;
    let mut event = emergency(
        "anthropic/search",
        "finding-high",
        vec![Action::RotateKeys, Action::Notify],
    );
    let mut alert: AlertEvent =
        serde_json::from_str(event["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    alert.kind = spendguard_domain::alert::AlertKind::Security;
    event["Records"][0]["Sns"]["Message"] = json!(serde_json::to_string(&alert).unwrap());

    let rotated_at = |w: &KeyGuardWorld, arn: String| {
        let secrets = w.secrets.clone();
        async move {
            secrets
                .describe_secret()
                .secret_id(arn)
                .send()
                .await
                .unwrap()
                .last_rotated_date
        }
    };
    assert_eq!(rotated_at(&w, arn.clone()).await, None);
    let out = w.handler.handle(event.clone()).await.unwrap();
    let outcomes: Vec<(String, String)> = out["alerts"][0]["rotated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key_id"].as_str().unwrap().to_string(),
                k["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("k41".to_string(), "rotation_started".to_string()),
            ("k42".to_string(), "not_rotatable".to_string())
        ]
    );
    assert!(rotated_at(&w, arn.clone()).await.is_some());
    let versions = w.versions(&arn).await.len();
    // SNS redelivers: nothing is rotated twice
    let again = w.handler.handle(event).await.unwrap();
    assert_eq!(
        again["alerts"][0]["rotated"][0]["outcome"],
        "already_rotated"
    );
    assert_eq!(w.versions(&arn).await.len(), versions);
    assert_eq!(
        w.anthropic.active("apikey_41"),
        Some(true),
        "rotation does not disable"
    );
}

// ---- rotation ------------------------------------------------------------------------------

const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

fn step(name: &str, secret: &str, token: &str) -> Value {
    json!({"Step": name, "SecretId": secret, "ClientRequestToken": token, "RotationToken": "rotation-token-should-never-be-logged"})
}

/// A rotated secret: rotation enabled, and a rotation started (token registered as AWSPENDING,
/// as Secrets Manager does before it calls createSecret).
async fn rotated_secret(w: &KeyGuardWorld, value: &str) -> (String, String) {
    let arn = w.secret("rotated", value).await;
    // enables rotation (moto applies a no-op rotation of the same value)
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
    (arn, String::new())
}

async fn start_rotation(w: &KeyGuardWorld, arn: &str) -> String {
    let token = uuid::Uuid::new_v4().to_string();
    let current = w.current_value(arn).await;
    w.secrets
        .put_secret_value()
        .secret_id(arn)
        .client_request_token(&token)
        .secret_string(current)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    token
}

fn stages_are_final(
    versions: &std::collections::BTreeMap<String, Vec<String>>,
    token: &str,
    old: &str,
) {
    let with = |stage: &str| {
        versions
            .iter()
            .filter(|(_, s)| s.iter().any(|x| x == stage))
            .map(|(v, _)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        with("AWSCURRENT"),
        [token.to_string()],
        "one AWSCURRENT, on the new version: {versions:?}"
    );
    assert_eq!(
        with("AWSPREVIOUS"),
        [old.to_string()],
        "AWSPREVIOUS on the old version: {versions:?}"
    );
    assert!(
        with("AWSPENDING").is_empty(),
        "no AWSPENDING left: {versions:?}"
    );
}

async fn current_version(w: &KeyGuardWorld, arn: &str) -> String {
    w.versions(arn)
        .await
        .into_iter()
        .find(|(_, s)| s.iter().any(|x| x == "AWSCURRENT"))
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_secrets_rotate_in_order_twice_per_step_and_after_any_interruption() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let original = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (arn, _) = rotated_secret(&w, original).await;
    w.register(vec![KeySpec {
        secret_arn: Some(arn.clone()),
        rotation: Some(RotationStrategy::Generated),
        ..key(
            "usage-signing",
            ProviderKind::SecretOnly,
            "spendguard/usage-signing",
        )
    }])
    .await;

    // in order, each step twice
    let old = current_version(&w, &arn).await;
    let token = start_rotation(&w, &arn).await;
    for s in STEPS {
        w.handler
            .handle(step(s, &arn, &token))
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
        w.handler
            .handle(step(s, &arn, &token))
            .await
            .unwrap_or_else(|e| panic!("{s} again: {e}"));
    }
    stages_are_final(&w.versions(&arn).await, &token, &old);
    let value = w.current_value(&arn).await;
    let parts: Vec<&str> = value.split_whitespace().collect();
    assert!(parts[0].starts_with("whsec_") && parts[0] != original);
    assert_eq!(
        parts[1], original,
        "the previous secret still verifies while senders switch"
    );

    // interrupted after each step, then retried from the step that failed
    for stop_after in 0..4 {
        let old = current_version(&w, &arn).await;
        let token = start_rotation(&w, &arn).await;
        for s in &STEPS[..=stop_after] {
            w.handler.handle(step(s, &arn, &token)).await.unwrap();
        }
        assert_eq!(
            current_version(&w, &arn).await == token,
            stop_after == 3,
            "current moves only at finishSecret"
        );
        for s in &STEPS[stop_after..] {
            w.handler.handle(step(s, &arn, &token)).await.unwrap();
        }
        stages_are_final(&w.versions(&arn).await, &token, &old);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_out_of_order_never_make_an_untested_version_current() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let (arn, _) = rotated_secret(&w, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").await;
    w.register(vec![KeySpec {
        secret_arn: Some(arn.clone()),
        rotation: Some(RotationStrategy::Generated),
        ..key("sig", ProviderKind::SecretOnly, "spendguard/sig")
    }])
    .await;
    let old = current_version(&w, &arn).await;
    let token = start_rotation(&w, &arn).await;
    w.handler
        .handle(step("createSecret", &arn, &token))
        .await
        .unwrap();
    let err = w
        .handler
        .handle(step("finishSecret", &arn, &token))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("testSecret has not passed"),
        "{err}"
    );
    assert_eq!(current_version(&w, &arn).await, old, "AWSCURRENT untouched");
    let unknown = w
        .handler
        .handle(step(
            "testSecret",
            &arn,
            "11111111-2222-3333-4444-555555555555",
        ))
        .await
        .unwrap_err();
    assert!(
        unknown.to_string().contains("has no stage for rotation"),
        "{unknown}"
    );
    w.handler
        .handle(step("testSecret", &arn, &token))
        .await
        .unwrap();
    w.handler
        .handle(step("finishSecret", &arn, &token))
        .await
        .unwrap();
    stages_are_final(&w.versions(&arn).await, &token, &old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_provider_key_is_tested_before_it_is_current_and_the_old_key_is_retired_after() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_old", true);
    w.anthropic.add("apikey_new", true);
    w.anthropic
        .valid
        .lock()
        .unwrap()
        .insert("sk-ant-new-value".into());
    let (arn, _) = rotated_secret(
        &w,
        r#"{"key_id": "apikey_old", "api_key": "sk-ant-old-value"}"#,
    )
    .await;
    w.register(vec![KeySpec {
        secret_arn: Some(arn.clone()),
        key_id: Some("apikey_old".into()),
        rotation: Some(RotationStrategy::Staged),
        ..key(
            "research",
            ProviderKind::Anthropic,
            "anthropic/research/main",
        )
    }])
    .await;
    let old = current_version(&w, &arn).await;
    let token = start_rotation(&w, &arn).await;
    // nothing staged yet: refused, and nothing changes
    let err = w
        .handler
        .handle(step("createSecret", &arn, &token))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SPENDGUARD_STAGED"), "{err}");
    // the operator stages the new key
    w.secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"key_id": "apikey_new", "api_key": "sk-ant-new-value"}"#)
        .version_stages("SPENDGUARD_STAGED")
        .send()
        .await
        .unwrap();
    for s in &STEPS[..3] {
        w.handler
            .handle(step(s, &arn, &token))
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            current_version(&w, &arn).await,
            old,
            "AWSCURRENT unchanged before finish"
        );
        assert_eq!(
            w.anthropic.active("apikey_old"),
            Some(true),
            "the current key still works after {s}"
        );
    }
    w.handler
        .handle(step("finishSecret", &arn, &token))
        .await
        .unwrap();
    stages_are_final(&w.versions(&arn).await, &token, &old);
    assert_eq!(
        w.anthropic.active("apikey_old"),
        Some(false),
        "the previous key is retired after finish"
    );
    assert_eq!(w.anthropic.active("apikey_new"), Some(true));
    let versions = w.versions(&arn).await;
    assert!(
        versions
            .values()
            .all(|s| !s.iter().any(|x| x == "SPENDGUARD_STAGED")),
        "the staging label is cleared"
    );

    // a staged key that does not authenticate fails testSecret and never becomes current
    let token = start_rotation(&w, &arn).await;
    w.secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(r#"{"key_id": "apikey_bad", "api_key": "sk-ant-revoked"}"#)
        .version_stages("SPENDGUARD_STAGED")
        .send()
        .await
        .unwrap();
    w.handler
        .handle(step("createSecret", &arn, &token))
        .await
        .unwrap();
    let err = w
        .handler
        .handle(step("testSecret", &arn, &token))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not work"), "{err}");
    assert!(
        w.handler
            .handle(step("finishSecret", &arn, &token))
            .await
            .is_err()
    );
    assert!(
        w.current_value(&arn).await.contains("apikey_new"),
        "the working key stays current"
    );
}

// ---- issue 20 §3: the stop path under races, crashes, nesting and outages ----------------

/// The switch of `scope` as JSON (its incidents, whatever the shape of the state).
async fn switch_json(w: &KeyGuardWorld, scope: &str) -> Value {
    w.store
        .kill_switch(&Scope::parse(scope).unwrap())
        .await
        .unwrap()
        .map(|v| serde_json::to_value(v.value).unwrap())
        .unwrap_or(Value::Null)
}

/// Every audit entry of this month, as text.
async fn audit_text(w: &KeyGuardWorld) -> String {
    let month = spendguard_domain::period::YearMonth::of(Utc::now().date_naive());
    serde_json::to_string(
        &w.store
            .audit_log(month, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| json!({"action": e.action, "detail": e.detail}))
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

/// Delivers `event` as Lambda does: a failed attempt is retried (twice).
async fn delivered(handler: &key_guard::handler::Handler, event: Value) -> Result<Value, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match handler.handle(event.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Review finding #1: an emergency that arrives while a restore is re-enabling keys is kept:
/// the restore stops, the new incident holds the switch and is audited, the key ends stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emergency_during_a_restore_is_kept_and_its_key_ends_stopped() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_race", true);
    w.register(vec![anthropic_key("race", "apikey_race", "ai/prod/race")])
        .await;
    let handler = Arc::new(
        w.handler_at(&w.sdk, Arc::new(spendguard_app::ports::clock::SystemClock))
            .await,
    );
    handler
        .handle(emergency("ai/prod", "inc-first", vec![Action::DisableKeys]))
        .await
        .unwrap();
    assert_eq!(w.anthropic.active("apikey_race"), Some(false));

    // the restore's enable call reaches Anthropic and waits there for its answer
    w.anthropic.hold_writes();
    let h = handler.clone();
    let restore = tokio::spawn(async move {
        h.handle(json!({"action": "restore", "scope": "ai/prod", "actor": "op"}))
            .await
    });
    w.anthropic.until_held(1).await;
    // meanwhile the next crossing orders another stop
    let h = handler.clone();
    let second = tokio::spawn(async move {
        h.handle(emergency(
            "ai/prod",
            "inc-second",
            vec![Action::DisableKeys],
        ))
        .await
    });
    for _ in 0..100 {
        if switch_json(&w, "ai/prod")
            .await
            .to_string()
            .contains("inc-second")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    w.anthropic.release();
    let restored = restore.await.unwrap();
    let second = second.await.unwrap();
    if second.is_err() {
        // Lambda retries the failed emergency
        delivered(
            &handler,
            emergency("ai/prod", "inc-second", vec![Action::DisableKeys]),
        )
        .await
        .expect("the retried emergency completes");
    }
    assert_eq!(
        w.anthropic.active("apikey_race"),
        Some(false),
        "the second emergency's key is stopped (restore said {restored:?})"
    );
    let switch = switch_json(&w, "ai/prod").await;
    assert_eq!(switch["state"]["state"], "engaged", "{switch}");
    assert!(switch.to_string().contains("inc-second"), "{switch}");
    assert!(
        audit_text(&w).await.contains("inc-second"),
        "the incident that joined is audited"
    );
}

/// Finding #2a: a status that cannot be written is a failed stop (retried), never a quiet
/// success; once written, restore brings the key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_stop_fails_and_restore_still_brings_the_key_back() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_rec", true);
    w.register(vec![anthropic_key("rec", "apikey_rec", "ai/rec/k")])
        .await;
    let proxy = FaultProxy::start(vec![Rule {
        operation: "UpdateItem",
        body_contains: Some("\"KEYS\""),
        every: 1,
        limit: usize::MAX,
        fault: Fault::ServerError,
    }])
    .await;
    let handler = w
        .handler_at(
            &proxy.sdk().await,
            Arc::new(spendguard_app::ports::clock::SystemClock),
        )
        .await;
    let event = emergency("ai/rec", "inc-rec", vec![Action::DisableKeys]);
    let err = handler.handle(event.clone()).await.unwrap_err();
    assert_eq!(
        lambda_runtime::Diagnostic::from(err).error_type,
        "KeysIncomplete"
    );
    proxy.set_rules(Vec::new());
    handler.handle(event).await.expect("the retry completes");
    assert_eq!(w.anthropic.active("apikey_rec"), Some(false));
    handler
        .handle(json!({"action": "restore", "scope": "ai/rec", "actor": "op"}))
        .await
        .unwrap();
    assert_eq!(w.anthropic.active("apikey_rec"), Some(true));
}

/// Finding #2b: an invocation that dies between the provider's disable and its record is
/// recognised by its retry as spendguard's own stop, so restore re-enables the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_the_provider_call_is_recognised_on_retry() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_crash", true);
    w.register(vec![anthropic_key("crash", "apikey_crash", "ai/crash/k")])
        .await;
    let clock = Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let handler = Arc::new(w.handler_at(&w.sdk, clock.clone()).await);
    let event = emergency("ai/crash", "inc-crash", vec![Action::DisableKeys]);
    w.anthropic.hold_writes();
    let h = handler.clone();
    let e = event.clone();
    let dying = tokio::spawn(async move { h.handle(e).await });
    w.anthropic.until_held(1).await;
    dying.abort(); // Lambda's timeout: Anthropic disabled the key, nothing was recorded after
    let _ = dying.await;
    w.anthropic.release();
    assert_eq!(w.anthropic.active("apikey_crash"), Some(false));
    clock.advance(Duration::minutes(3)); // the dead invocation's lease has run out
    handler.handle(event).await.expect("the retry completes");
    handler
        .handle(json!({"action": "restore", "scope": "ai/crash", "actor": "op"}))
        .await
        .unwrap();
    assert_eq!(
        w.anthropic.active("apikey_crash"),
        Some(true),
        "restore re-enabled the key spendguard stopped"
    );
}

/// Findings #2c and #31: an org cap and a team cap both hold the team's keys. Restoring
/// either leaves them stopped while the other still holds them; the last restore brings them
/// back, and a withheld secret returns to its own version, never a marker. Both orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_scopes_hold_a_key_until_the_last_restore() {
    for (first, second) in [("ai", "ai/prod"), ("ai/prod", "ai")] {
        let w = KeyGuardWorld::new(PolicySet::default()).await;
        w.anthropic.add("apikey_n1", true);
        let original = r#"{"key_id": "key_n2", "api_key": "sk-proj-nested"}"#;
        let arn = w.secret("nested-openai", original).await;
        w.openai.add_in_project("proj_n", "key_n2");
        w.register(vec![
            anthropic_key("n1", "apikey_n1", "ai/prod/n1"),
            KeySpec {
                secret_arn: Some(arn.clone()),
                project_id: Some("proj_n".into()),
                key_id: Some("key_n2".into()),
                ..key("n2", ProviderKind::Openai, "ai/prod/n2")
            },
        ])
        .await;
        for (scope, incident) in [(first, "inc-a"), (second, "inc-b")] {
            w.handler
                .handle(emergency(scope, incident, vec![Action::DisableKeys]))
                .await
                .unwrap();
        }
        assert_eq!(w.anthropic.active("apikey_n1"), Some(false));
        w.handler
            .handle(json!({"action": "restore", "scope": first, "actor": "op"}))
            .await
            .unwrap();
        assert_eq!(
            w.anthropic.active("apikey_n1"),
            Some(false),
            "{second} still holds the key after {first} is restored"
        );
        assert_ne!(w.current_value(&arn).await, original, "still withheld");
        w.handler
            .handle(json!({"action": "restore", "scope": second, "actor": "op"}))
            .await
            .unwrap();
        assert_eq!(
            w.anthropic.active("apikey_n1"),
            Some(true),
            "back after the last restore ({first} then {second})"
        );
        assert_eq!(
            w.current_value(&arn).await,
            original,
            "the secret is the key again, not a marker ({first} then {second})"
        );
    }
}

/// Finding #26: a late retry of an emergency that was already restored engages nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_delivery_after_its_restore_engages_nothing() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_late", true);
    w.register(vec![anthropic_key("late", "apikey_late", "ai/late/k")])
        .await;
    let event = emergency("ai/late", "inc-late", vec![Action::DisableKeys]);
    w.handler.handle(event.clone()).await.unwrap();
    w.handler
        .handle(json!({"action": "restore", "scope": "ai/late", "actor": "op"}))
        .await
        .unwrap();
    w.handler.handle(event).await.expect("acknowledged");
    let switch = switch_json(&w, "ai/late").await;
    assert_ne!(switch["state"]["state"], "engaged", "{switch}");
    assert_eq!(w.anthropic.active("apikey_late"), Some(true));
}

/// Finding #28: with DynamoDB unavailable, key-guard still stops the keys it knows (the
/// registry it read at start), reports the failure, and records the stop as its own once the
/// store is back, so restore re-enables the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_keys_are_still_stopped_and_the_failure_reported() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_down", true);
    w.register(vec![anthropic_key("down", "apikey_down", "ai/down/k")])
        .await;
    let proxy = FaultProxy::start(Vec::new()).await;
    let handler = w
        .handler_at(
            &proxy.sdk().await,
            Arc::new(spendguard_app::ports::clock::SystemClock),
        )
        .await;
    proxy.set_rules(spendguard_tests::faults::dynamodb_down());
    let event = emergency("ai/down", "inc-down", vec![Action::DisableKeys]);
    let err = handler.handle(event.clone()).await.unwrap_err();
    assert_eq!(
        lambda_runtime::Diagnostic::from(err).error_type,
        "StoreUnavailable"
    );
    assert_eq!(
        w.anthropic.active("apikey_down"),
        Some(false),
        "stopped although the store is down"
    );
    proxy.set_rules(Vec::new());
    handler.handle(event).await.expect("the retry records it");
    let switch = switch_json(&w, "ai/down").await;
    assert_eq!(switch["state"]["state"], "engaged", "{switch}");
    handler
        .handle(json!({"action": "restore", "scope": "ai/down", "actor": "op"}))
        .await
        .unwrap();
    assert_eq!(w.anthropic.active("apikey_down"), Some(true));
}

/// key-guard begun as deployed (`start_with`) while DynamoDB is down: its registry cannot be
/// read at start, so an emergency fails visibly, naming the store; delivered again once the
/// store answers, the same emergency reads the registry and stops the key, and the switch is
/// engaged — a start that met a dead store does not leave key-guard blind to its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_guard_begun_with_the_store_down_stops_its_keys_once_the_store_answers() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.anthropic.add("apikey_begun", true);
    w.register(vec![anthropic_key("begun", "apikey_begun", "ai/begun/k")])
        .await;
    let proxy = FaultProxy::start(spendguard_tests::faults::dynamodb_down()).await;
    let sdk = proxy.sdk().await;
    let started = key_guard::app::start_with(
        &w.config,
        &sdk,
        spendguard_aws::backends::deployed(&sdk, &w.config.table),
    );
    let event = emergency("ai/begun", "inc-begun", vec![Action::DisableKeys]);
    let failed = key_guard::handler::handle_started(&started, event.clone())
        .await
        .expect_err("nothing to stop by and nowhere to record it");
    assert_eq!(
        lambda_runtime::Diagnostic::from(failed).error_type,
        "StoreUnavailable"
    );

    proxy.set_rules(Vec::new());
    key_guard::handler::handle_started(&started, event)
        .await
        .expect("the store answers");
    assert_eq!(
        w.anthropic.active("apikey_begun"),
        Some(false),
        "stopped once the registry could be read"
    );
    let switch = switch_json(&w, "ai/begun").await;
    assert_eq!(switch["state"]["state"], "engaged", "{switch}");
}

/// The Anthropic stand-in refuses what Anthropic's admin API refuses, in Anthropic's error
/// shape: a test that passes against it proves the request was right.
#[tokio::test]
async fn the_anthropic_stand_in_refuses_what_anthropic_refuses() {
    let state = Arc::new(spendguard_tests::admin_apis::ProviderState::default());
    state.add("apikey_std", true);
    let standin = spendguard_tests::admin_apis::anthropic_standin(state.clone()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/organizations/api_keys/apikey_std", standin.url);
    let call = |method: reqwest::Method,
                url: String,
                key: Option<&'static str>,
                version: Option<&'static str>,
                body: Value| {
        let mut r = http.request(method, url).json(&body);
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        if let Some(v) = version {
            r = r.header("anthropic-version", v);
        }
        r.send()
    };
    let admin = Some("sk-ant-admin-test");
    let version = Some("2023-06-01");
    let inactive = json!({"status": "inactive"});
    for (name, method, url, key, version, body, status, kind) in [
        (
            "no version header",
            reqwest::Method::POST,
            url.clone(),
            admin,
            None,
            inactive.clone(),
            400,
            "invalid_request_error",
        ),
        (
            "another version",
            reqwest::Method::POST,
            url.clone(),
            admin,
            Some("2021-01-01"),
            inactive.clone(),
            400,
            "invalid_request_error",
        ),
        (
            "no admin key",
            reqwest::Method::POST,
            url.clone(),
            None,
            version,
            inactive.clone(),
            401,
            "authentication_error",
        ),
        (
            "a non-admin key",
            reqwest::Method::POST,
            url.clone(),
            Some("sk-ant-api03-x"),
            version,
            inactive.clone(),
            401,
            "authentication_error",
        ),
        (
            "an unknown key",
            reqwest::Method::POST,
            format!("{}/v1/organizations/api_keys/apikey_nope", standin.url),
            admin,
            version,
            inactive.clone(),
            404,
            "not_found_error",
        ),
        (
            "a status Anthropic does not know",
            reqwest::Method::POST,
            url.clone(),
            admin,
            version,
            json!({"status": "disabled"}),
            400,
            "invalid_request_error",
        ),
        (
            "another method",
            reqwest::Method::DELETE,
            url.clone(),
            admin,
            version,
            json!({}),
            405,
            "invalid_request_error",
        ),
    ] {
        let response = call(method, url, key, version, body).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["type"], kind, "{name}: {answer}");
    }
    assert!(
        state.writes_for("apikey_std").is_empty(),
        "nothing refused was applied"
    );
    assert_eq!(state.active("apikey_std"), Some(true));
    let ok = call(reqwest::Method::POST, url, admin, version, inactive)
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(state.active("apikey_std"), Some(false));
}

/// The OpenAI stand-in refuses what OpenAI's admin API refuses, in OpenAI's error shape: a
/// wrong path, a key of another project, no or a non-admin key, dollars instead of integer
/// cents, fields OpenAI does not know. What it accepts, it keeps.
#[tokio::test]
async fn the_openai_stand_in_refuses_what_openai_refuses() {
    use spendguard_tests::admin_apis::{OPENAI_ADMIN_KEY, ProviderState, openai_standin};
    let state = Arc::new(ProviderState::default());
    state.add_in_project("proj_std", "key_std");
    state.add_in_project("proj_other", "key_other");
    state.add_rate_limit(
        "proj_std",
        "rl-gpt-4o",
        "gpt-4o",
        json!({"max_requests_per_1_minute": 500, "max_tokens_per_1_minute": 30000}),
    );
    let standin = openai_standin(state.clone()).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", standin.url);
    let key_path = "/v1/organization/projects/proj_std/api_keys/key_std";
    let limit_path = "/v1/organization/projects/proj_std/spend_limit";
    let admin = Some(format!("Bearer {OPENAI_ADMIN_KEY}"));
    let cents =
        |amount: Value| json!({"threshold_amount": amount, "currency": "USD", "interval": "month"});
    /// (what is wrong, method, path, authorization header, body, status OpenAI answers)
    type Case = (
        &'static str,
        &'static str,
        String,
        Option<String>,
        Option<Value>,
        u16,
    );
    let cases: Vec<Case> = vec![
        ("no admin key", "GET", key_path.into(), None, None, 401),
        (
            "a project key",
            "GET",
            key_path.into(),
            Some("Bearer sk-proj-x".into()),
            None,
            401,
        ),
        (
            "the key in Anthropic's header",
            "GET",
            key_path.into(),
            None,
            None,
            401,
        ),
        (
            "a key of another project",
            "DELETE",
            "/v1/organization/projects/proj_std/api_keys/key_other".into(),
            admin.clone(),
            None,
            404,
        ),
        (
            "a path OpenAI does not have",
            "DELETE",
            "/v1/organization/project/proj_std/api_keys/key_std".into(),
            admin.clone(),
            None,
            404,
        ),
        (
            "a method the key has not",
            "POST",
            key_path.into(),
            admin.clone(),
            Some(json!({})),
            404,
        ),
        (
            "an unknown project",
            "GET",
            "/v1/organization/projects/proj_nope/spend_limit".into(),
            admin.clone(),
            None,
            404,
        ),
        (
            "dollars instead of cents",
            "POST",
            limit_path.into(),
            admin.clone(),
            Some(cents(json!(12.5))),
            400,
        ),
        (
            "cents as a string",
            "POST",
            limit_path.into(),
            admin.clone(),
            Some(cents(json!("1250"))),
            400,
        ),
        (
            "below the minimum",
            "POST",
            limit_path.into(),
            admin.clone(),
            Some(cents(json!(0))),
            400,
        ),
        (
            "another currency",
            "POST",
            limit_path.into(),
            admin.clone(),
            Some(json!({"threshold_amount": 100, "currency": "EUR", "interval": "month"})),
            400,
        ),
        (
            "another interval",
            "POST",
            limit_path.into(),
            admin.clone(),
            Some(json!({"threshold_amount": 100, "currency": "USD", "interval": "day"})),
            400,
        ),
        (
            "a field OpenAI does not know",
            "POST",
            limit_path.into(),
            admin.clone(),
            Some(
                json!({"threshold_amount": 100, "currency": "USD", "interval": "month", "hard": true}),
            ),
            400,
        ),
        (
            "no limit to delete",
            "DELETE",
            limit_path.into(),
            admin.clone(),
            None,
            404,
        ),
        (
            "costs without the admin key",
            "GET",
            "/v1/organization/costs?start_time=1761955200".into(),
            None,
            None,
            401,
        ),
        (
            "costs without start_time",
            "GET",
            "/v1/organization/costs?bucket_width=1d".into(),
            admin.clone(),
            None,
            400,
        ),
        (
            "costs with a parameter OpenAI does not know",
            "GET",
            "/v1/organization/costs?start_time=1761955200&currency=usd".into(),
            admin.clone(),
            None,
            400,
        ),
        (
            "a page of rate limits too large",
            "GET",
            "/v1/organization/projects/proj_std/rate_limits?limit=101".into(),
            admin.clone(),
            None,
            400,
        ),
        (
            "rate limits after one that does not exist",
            "GET",
            "/v1/organization/projects/proj_std/rate_limits?after=rl-nope".into(),
            admin.clone(),
            None,
            400,
        ),
        (
            "a rate limit in fractions",
            "POST",
            "/v1/organization/projects/proj_std/rate_limits/rl-gpt-4o".into(),
            admin.clone(),
            Some(json!({"max_requests_per_1_minute": 2.5})),
            400,
        ),
        (
            "a rate limit field the model has not",
            "POST",
            "/v1/organization/projects/proj_std/rate_limits/rl-gpt-4o".into(),
            admin.clone(),
            Some(json!({"max_images_per_1_minute": 5})),
            400,
        ),
    ];
    for (name, method, path, auth, body, status) in cases {
        let mut request = http.request(method.parse().unwrap(), url(&path));
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        if name == "the key in Anthropic's header" {
            request = request.header("x-api-key", OPENAI_ADMIN_KEY);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"]["message"].is_string(), "{name}: {answer}");
        assert!(answer["error"]["type"].is_string(), "{name}: {answer}");
    }
    assert_eq!(
        state.active("key_std"),
        Some(true),
        "nothing refused was carried out"
    );
    assert_eq!(state.active("key_other"), Some(true));
    assert_eq!(state.spend_limit("project:proj_std"), None);
    assert!(state.writes.lock().unwrap().is_empty());

    // and what OpenAI accepts, it keeps
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut r = http
            .request(method.parse().unwrap(), url(path))
            .bearer_auth(OPENAI_ADMIN_KEY);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let set = call("POST", limit_path, Some(cents(json!(1250))))
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 200);
    let read: Value = call("GET", limit_path, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (read["object"].as_str(), read["threshold_amount"].as_u64()),
        (Some("project.spend_limit"), Some(1250))
    );
    let deleted: Value = call("DELETE", limit_path, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(state.spend_limit("project:proj_std"), None);
    let throttled = call(
        "POST",
        "/v1/organization/projects/proj_std/rate_limits/rl-gpt-4o",
        Some(json!({"max_requests_per_1_minute": 50})),
    )
    .await
    .unwrap();
    assert_eq!(throttled.status().as_u16(), 200);
    assert_eq!(
        state.rate_limit("proj_std", "rl-gpt-4o").unwrap()["max_requests_per_1_minute"],
        50
    );
    let gone = call("DELETE", key_path, None).await.unwrap();
    assert_eq!(gone.status().as_u16(), 200);
    assert_eq!(state.active("key_std"), None);
}

/// Anthropic's spend limits take cents as a decimal string: a number (dollars or cents), a
/// decimal point, or no amount are refused; a workspace limit in cents is kept.
#[tokio::test]
async fn the_anthropic_stand_in_takes_spend_limits_only_in_cents_as_a_string() {
    use spendguard_tests::admin_apis::{ANTHROPIC_ADMIN_KEY, ProviderState, anthropic_standin};
    let state = Arc::new(ProviderState::default());
    let standin = anthropic_standin(state.clone()).await;
    let http = reqwest::Client::new();
    let post = |key: &'static str, body: Value| {
        http.post(format!("{}/v1/organizations/spend_limits", standin.url))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let workspace = json!({"type": "workspace", "workspace_id": "wrkspc_1"});
    for (name, key, body, status) in [
        (
            "a non-admin key",
            "sk-ant-api03-x",
            json!({"amount": "5000", "scope": workspace, "period": "monthly"}),
            401,
        ),
        (
            "dollars as a number",
            ANTHROPIC_ADMIN_KEY,
            json!({"amount": 50.0, "scope": workspace, "period": "monthly"}),
            400,
        ),
        (
            "cents as a number",
            ANTHROPIC_ADMIN_KEY,
            json!({"amount": 5000, "scope": workspace, "period": "monthly"}),
            400,
        ),
        (
            "dollars as a string",
            ANTHROPIC_ADMIN_KEY,
            json!({"amount": "50.00", "scope": workspace, "period": "monthly"}),
            400,
        ),
        (
            "no amount",
            ANTHROPIC_ADMIN_KEY,
            json!({"amount": null, "scope": workspace, "period": "monthly"}),
            400,
        ),
        (
            "a weekly workspace limit",
            ANTHROPIC_ADMIN_KEY,
            json!({"amount": "5000", "scope": workspace, "period": "weekly"}),
            400,
        ),
        (
            "a workspace without its id",
            ANTHROPIC_ADMIN_KEY,
            json!({"amount": "5000", "scope": {"type": "workspace"}, "period": "monthly"}),
            400,
        ),
    ] {
        let response = post(key, body).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["type"], "error", "{name}: {answer}");
    }
    assert_eq!(state.spend_limit("workspace:wrkspc_1"), None);
    let ok = post(
        ANTHROPIC_ADMIN_KEY,
        json!({"amount": "5000", "scope": workspace, "period": "monthly"}),
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(state.spend_limit("workspace:wrkspc_1"), Some(5000));

    // the list and the delete: the admin key, Anthropic's filters, an id that exists
    let request = |method: reqwest::Method, path: &str, key: &'static str| {
        http.request(method, format!("{}{path}", standin.url))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .send()
    };
    let list = "/v1/organizations/spend_limits?scope_type=workspace&workspace_id=wrkspc_1";
    for (name, method, path, key, status) in [
        (
            "a list with a non-admin key",
            reqwest::Method::GET,
            list.to_string(),
            "sk-ant-api03-x",
            401,
        ),
        (
            "a scope type Console organisations do not have",
            reqwest::Method::GET,
            "/v1/organizations/spend_limits?scope_type=seat_tier".to_string(),
            ANTHROPIC_ADMIN_KEY,
            400,
        ),
        (
            "a delete with a non-admin key",
            reqwest::Method::DELETE,
            "/v1/organizations/spend_limits/spl_workspace_wrkspc_1".to_string(),
            "sk-ant-api03-x",
            401,
        ),
        (
            "a delete of a limit that does not exist",
            reqwest::Method::DELETE,
            "/v1/organizations/spend_limits/spl_nope".to_string(),
            ANTHROPIC_ADMIN_KEY,
            404,
        ),
    ] {
        let response = request(method, &path, key).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
    }
    let listed: Value = request(reqwest::Method::GET, list, ANTHROPIC_ADMIN_KEY)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["amount"], "5000", "{listed}");
    let id = listed["data"][0]["id"].as_str().unwrap().to_string();
    let deleted = request(
        reqwest::Method::DELETE,
        &format!("/v1/organizations/spend_limits/{id}"),
        ANTHROPIC_ADMIN_KEY,
    )
    .await
    .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    assert_eq!(state.spend_limit("workspace:wrkspc_1"), None);
}

/// An OpenAI key that allows deletion is deleted at OpenAI, on its own project's path with the
/// admin key (the stand-in refuses anything else), and restore says it cannot come back. A
/// key registered under a project OpenAI does not have is not "deleted": the stop fails
/// visibly, naming it (before, a 404 passed for a deletion done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_key_allowed_deletion_is_deleted_at_openai_and_a_wrong_project_fails_loudly() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.openai.add_in_project("proj_d", "key_d");
    w.openai.add_in_project("proj_e", "key_e");
    w.register(vec![
        KeySpec {
            project_id: Some("proj_d".into()),
            key_id: Some("key_d".into()),
            allow_delete: true,
            ..key("dev-d", ProviderKind::Openai, "dev/d")
        },
        KeySpec {
            project_id: Some("proj_typo".into()), // it is in proj_e
            key_id: Some("key_e".into()),
            allow_delete: true,
            ..key("dev-e", ProviderKind::Openai, "dev/e")
        },
    ])
    .await;

    let deleted = w
        .handler
        .handle(json!({"action": "disable", "scope": "dev/d", "reason": "leak", "actor": "alice"}))
        .await
        .unwrap();
    assert_eq!(deleted["switch"], "engaged");
    assert_eq!(w.openai.active("key_d"), None, "deleted at OpenAI");
    assert_eq!(w.openai.writes_for("key_d"), ["deleted"]);
    let restored = w
        .handler
        .handle(json!({"action": "restore", "scope": "dev/d", "actor": "alice"}))
        .await
        .unwrap()
        .to_string();
    assert!(
        restored.contains("deleted at OpenAI (permanent): issue a new key"),
        "{restored}"
    );

    let failed = w
        .handler
        .handle(json!({"action": "disable", "scope": "dev/e", "reason": "leak", "actor": "alice"}))
        .await;
    let why = format!("{failed:?}");
    assert!(
        failed.is_err(),
        "a stop that reached nothing is an error: {why}"
    );
    // the key's own deletion failed (not only the project's spend limit)
    assert!(
        why.contains("key dev-e: OpenAI has no project `proj_typo`"),
        "{why}"
    );
    assert_eq!(w.openai.active("key_e"), Some(true));
}

/// Issue 22 part 6: an IAM user's access key off leaves the user's Bedrock API keys and the
/// sessions made from the key working. The stop sets the Bedrock keys Inactive and denies
/// tokens issued before it; restore turns back on exactly the Bedrock keys it turned off (not
/// one an operator had off already) and lifts the deny.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_stop_also_stops_the_users_bedrock_keys_and_older_sessions_and_restore_undoes_exactly_that()
 {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let user = aws::unique("bedrock");
    let (access_key, _) = w.iam_key(&user).await;
    let in_use = w.bedrock_key(&user).await;
    let parked = w.bedrock_key(&user).await;
    w.set_bedrock_key(&user, &parked, false).await; // off for another reason
    w.register(vec![KeySpec {
        user: Some(user.clone()),
        key_id: Some(access_key.clone()),
        ..key("iam-b", ProviderKind::AwsIam, "team/b/aws")
    }])
    .await;
    let policy = format!("spendguard-revoke-sessions-{access_key}");
    let stopped_from = Utc::now();

    w.handler
        .handle(emergency(
            "team/b",
            "inc-bedrock",
            vec![Action::DisableKeys],
        ))
        .await
        .unwrap();
    assert!(!w.iam_active(&user, &access_key).await);
    assert!(
        !w.bedrock_active(&user, &in_use).await,
        "the Bedrock key is off"
    );
    let deny = w
        .user_policy(&user, &policy)
        .await
        .expect("older sessions are denied");
    let statement = &deny["Statement"][0];
    assert_eq!(
        (&statement["Effect"], &statement["Action"]),
        (&json!("Deny"), &json!("*"))
    );
    let cut_off: chrono::DateTime<Utc> =
        statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert!(
        cut_off > stopped_from && cut_off <= Utc::now() + Duration::seconds(1),
        "tokens issued up to the stop are denied: {cut_off}"
    );
    let KeyStatus::DisabledBySpendguard { measures, .. } = status(&w, "iam-b").await else {
        panic!("not recorded as spendguard's stop");
    };
    assert!(
        measures.contains(
            &spendguard_domain::keys::Measure::ServiceCredentialsDisabled {
                ids: vec![in_use.clone()]
            }
        ),
        "{measures:?}"
    );

    w.handler
        .handle(json!({"action": "restore", "scope": "team/b", "actor": "op"}))
        .await
        .unwrap();
    assert!(w.iam_active(&user, &access_key).await);
    assert!(w.bedrock_active(&user, &in_use).await, "turned back on");
    assert!(
        !w.bedrock_active(&user, &parked).await,
        "the key that was off before stays off"
    );
    assert_eq!(
        w.user_policy(&user, &policy).await,
        None,
        "the deny is lifted"
    );
}

/// Which Bedrock keys were on is known only while the stop runs: it is recorded before any is
/// turned off, so a stop that dies right after still has restore turn them back on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_that_dies_after_turning_off_bedrock_keys_still_has_them_restored() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let user = aws::unique("bedrock-crash");
    let (access_key, _) = w.iam_key(&user).await;
    let bedrock = w.bedrock_key(&user).await;
    w.register(vec![KeySpec {
        user: Some(user.clone()),
        key_id: Some(access_key.clone()),
        ..key("iam-c", ProviderKind::AwsIam, "team/c/aws")
    }])
    .await;
    // the next call after the Bedrock keys hangs: the invocation dies there
    let proxy = FaultProxy::start(vec![Rule {
        operation: "PutUserPolicy",
        body_contains: None,
        every: 1,
        limit: 1,
        fault: Fault::Delay(std::time::Duration::from_secs(30)),
    }])
    .await;
    let clock = Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let handler = Arc::new(w.handler_at(&proxy.sdk().await, clock.clone()).await);
    let event = emergency("team/c", "inc-bedrock-crash", vec![Action::DisableKeys]);
    let h = handler.clone();
    let e = event.clone();
    let dying = tokio::spawn(async move { h.handle(e).await });
    while proxy.total_injected() == 0 && !dying.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !dying.is_finished(),
        "the stop reached the deny of older sessions"
    );
    dying.abort(); // Lambda's timeout
    let _ = dying.await;
    assert!(!w.bedrock_active(&user, &bedrock).await);
    clock.advance(Duration::minutes(3)); // the dead invocation's lease has run out
    handler.handle(event).await.expect("the retry completes");
    handler
        .handle(json!({"action": "restore", "scope": "team/c", "actor": "op"}))
        .await
        .unwrap();
    assert!(w.iam_active(&user, &access_key).await);
    assert!(
        w.bedrock_active(&user, &bedrock).await,
        "restore turned back on the Bedrock key the dead stop turned off"
    );
    assert_eq!(
        w.user_policy(&user, &format!("spendguard-revoke-sessions-{access_key}"))
            .await,
        None
    );
}

/// Review finding: switching the access key off by hand is a common first response to a leak,
/// and left the user's Bedrock keys and older sessions untouched (the key was only "disabled
/// elsewhere"). The stop now takes those measures too, and the restore undoes only them: the
/// access key stays off, as its owner left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_key_already_off_still_has_its_users_bedrock_keys_and_sessions_stopped() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let user = aws::unique("bedrock-off");
    let (access_key, _) = w.iam_key(&user).await;
    let bedrock = w.bedrock_key(&user).await;
    w.iam
        .update_access_key()
        .user_name(&user)
        .access_key_id(&access_key)
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .unwrap();
    w.register(vec![KeySpec {
        user: Some(user.clone()),
        key_id: Some(access_key.clone()),
        ..key("iam-off", ProviderKind::AwsIam, "team/o/aws")
    }])
    .await;
    let policy = format!("spendguard-revoke-sessions-{access_key}");
    w.handler
        .handle(emergency("team/o", "inc-off", vec![Action::DisableKeys]))
        .await
        .unwrap();
    assert!(
        !w.bedrock_active(&user, &bedrock).await,
        "the Bedrock key is off"
    );
    assert!(
        w.user_policy(&user, &policy).await.is_some(),
        "older sessions denied"
    );
    w.handler
        .handle(json!({"action": "restore", "scope": "team/o", "actor": "op"}))
        .await
        .unwrap();
    assert!(w.bedrock_active(&user, &bedrock).await);
    assert_eq!(w.user_policy(&user, &policy).await, None);
    assert!(
        !w.iam_active(&user, &access_key).await,
        "the access key stays off: spendguard did not switch it off"
    );
    assert!(matches!(
        status(&w, "iam-off").await,
        KeyStatus::DisabledElsewhere { .. }
    ));
}

/// moto has no service-specific credentials: `tests/moto/service_credentials.py` adds them,
/// and refuses what IAM refuses (an unknown user or credential, a service IAM does not issue
/// them for, a third credential for one service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_credential_stand_in_refuses_what_iam_refuses() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let user = aws::unique("ssc");
    w.iam_key(&user).await;
    let unsupported = w
        .iam
        .create_service_specific_credential()
        .user_name(&user)
        .service_name("s3.amazonaws.com")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&unsupported), "NotSupportedService");
    let nobody = w
        .iam
        .list_service_specific_credentials()
        .user_name(aws::unique("nobody"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&nobody), "NoSuchEntity");
    w.bedrock_key(&user).await;
    w.bedrock_key(&user).await;
    let third = w
        .iam
        .create_service_specific_credential()
        .user_name(&user)
        .service_name("bedrock.amazonaws.com")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&third), "LimitExceeded");
    let unknown = w
        .iam
        .update_service_specific_credential()
        .user_name(&user)
        .service_specific_credential_id("ACCA0000000000000000")
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&unknown), "NoSuchEntity");
}

/// The error code IAM answered.
fn code<E: aws_sdk_iam::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("?").to_string()
}

/// key-guard's start waits on no read (issue 28): its secrets and key registry are read while
/// the runtime waits for the first event. An event that cannot get an admin key fails naming
/// the secret (never a value); once the secret exists a later event starts key-guard, without a
/// restart (tried again at most every 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_guard_without_its_admin_key_fails_each_event_naming_it_until_it_exists() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let missing_name = aws::unique("anthropic-admin-not-yet-created");
    let config = key_guard::config::Config {
        anthropic_admin_key_arn: Some(missing_name.clone()),
        ..w.config.clone()
    };
    let clock = Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let backends = spendguard_app::backends::Backends {
        clock: clock.clone(),
        ..spendguard_aws::backends::deployed(&w.sdk, &config.table)
    };
    let started = key_guard::app::start_with(&config, &w.sdk, backends);
    let status = || json!({"action": "status", "scope": "openai/prod"});

    let failed = key_guard::handler::handle_started(&started, status())
        .await
        .expect_err("no admin key, no key-guard");
    assert!(
        matches!(&failed, KeyGuardError::NotStarted(e) if e.reference == missing_name),
        "{failed:?}"
    );
    let diagnostic = lambda_runtime::Diagnostic::from(failed);
    assert_eq!(diagnostic.error_type, "SecretUnavailable");
    assert!(
        diagnostic.error_message.contains(&missing_name),
        "{}",
        diagnostic.error_message
    );

    w.secrets
        .create_secret()
        .name(&missing_name)
        .secret_string(spendguard_tests::admin_apis::ANTHROPIC_ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert!(
        key_guard::handler::handle_started(&started, status())
            .await
            .is_err(),
        "not started again within the retry interval"
    );
    clock.advance(spendguard_app::refreshing::MISS_INTERVAL);
    key_guard::handler::handle_started(&started, status())
        .await
        .expect("started once the secret exists");
}

/// With Secrets Manager holding its answer back, key-guard is begun all the same; its first
/// event takes the reads begun at start once answered, and no secret is read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_guard_starts_without_waiting_for_its_secrets_and_reads_each_once() {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let secrets_manager = spendguard_tests::aws::secrets_manager_standin(
        vec![
            (
                w.config
                    .openai_admin_key_arn
                    .clone()
                    .expect("an OpenAI admin key"),
                spendguard_tests::admin_apis::OPENAI_ADMIN_KEY.into(),
            ),
            (
                w.config
                    .anthropic_admin_key_arn
                    .clone()
                    .expect("an Anthropic admin key"),
                spendguard_tests::admin_apis::ANTHROPIC_ADMIN_KEY.into(),
            ),
        ],
        held,
    )
    .await;
    let vault_client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&w.sdk)
            .endpoint_url(&secrets_manager.url)
            .build(),
    );
    let backends = spendguard_app::backends::Backends {
        vault: Arc::new(spendguard_aws::secrets::SecretsManagerVault::new(
            vault_client,
        )),
        ..spendguard_aws::backends::deployed(&w.sdk, &w.config.table)
    };
    // a plain function: nothing in it can wait on the held reads
    let started = key_guard::app::start_with(&w.config, &w.sdk, backends);
    gate.add_permits(1);
    for _ in 0..2 {
        key_guard::handler::handle_started(
            &started,
            json!({"action": "status", "scope": "openai/prod"}),
        )
        .await
        .expect("started");
    }
    let reads: Vec<_> = secrets_manager
        .received()
        .into_iter()
        .filter(|r| r.header("x-amz-target") == Some("secretsmanager.GetSecretValue"))
        .map(|r| r.body)
        .collect();
    assert_eq!(reads.len(), 2, "each admin key read once: {reads:?}");
}
