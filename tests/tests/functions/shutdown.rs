//! Shutdown of opted-in resources end to end: key-guard's production wiring against moto
//! (Lambda, ECS, EC2, IAM, the Resource Groups Tagging API, DynamoDB) and local stand-ins for
//! Google's token endpoint, Cloud Billing and IAM. Each AWS test works in its own scope, so
//! resources other tests tag are outside it, like untagged ones.

use serde_json::{Value, json};
use spendguard_app::flows::shutdown::DENY_POLICY_NAME;
use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::MarkerStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_domain::budget::Action;
use spendguard_domain::period::YearMonth;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::settings::{GcpProject, ShutdownPolicy};
use spendguard_tests::aws;
use spendguard_tests::cloud::{AWS_DENY_ALL, Cloud, Group, in_region};
use spendguard_tests::google::Google;
use spendguard_tests::keyguard::KeyGuardWorld;
use spendguard_tests::webhook::python;

/// An alert for `scope` ordering a shutdown, as SNS delivers it to key-guard.
fn shutdown_alert(scope: &str, alert_id: &str) -> Value {
    let path = format!(
        "{}/../events/alert-fanout/emergency.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut alert: Value =
        serde_json::from_str(fixture["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    alert["scope"] = json!(scope);
    alert["alert_id"] = json!(alert_id);
    alert["actions"] = json!([Action::Shutdown]);
    let mut event = fixture.clone();
    event["Records"][0]["Sns"]["Message"] = json!(alert.to_string());
    event
}

async fn world(deny_roles: Vec<String>) -> KeyGuardWorld {
    let mut policy = PolicySet::default();
    policy.settings.shutdown = ShutdownPolicy {
        deny_roles,
        ..ShutdownPolicy::default()
    };
    KeyGuardWorld::new(policy).await
}

/// key-guard with `[shutdown] regions` set (the function's own region is us-east-1).
async fn world_in(regions: &[&str]) -> KeyGuardWorld {
    let mut policy = PolicySet::default();
    policy.settings.shutdown.regions = regions.iter().map(|r| r.to_string()).collect();
    KeyGuardWorld::new(policy).await
}

/// The outcome a report gives each resource, by id (ARN or its last segment).
fn outcomes(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["resources"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| {
            (
                name(r["id"].as_str().unwrap()),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn name(arn: &str) -> String {
    arn.rsplit(['/', ':']).next().unwrap().to_string()
}

async fn audit_actions(w: &KeyGuardWorld, action: &str) -> Vec<Value> {
    let month = YearMonth::of(chrono::Utc::now().date_naive());
    w.store
        .audit_log(month, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .map(|e| e.detail)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_then_restore_returns_every_opted_in_resource_to_its_recorded_state() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    cloud.ensure_deny_all().await;
    let scope = format!("aws/{}", aws::unique("batch"));
    let inside = format!("{scope}/etl");
    let elsewhere = format!("aws/{}", aws::unique("web"));
    // opted in under the scope
    let capped = cloud.function(Some(&scope), Some(7)).await;
    let pooled = cloud.function(Some(&inside), None).await;
    let service = cloud.service(Some(&scope), 3).await;
    let running = cloud.instance(Some(&scope)).await;
    let idle = cloud.instance(Some(&scope)).await;
    cloud.stop_instance(&idle).await;
    let role = cloud.role(Some(&scope)).await;
    // not opted in, or in another scope: never touched
    let untagged_fn = cloud.function(None, Some(5)).await;
    let other_fn = cloud.function(Some(&elsewhere), None).await;
    let untagged_service = cloud.service(None, 2).await;
    let untagged_instance = cloud.instance(None).await;
    let untagged_role = cloud.role(None).await;
    // a role named in the file that does not exist holds nothing up
    let w = world(vec![
        role.clone(),
        untagged_role.clone(),
        aws::unique("gone"),
    ])
    .await;

    // the dry run lists what would change and changes nothing
    let plan = w
        .handler
        .handle(json!({"action": "shutdown", "scope": scope, "actor": "ops@example.com", "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(plan["dry_run"], json!(true));
    let mut expected = vec![
        (name(&capped), "would_stop".to_string()),
        (name(&pooled), "would_stop".into()),
        (name(&service), "would_stop".into()),
        (running.clone(), "would_stop".into()),
        (idle.clone(), "was_not_running".into()),
        (role.clone(), "would_stop".into()),
    ];
    expected.sort();
    assert_eq!(outcomes(&plan), expected, "{plan:#}");
    let capped_plan = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(capped))
        .unwrap();
    assert_eq!(
        capped_plan["detail"],
        json!("reserved concurrency 7 -> reserved concurrency 0")
    );
    assert_eq!(cloud.reserved(&capped).await, Some(7));
    assert_eq!(cloud.desired(&service).await, 3);
    assert_eq!(cloud.instance_state(&running).await, "running");
    assert!(cloud.role_policies(&role).await.is_empty());
    assert!(
        w.store
            .kill_switch(&Scope::parse(&scope).unwrap())
            .await
            .unwrap()
            .is_none(),
        "a dry run engages nothing"
    );

    // the alert's shutdown stops exactly the opted-in resources under the scope
    let report = w
        .handler
        .handle(shutdown_alert(&scope, "alert-shutdown-1"))
        .await
        .unwrap();
    let report = &report["alerts"][0];
    assert_eq!(report["switch"], json!("engaged"));
    let mut stopped = vec![
        (name(&capped), "stopped".to_string()),
        (name(&pooled), "stopped".into()),
        (name(&service), "stopped".into()),
        (running.clone(), "stopped".into()),
        (idle.clone(), "was_not_running".into()),
        (role.clone(), "stopped".into()),
    ];
    stopped.sort();
    assert_eq!(outcomes(report), stopped, "{report:#}");
    assert_eq!(cloud.reserved(&capped).await, Some(0));
    assert_eq!(cloud.reserved(&pooled).await, Some(0));
    assert_eq!(cloud.desired(&service).await, 0);
    assert_eq!(cloud.instance_state(&running).await, "stopped");
    // AWS's managed deny-all is attached; no inline policy is written (finding #8)
    assert_eq!(cloud.attached_policies(&role).await, vec![AWS_DENY_ALL]);
    assert!(cloud.role_policies(&role).await.is_empty());
    let untouched = async || {
        assert_eq!(cloud.reserved(&untagged_fn).await, Some(5));
        assert_eq!(cloud.reserved(&other_fn).await, None);
        assert_eq!(cloud.desired(&untagged_service).await, 2);
        assert_eq!(cloud.instance_state(&untagged_instance).await, "running");
        assert!(cloud.role_policies(&untagged_role).await.is_empty());
        assert!(cloud.attached_policies(&untagged_role).await.is_empty());
    };
    untouched().await;
    // every step is in the audit log, with the state it recorded
    let audit = audit_actions(&w, "resource_stopped").await;
    let capped_entry = audit
        .iter()
        .find(|d| d["resource"] == json!(capped))
        .unwrap();
    assert_eq!(
        capped_entry["before"],
        json!({"state": "concurrency", "reserved": 7})
    );

    // a redelivery of the alert changes nothing more
    let again = w
        .handler
        .handle(shutdown_alert(&scope, "alert-shutdown-1"))
        .await
        .unwrap();
    assert!(
        outcomes(&again["alerts"][0])
            .iter()
            .all(|(_, o)| o == "already_stopped" || o == "was_not_running"),
        "{again:#}"
    );

    // restore puts back what was recorded, and only that
    let restored = w
        .handler
        .handle(json!({"action": "restore", "scope": scope, "actor": "ops@example.com"}))
        .await
        .unwrap();
    let mut back: Vec<(String, String)> = [
        name(&capped),
        name(&pooled),
        name(&service),
        running.clone(),
        role.clone(),
    ]
    .into_iter()
    .map(|n| (n, "restored".to_string()))
    .collect();
    back.sort();
    assert_eq!(outcomes(&restored), back, "{restored:#}");
    assert_eq!(cloud.reserved(&capped).await, Some(7));
    assert_eq!(cloud.reserved(&pooled).await, None);
    assert_eq!(cloud.desired(&service).await, 3);
    assert_eq!(cloud.instance_state(&running).await, "running");
    assert_eq!(
        cloud.instance_state(&idle).await,
        "stopped",
        "it was not running before"
    );
    assert!(cloud.role_policies(&role).await.is_empty());
    assert!(cloud.attached_policies(&role).await.is_empty());
    untouched().await;
    assert_eq!(audit_actions(&w, "resource_restored").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_changed_by_hand_after_the_shutdown_is_left_as_the_operator_set_it() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("jobs"));
    let function = cloud.function(Some(&scope), Some(20)).await;
    let service = cloud.service(Some(&scope), 4).await;
    let instance = cloud.instance(Some(&scope)).await;
    let w = world(Vec::new()).await;
    w.handler
        .handle(json!({"action": "shutdown", "scope": scope, "reason": "runaway batch", "actor": "ops@example.com"}))
        .await
        .unwrap();
    assert_eq!(cloud.desired(&service).await, 0);

    // an operator brings part of it back by hand, differently
    cloud.set_reserved(&function, Some(2)).await;
    cloud.set_desired(&service, 1).await;
    let report = w
        .handler
        .handle(json!({"action": "restore", "scope": scope, "actor": "ops@example.com"}))
        .await
        .unwrap();
    let mut expected = vec![
        (name(&function), "changed_by_hand".to_string()),
        (name(&service), "changed_by_hand".into()),
        (instance.clone(), "restored".into()),
    ];
    expected.sort();
    assert_eq!(outcomes(&report), expected, "{report:#}");
    let note = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(service))
        .unwrap()["detail"]
        .clone();
    assert_eq!(
        note,
        json!("now desired count 1 (spendguard left desired count 0): left as the operator set it")
    );
    assert_eq!(cloud.reserved(&function).await, Some(2));
    assert_eq!(cloud.desired(&service).await, 1);
    assert_eq!(cloud.instance_state(&instance).await, "running");
    // and a second restore has nothing left to do
    let again = w
        .handler
        .handle(json!({"action": "restore", "scope": scope, "actor": "ops@example.com"}))
        .await
        .unwrap();
    assert!(outcomes(&again).is_empty(), "{again:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_shutdowns_at_once_act_once_and_restore_what_was_there_before() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("race"));
    let function = cloud.function(Some(&scope), Some(9)).await;
    let service = cloud.service(Some(&scope), 2).await;
    let instance = cloud.instance(Some(&scope)).await;
    let w = world(Vec::new()).await;
    let manual = json!({"action": "shutdown", "scope": scope, "reason": "bill spike", "actor": "ops@example.com"});
    let (a, b) = tokio::join!(
        w.handler.handle(shutdown_alert(&scope, "alert-race")),
        w.handler.handle(manual.clone()),
    );
    // one of them may find the other still at work (and fail, to be retried); retry both
    for r in [&a, &b] {
        if let Err(e) = r {
            assert!(e.to_string().contains("still in progress elsewhere"), "{e}");
        }
    }
    w.handler.handle(manual).await.unwrap();
    let stops = audit_actions(&w, "resource_stopped").await;
    for id in [&function, &service] {
        let acted: Vec<&Value> = stops
            .iter()
            .filter(|d| d["resource"] == json!(id) && d["outcome"]["outcome"] == json!("stopped"))
            .collect();
        assert_eq!(acted.len(), 1, "{id} stopped once: {stops:#?}");
    }
    assert_eq!(cloud.reserved(&function).await, Some(0));
    assert_eq!(cloud.desired(&service).await, 0);
    assert_eq!(cloud.instance_state(&instance).await, "stopped");
    // the state recorded is the one before the first shutdown, not the second's view of it
    w.handler
        .handle(json!({"action": "restore", "scope": scope, "actor": "ops@example.com"}))
        .await
        .unwrap();
    assert_eq!(cloud.reserved(&function).await, Some(9));
    assert_eq!(cloud.desired(&service).await, 2);
    assert_eq!(cloud.instance_state(&instance).await, "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stop_keeps_the_switch_engaged_and_a_retry_finishes_only_what_is_missing() {
    use spendguard_tests::faults::{Fault, FaultProxy, Rule};
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("partial"));
    let function = cloud.function(Some(&scope), None).await;
    let instance = cloud.instance(Some(&scope)).await;
    let w = world(Vec::new()).await;
    // every attempt of one call fails (a fault absorbed by a retry is not a failing stop)
    let proxy = FaultProxy::start(vec![Rule {
        operation: "StopInstances",
        body_contains: None,
        every: 1,
        limit: 3,
        fault: Fault::ServerError,
    }])
    .await;
    let through_proxy = key_guard::app::handler(&w.config, &proxy.sdk().await)
        .await
        .unwrap();
    let err = through_proxy
        .handle(shutdown_alert(&scope, "alert-partial"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&instance) && text.contains("ec2:StopInstances"),
        "{text}"
    );
    assert_eq!(cloud.reserved(&function).await, Some(0));
    assert_eq!(cloud.instance_state(&instance).await, "running");
    let switch = w
        .store
        .kill_switch(&Scope::parse(&scope).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        switch.value.state,
        spendguard_domain::records::SwitchState::Engaged { .. }
    ));
    assert_eq!(audit_actions(&w, "resource_stop_failed").await.len(), 1);

    // SNS delivers again: only the instance is left to stop
    let retry = through_proxy
        .handle(shutdown_alert(&scope, "alert-partial"))
        .await
        .unwrap();
    let mut expected = vec![
        (name(&function), "already_stopped".to_string()),
        (instance.clone(), "stopped".into()),
    ];
    expected.sort();
    assert_eq!(outcomes(&retry["alerts"][0]), expected, "{retry:#}");
    assert_eq!(cloud.instance_state(&instance).await, "stopped");
}

/// key-guard with a Google credential, against the Google stand-ins.
async fn gcp_world(google: &Google, key_file: &str, projects: Vec<GcpProject>) -> KeyGuardWorld {
    let mut w = world(Vec::new()).await;
    let mut policy = w.store.load_policy().await.unwrap();
    policy.settings.shutdown.gcp = projects;
    w.store.put_policy(&policy).await.unwrap();
    w.config.gcp_credential_arn = Some(w.secret("gcp-shutdown", key_file).await);
    w.config.gcp_billing_api_url = google.url.clone();
    w.config.gcp_iam_api_url = google.url.clone();
    w.handler = key_guard::app::handler(&w.config, &w.sdk).await.unwrap();
    w
}

const TRAINER: &str = "trainer@ml-sandbox-123.iam.gserviceaccount.com";
const ACCOUNT: &str = "billingAccounts/01ABCD-234567-89EFGH";

fn sandbox() -> GcpProject {
    GcpProject {
        project: "ml-sandbox-123".into(),
        scope: Scope::parse("gcp/ml-sandbox").unwrap(),
        unlink_billing: true,
        service_accounts: vec![TRAINER.into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_billing_is_unlinked_and_keys_disabled_then_restored_as_recorded() {
    let google = Google::start().await;
    google.project("ml-sandbox-123", ACCOUNT);
    google.project("web-prod-456", ACCOUNT);
    let live = google.key("ml-sandbox-123", TRAINER, "k1", false);
    let retired = google.key("ml-sandbox-123", TRAINER, "k2", true);
    let other = google.key(
        "ml-sandbox-123",
        "ci@ml-sandbox-123.iam.gserviceaccount.com",
        "k3",
        false,
    );
    let w = gcp_world(&google, &google.key_file, vec![sandbox()]).await;

    let plan = w
        .handler
        .handle(json!({"action": "shutdown", "scope": "gcp", "actor": "ops@example.com", "dry_run": true}))
        .await
        .unwrap();
    let mut expected = vec![
        ("billingInfo".to_string(), "would_stop".to_string()),
        ("k1".into(), "would_stop".into()),
        ("k2".into(), "was_not_running".into()),
    ];
    expected.sort();
    assert_eq!(outcomes(&plan), expected, "{plan:#}");
    assert_eq!(
        plan["resources"][0]["detail"],
        json!(format!("billing by {ACCOUNT} -> billing unlinked")),
        "{plan:#}"
    );
    assert_eq!(google.state.billing_of("ml-sandbox-123"), ACCOUNT);

    let report = w
        .handler
        .handle(shutdown_alert("gcp", "alert-gcp-1"))
        .await
        .unwrap();
    let mut stopped = vec![
        ("billingInfo".to_string(), "stopped".to_string()),
        ("k1".into(), "stopped".into()),
        ("k2".into(), "was_not_running".into()),
    ];
    stopped.sort();
    assert_eq!(outcomes(&report["alerts"][0]), stopped, "{report:#}");
    assert_eq!(google.state.billing_of("ml-sandbox-123"), "");
    assert!(google.state.disabled(&live));
    // not named: untouched
    assert_eq!(google.state.billing_of("web-prod-456"), ACCOUNT);
    assert!(!google.state.disabled(&other));

    let restored = w
        .handler
        .handle(json!({"action": "restore", "scope": "gcp", "actor": "ops@example.com"}))
        .await
        .unwrap();
    let mut back = vec![
        ("billingInfo".to_string(), "restored".to_string()),
        ("k1".into(), "restored".into()),
    ];
    back.sort();
    assert_eq!(outcomes(&restored), back, "{restored:#}");
    assert_eq!(google.state.billing_of("ml-sandbox-123"), ACCOUNT);
    assert!(!google.state.disabled(&live));
    assert!(
        google.state.disabled(&retired),
        "it was disabled before: it stays so"
    );
    // one token, signed once and cached, served the dry run, the shutdown and the restore
    assert_eq!(google.state.tokens.lock().unwrap().len(), 1);
    assert!(google.state.refused.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_credential_that_is_wrong_or_missing_fails_the_shutdown_clearly() {
    let google = Google::start().await;
    google.project("ml-sandbox-123", ACCOUNT);
    // a key file signed by another key: Google refuses the assertion, nothing changes
    let impostor = python(json!({"op": "rsa-key", "kid": "other"}));
    let mut forged: Value = serde_json::from_str(&google.key_file).unwrap();
    forged["private_key"] = impostor["private_pem"].clone();
    spendguard_tests::logs::secret_used(impostor["private_pem"].as_str().unwrap());
    let w = gcp_world(&google, &forged.to_string(), vec![sandbox()]).await;
    let err = w
        .handler
        .handle(shutdown_alert("gcp", "alert-gcp-forged"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Google token endpoint: HTTP 400: invalid_grant Invalid JWT Signature"),
        "{text}"
    );
    assert_eq!(google.state.billing_of("ml-sandbox-123"), ACCOUNT);
    assert_eq!(google.state.refused.lock().unwrap().len(), 1);
    let switch = w
        .store
        .kill_switch(&Scope::parse("gcp").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            switch.value.state,
            spendguard_domain::records::SwitchState::Engaged { .. }
        ),
        "the switch stays engaged"
    );

    // a project named without any credential configured is an error, not a silent no-op
    let w = world(Vec::new()).await;
    let mut policy = w.store.load_policy().await.unwrap();
    policy.settings.shutdown.gcp = vec![sandbox()];
    w.store.put_policy(&policy).await.unwrap();
    let err = w
        .handler
        .handle(shutdown_alert("gcp", "alert-gcp-none"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no Google credential (SPENDGUARD_GCP_CREDENTIAL_ARN)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spendguard_never_stops_its_own_functions() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("self"));
    let worker = cloud.function(Some(&scope), Some(3)).await;
    // the stack's functions, tagged by mistake (a tag on the whole stack, say)
    let stack = aws::unique("spendguard");
    let key_guard = cloud
        .named_function(&format!("{stack}-key-guard"), Some(&scope))
        .await;
    let budget_check = cloud
        .named_function(&format!("{stack}-budget-check"), Some(&scope))
        .await;
    let mut w = world(Vec::new()).await;
    w.config.own_function_name = Some(format!("{stack}-key-guard"));
    w.handler = key_guard::app::handler(&w.config, &w.sdk).await.unwrap();
    let report = w
        .handler
        .handle(json!({"action": "shutdown", "scope": scope, "reason": "runaway", "actor": "ops@example.com"}))
        .await
        .unwrap();
    let mut expected = vec![
        (name(&worker), "stopped".to_string()),
        (name(&key_guard), "protected".into()),
        (name(&budget_check), "protected".into()),
    ];
    expected.sort();
    assert_eq!(outcomes(&report), expected, "{report:#}");
    assert_eq!(cloud.reserved(&key_guard).await, None);
    assert_eq!(cloud.reserved(&budget_check).await, None);
    assert_eq!(cloud.reserved(&worker).await, Some(0));
}

/// A second incident that joins a resource whose first stop was recorded but never carried
/// out (its call failed) stops it, rather than reporting it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_joining_a_stop_that_never_happened_carries_it_out() {
    use spendguard_tests::faults::{Fault, FaultProxy, Rule};
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("join"));
    let instance = cloud.instance(Some(&scope)).await;
    let w = world(Vec::new()).await;
    // every attempt of one call fails (a fault absorbed by a retry is not a failing stop)
    let proxy = FaultProxy::start(vec![Rule {
        operation: "StopInstances",
        body_contains: None,
        every: 1,
        limit: 3,
        fault: Fault::ServerError,
    }])
    .await;
    let through_proxy = key_guard::app::handler(&w.config, &proxy.sdk().await)
        .await
        .unwrap();
    through_proxy
        .handle(shutdown_alert(&scope, "alert-first"))
        .await
        .unwrap_err();
    assert_eq!(cloud.instance_state(&instance).await, "running");
    // an operator's shutdown of the same scope, before SNS retries the first
    let manual = json!({"action": "shutdown", "scope": scope, "reason": "bill spike", "actor": "ops@example.com"});
    let report = through_proxy.handle(manual).await.unwrap();
    assert_eq!(
        outcomes(&report),
        vec![(instance.clone(), "stopped".to_string())],
        "{report:#}"
    );
    assert_eq!(cloud.instance_state(&instance).await, "stopped");
    // both incidents hold it: one restore releases both (one switch), and it runs again
    w.handler
        .handle(json!({"action": "restore", "scope": scope, "actor": "ops@example.com"}))
        .await
        .unwrap();
    assert_eq!(cloud.instance_state(&instance).await, "running");
}

/// A harmless document, planted under the name of the inline deny earlier versions put.
const HARMLESS: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]}"#;
/// The inline deny-all earlier versions of spendguard put on a role, byte for byte.
const OLD_INLINE_DENY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#;

async fn shutdown(w: &KeyGuardWorld, scope: &str, alert: &str) -> Value {
    let report = w
        .handler
        .handle(shutdown_alert(scope, alert))
        .await
        .unwrap();
    report["alerts"][0].clone()
}

async fn restore(w: &KeyGuardWorld, scope: &str) -> Value {
    w.handler
        .handle(json!({"action": "restore", "scope": scope, "actor": "ops@example.com"}))
        .await
        .unwrap()
}

/// Finding #10: "stopped" used to mean "an inline policy named spendguard-shutdown-deny
/// exists", so a planted harmless one made the role immune, and restore deleted it. Finding #8:
/// the stop needed iam:PutRolePolicy. Now the stop attaches AWS's AWSDenyAll and recognises
/// only that ARN (a customer policy named AWSDenyAll is not it), and no inline policy is
/// written or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_policy_named_like_the_deny_does_not_make_a_role_immune() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    cloud.ensure_deny_all().await;
    let scope = format!("aws/{}", aws::unique("batch"));
    let role = cloud.role(Some(&scope)).await;
    cloud.put_inline(&role, DENY_POLICY_NAME, HARMLESS).await;
    let lookalike = cloud
        .managed_policy(&aws::unique("AWSDenyAll"), HARMLESS)
        .await;
    cloud.attach(&role, &lookalike).await;
    let inline_before = cloud.inline_policies(&role).await;
    let w = world(vec![role.clone()]).await;

    let plan = w
        .handler
        .handle(json!({"action": "shutdown", "scope": scope, "actor": "ops@example.com", "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&plan),
        [(role.clone(), "would_stop".to_string())],
        "{plan:#}"
    );

    let report = shutdown(&w, &scope, "alert-planted").await;
    assert_eq!(
        outcomes(&report),
        [(role.clone(), "stopped".to_string())],
        "{report:#}"
    );
    let mut attached = vec![AWS_DENY_ALL.to_string(), lookalike.clone()];
    attached.sort();
    assert_eq!(cloud.attached_policies(&role).await, attached);
    assert_eq!(
        cloud.inline_policies(&role).await,
        inline_before,
        "the stop writes no inline policy (no iam:PutRolePolicy)"
    );

    let restored = restore(&w, &scope).await;
    assert_eq!(
        outcomes(&restored),
        [(role.clone(), "restored".to_string())],
        "{restored:#}"
    );
    assert_eq!(cloud.attached_policies(&role).await, vec![lookalike]);
    assert_eq!(
        cloud.inline_policies(&role).await,
        inline_before,
        "restore deletes no policy it did not put"
    );
}

/// Restore detaches only what the stop attached: AWSDenyAll attached by someone else before
/// the shutdown stays after the restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_all_attached_before_the_stop_stays_after_the_restore() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    cloud.ensure_deny_all().await;
    let scope = format!("aws/{}", aws::unique("batch"));
    let denied = cloud.role(Some(&scope)).await;
    cloud.attach(&denied, AWS_DENY_ALL).await;
    let open = cloud.role(Some(&scope)).await;
    let w = world(vec![denied.clone(), open.clone()]).await;

    let report = shutdown(&w, &scope, "alert-before").await;
    let mut expected = vec![
        (denied.clone(), "was_not_running".to_string()),
        (open.clone(), "stopped".to_string()),
    ];
    expected.sort();
    assert_eq!(outcomes(&report), expected, "{report:#}");
    let before = |id: &str| {
        report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| name(r["id"].as_str().unwrap()) == id)
            .unwrap()["before"]
            .clone()
    };
    assert_eq!(
        before(&open),
        json!({"state": "deny_all", "attached": false})
    );
    assert_eq!(
        before(&denied),
        json!({"state": "deny_all", "attached": true})
    );

    let restored = restore(&w, &scope).await;
    assert_eq!(
        outcomes(&restored),
        [(open.clone(), "restored".to_string())],
        "{restored:#}"
    );
    assert_eq!(cloud.attached_policies(&denied).await, vec![AWS_DENY_ALL]);
    assert!(cloud.attached_policies(&open).await.is_empty());
}

/// An incident recorded by an earlier version (its stop put the inline deny-all) is still
/// restored: the inline policy is deleted if, and only if, its document is the one spendguard
/// wrote; anything else under that name is someone else's and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_stopped_by_the_inline_deny_of_an_earlier_version_is_restored() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    cloud.ensure_deny_all().await;
    let scope = format!("aws/{}", aws::unique("batch"));
    let ours = cloud.role(Some(&scope)).await;
    let theirs = cloud.role(Some(&scope)).await;
    let w = world(vec![ours.clone(), theirs.clone()]).await;
    let report = shutdown(&w, &scope, "alert-old").await;
    assert!(
        outcomes(&report).iter().all(|(_, o)| o == "stopped"),
        "{report:#}"
    );
    // turn both into what an earlier version left: the inline deny, recorded as such
    for (role, document) in [(&ours, OLD_INLINE_DENY), (&theirs, HARMLESS)] {
        cloud.detach(role, AWS_DENY_ALL).await;
        cloud.put_inline(role, DENY_POLICY_NAME, document).await;
        let arn = cloud
            .iam
            .get_role()
            .role_name(role.as_str())
            .send()
            .await
            .unwrap()
            .role
            .unwrap()
            .arn;
        let key = format!("shutdown#{arn}");
        let now = chrono::Utc::now();
        let mut record: Value =
            serde_json::from_str(&w.store.get_cached(&key, now).await.unwrap().unwrap()).unwrap();
        assert_eq!(
            record["previous"],
            json!({"state": "deny_all", "attached": false})
        );
        record["previous"] = json!({"state": "deny_policy", "attached": false});
        w.store
            .put_cached(&key, &record.to_string(), now + chrono::Duration::days(1))
            .await
            .unwrap();
    }

    let restored = restore(&w, &scope).await;
    let mut back = vec![
        (ours.clone(), "restored".to_string()),
        (theirs.clone(), "restored".to_string()),
    ];
    back.sort();
    assert_eq!(outcomes(&restored), back, "{restored:#}");
    assert!(cloud.role_policies(&ours).await.is_empty());
    assert_eq!(
        cloud.inline_policies(&theirs).await,
        [(
            DENY_POLICY_NAME.to_string(),
            serde_json::from_str::<Value>(HARMLESS).unwrap()
        )],
        "not the document spendguard wrote: not spendguard's to delete"
    );
    assert!(cloud.attached_policies(&ours).await.is_empty());
    assert!(cloud.attached_policies(&theirs).await.is_empty());
}

/// Finding #9: the tagging API is regional, and discovery asked only key-guard's own region,
/// so resources tagged elsewhere were never found and the shutdown reported success. Every
/// region of `[shutdown] regions` is searched, and each resource is changed (and read back) in
/// the region of its ARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_tagged_in_every_configured_region_are_stopped_and_restored() {
    let sdk = aws::sdk().await;
    let home = Cloud::new(&sdk).await;
    let away = Cloud::new(&in_region(&sdk, "eu-west-1")).await;
    let scope = format!("aws/{}", aws::unique("regions"));
    let home_fn = home.function(Some(&scope), Some(4)).await;
    let away_fn = away.function(Some(&scope), Some(7)).await;
    let away_service = away.service(Some(&scope), 2).await;
    let away_instance = away.instance(Some(&scope)).await;

    // by default only key-guard's own region is searched
    let w = world_in(&[]).await;
    let plan = w
        .handler
        .handle(json!({"action": "shutdown", "scope": scope, "actor": "ops@example.com", "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&plan),
        [(name(&home_fn), "would_stop".to_string())],
        "{plan:#}"
    );

    let w = world_in(&["us-east-1", "eu-west-1"]).await;
    let report = shutdown(&w, &scope, "alert-regions").await;
    let mut stopped = vec![
        (name(&home_fn), "stopped".to_string()),
        (name(&away_fn), "stopped".into()),
        (name(&away_service), "stopped".into()),
        (away_instance.clone(), "stopped".into()),
    ];
    stopped.sort();
    assert_eq!(outcomes(&report), stopped, "{report:#}");
    assert_eq!(home.reserved(&home_fn).await, Some(0));
    assert_eq!(away.reserved(&away_fn).await, Some(0));
    assert_eq!(away.desired(&away_service).await, 0);
    assert_eq!(away.instance_state(&away_instance).await, "stopped");
    let again = shutdown(&w, &scope, "alert-regions").await;
    assert!(
        outcomes(&again).iter().all(|(_, o)| o == "already_stopped"),
        "{again:#}"
    );

    let restored = restore(&w, &scope).await;
    assert!(
        outcomes(&restored).iter().all(|(_, o)| o == "restored") && outcomes(&restored).len() == 4,
        "{restored:#}"
    );
    assert_eq!(home.reserved(&home_fn).await, Some(4));
    assert_eq!(away.reserved(&away_fn).await, Some(7));
    assert_eq!(away.desired(&away_service).await, 2);
    assert_eq!(away.instance_state(&away_instance).await, "running");
}

/// A region that cannot be searched (here one moto does not know; in AWS a region not enabled
/// for the account, or one an SCP denies) fails the shutdown, naming the region; what the
/// other regions hold is stopped all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_cannot_be_searched_fails_the_shutdown_visibly() {
    let sdk = aws::sdk().await;
    let home = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("unsearched"));
    let function = home.function(Some(&scope), Some(3)).await;
    let w = world_in(&["us-east-1", "ap-unknown-1"]).await;
    let err = w
        .handler
        .handle(shutdown_alert(&scope, "alert-unsearched"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listing opted-in resources: region ap-unknown-1: "),
        "{err}"
    );
    assert_eq!(home.reserved(&function).await, Some(0));
    let switch = w
        .store
        .kill_switch(&Scope::parse(&scope).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            switch.value.state,
            spendguard_domain::records::SwitchState::Engaged { .. }
        ),
        "the switch stays engaged"
    );
}

/// Finding #30: Application Auto Scaling undoes a desired count of 0 at its next scale-out.
/// The service's scalable target is suspended (and its minimum lowered to 0) while the service
/// is stopped, and restore puts back exactly what it had: a target partly suspended before
/// stays so. A service with no scalable target has nothing more done to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_service_s_scalable_target_is_suspended_and_put_back_exactly() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("scaled"));
    let scaled = cloud.service(Some(&scope), 3).await;
    cloud
        .scalable_target(&scaled, 2, 10, [true, false, false])
        .await;
    let plain = cloud.service(Some(&scope), 1).await;
    let untagged = cloud.service(None, 2).await;
    cloud
        .scalable_target(&untagged, 1, 5, [false, false, false])
        .await;
    let w = world(Vec::new()).await;

    let report = shutdown(&w, &scope, "alert-scaled").await;
    let mut stopped = vec![
        (name(&scaled), "stopped".to_string()),
        (name(&plain), "stopped".into()),
    ];
    stopped.sort();
    assert_eq!(outcomes(&report), stopped, "{report:#}");
    assert_eq!(cloud.desired(&scaled).await, 0);
    assert_eq!(cloud.scalable(&scaled).await, (0, 10, [true, true, true]));
    assert_eq!(
        cloud.scalable(&untagged).await,
        (1, 5, [false, false, false])
    );
    let again = shutdown(&w, &scope, "alert-scaled").await;
    assert!(
        outcomes(&again).iter().all(|(_, o)| o == "already_stopped"),
        "{again:#}"
    );

    let restored = restore(&w, &scope).await;
    assert_eq!(outcomes(&restored).len(), 2, "{restored:#}");
    assert_eq!(cloud.desired(&scaled).await, 3);
    assert_eq!(cloud.desired(&plain).await, 1);
    assert_eq!(cloud.scalable(&scaled).await, (2, 10, [true, false, false]));
    assert!(outcomes(&restore(&w, &scope).await).is_empty());
}

/// An Auto Scaling group replaces what is stopped under it: the group itself opts in, a
/// shutdown suspends the processes that would launch or resize (Launch, AlarmNotification,
/// ScheduledActions, AZRebalance, ReplaceUnhealthy) and sets its minimum and desired capacity
/// to 0; restore puts back exactly the sizes and resumes only what it suspended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_scaling_group_is_held_at_zero_and_put_back_exactly() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("fleet"));
    let group = cloud.group(Some(&scope), 1, 4, 2).await;
    cloud.suspend(&group, &["AZRebalance", "HealthCheck"]).await;
    let untagged = cloud.group(None, 1, 3, 1).await;
    let w = world(Vec::new()).await;

    let plan = w
        .handler
        .handle(json!({"action": "shutdown", "scope": scope, "actor": "ops@example.com", "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&plan),
        [(group.clone(), "would_stop".to_string())],
        "{plan:#}"
    );
    let report = shutdown(&w, &scope, "alert-fleet").await;
    assert_eq!(
        outcomes(&report),
        [(group.clone(), "stopped".to_string())],
        "{report:#}"
    );
    let processes = |names: &[&str]| {
        let mut v: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(
        cloud.group_state(&group).await,
        Group {
            min: 0,
            max: 4,
            desired: 0,
            suspended: processes(&[
                "AZRebalance",
                "AlarmNotification",
                "HealthCheck",
                "Launch",
                "ReplaceUnhealthy",
                "ScheduledActions"
            ]),
        }
    );
    let untouched = Group {
        min: 1,
        max: 3,
        desired: 1,
        suspended: Vec::new(),
    };
    assert_eq!(cloud.group_state(&untagged).await, untouched);
    let again = shutdown(&w, &scope, "alert-fleet").await;
    assert_eq!(
        outcomes(&again),
        [(group.clone(), "already_stopped".to_string())]
    );

    let restored = restore(&w, &scope).await;
    assert_eq!(
        outcomes(&restored),
        [(group.clone(), "restored".to_string())],
        "{restored:#}"
    );
    assert_eq!(
        cloud.group_state(&group).await,
        Group {
            min: 1,
            max: 4,
            desired: 2,
            suspended: processes(&["AZRebalance", "HealthCheck"]),
        }
    );
    assert_eq!(cloud.group_state(&untagged).await, untouched);
    assert!(outcomes(&restore(&w, &scope).await).is_empty());
}

/// A restore that stopped halfway (the count put back, then the scalable target's call failed;
/// the group resized, then ResumeProcesses failed) is finished by the next restore: a state
/// between "stopped" and "before", part by part, is spendguard's, not an operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_stopped_halfway_is_finished_by_the_next() {
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("halfway"));
    let service = cloud.service(Some(&scope), 3).await;
    cloud
        .scalable_target(&service, 2, 10, [false, false, false])
        .await;
    let group = cloud.group(Some(&scope), 1, 4, 2).await;
    let w = world(Vec::new()).await;
    shutdown(&w, &scope, "alert-halfway").await;
    assert_eq!(cloud.scalable(&service).await, (0, 10, [true, true, true]));

    // what the first restore got done before its next call failed
    cloud.set_desired(&service, 3).await;
    cloud.resize(&group, 1, 2).await;

    let restored = restore(&w, &scope).await;
    let mut expected = vec![
        (name(&service), "restored".to_string()),
        (group.clone(), "restored".to_string()),
    ];
    expected.sort();
    let mut got = outcomes(&restored);
    got.sort();
    assert_eq!(got, expected, "{restored:#}");
    assert_eq!(cloud.desired(&service).await, 3);
    assert_eq!(
        cloud.scalable(&service).await,
        (2, 10, [false, false, false])
    );
    assert_eq!(
        cloud.group_state(&group).await,
        Group {
            min: 1,
            max: 4,
            desired: 2,
            suspended: Vec::new(),
        }
    );
}

/// A signed call (EC2, Auto Scaling) that AWS throttles or fails once is tried again: the stop
/// goes through instead of leaving the resource running until SNS delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_fails_once_is_tried_again_and_the_stop_goes_through() {
    use spendguard_tests::faults::{Fault, FaultProxy, Rule};
    let sdk = aws::sdk().await;
    let cloud = Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("retried"));
    let instance = cloud.instance(Some(&scope)).await;
    let w = world(Vec::new()).await;
    let proxy = FaultProxy::start(vec![Rule {
        operation: "StopInstances",
        body_contains: None,
        every: 1,
        limit: 2,
        fault: Fault::ServerError,
    }])
    .await;
    let through_proxy = key_guard::app::handler(&w.config, &proxy.sdk().await)
        .await
        .unwrap();
    let report = through_proxy
        .handle(shutdown_alert(&scope, "alert-retried"))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&report["alerts"][0]),
        [(instance.clone(), "stopped".to_string())],
        "{report:#}"
    );
    assert_eq!(cloud.instance_state(&instance).await, "stopped");
}
