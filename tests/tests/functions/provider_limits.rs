//! Stopping spend at OpenAI itself (issue 22, ADR 020): an emergency on a scope that covers an
//! OpenAI project sets the project's hard spend limit to one cent, after recording the limit
//! it had; the restore puts back exactly that (or deletes the limit if there was none),
//! unless someone changed it since. Against moto and the OpenAI admin stand-in, which takes
//! only the documented paths, the admin key and integer cents.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use spendguard_domain::budget::Action;
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::settings::PolicySet;
use spendguard_tests::keyguard::KeyGuardWorld;

use crate::key_guard::{delivered_twice_at_once, emergency, key};

const PROJECT: &str = "project:proj_p";

fn openai_key(id: &str, scope: &str) -> KeySpec {
    KeySpec {
        project_id: Some("proj_p".into()),
        key_id: Some(format!("key_{id}")),
        ..key(id, ProviderKind::Openai, scope)
    }
}

/// A world with two keys of `proj_p` registered under `ai/prod`, and the project's limit at
/// OpenAI as `before` (cents).
async fn project_world(before: Option<u64>) -> KeyGuardWorld {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.openai.add_in_project("proj_p", "key_a");
    w.openai.add_in_project("proj_p", "key_b");
    w.openai.set_spend_limit_by_hand(PROJECT, before);
    w.register(vec![
        openai_key("a", "ai/prod/a"),
        openai_key("b", "ai/prod/b"),
    ])
    .await;
    w
}

/// The report's entry for the resource `id`.
fn resource<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
        .unwrap_or_else(|| panic!("no {id} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_sets_the_project_limit_at_openai_once_and_restore_puts_back_exactly_it() {
    let w = project_world(Some(50_000)).await;
    let event = emergency(
        "ai/prod",
        "alert-pl-1",
        vec![Action::Notify, Action::DisableKeys],
    );
    // at-least-once delivery: the same emergency twice, at the same time
    let handler = Arc::new(w.handler);
    let results = delivered_twice_at_once(&handler, &event).await;
    assert!(results.iter().any(Result::is_ok), "{results:?}");
    // the loser may have found the winner still at work (Lambda retries it): a retry is a no-op
    handler
        .handle(event.clone())
        .await
        .expect("a redelivery succeeds");
    assert_eq!(
        w.openai.spend_limit(PROJECT),
        Some(1),
        "at most the month-to-date spend"
    );
    assert_eq!(
        w.openai.writes_for(PROJECT),
        ["spend_limit 1"],
        "set once for all deliveries"
    );

    let restored = handler
        .handle(json!({"action": "restore", "scope": "ai/prod", "actor": "alice"}))
        .await
        .unwrap();
    let limit = resource(&restored, "openai:project:proj_p");
    assert_eq!(limit["outcome"], "restored", "{restored:#}");
    assert_eq!(
        limit["before"],
        json!({"state": "spend_limit", "cents": 50_000})
    );
    assert_eq!(w.openai.spend_limit(PROJECT), Some(50_000));
    assert_eq!(
        w.openai.writes_for(PROJECT),
        ["spend_limit 1", "spend_limit 50000"]
    );
    // a late redelivery of the emergency after the restore sets nothing again
    handler.handle(event).await.unwrap();
    assert_eq!(w.openai.spend_limit(PROJECT), Some(50_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_without_a_limit_gets_none_back() {
    let w = project_world(None).await;
    let stopped = w
        .handler
        .handle(json!({"action": "disable", "scope": "ai", "reason": "runaway", "actor": "bob"}))
        .await
        .unwrap();
    assert_eq!(
        resource(&stopped, "openai:project:proj_p")["outcome"],
        "stopped"
    );
    assert_eq!(w.openai.spend_limit(PROJECT), Some(1));
    w.handler
        .handle(json!({"action": "restore", "scope": "ai", "actor": "bob"}))
        .await
        .unwrap();
    assert_eq!(
        w.openai.spend_limit(PROJECT),
        None,
        "deleted: there was none"
    );
    assert_eq!(
        w.openai.writes_for(PROJECT),
        ["spend_limit 1", "spend_limit deleted"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_changed_at_openai_during_the_stop_is_left_as_set_and_reported() {
    let w = project_world(Some(50_000)).await;
    w.handler
        .handle(json!({"action": "disable", "scope": "ai/prod", "reason": "leak", "actor": "bob"}))
        .await
        .unwrap();
    // an operator raises it by hand while the scope is stopped
    w.openai.set_spend_limit_by_hand(PROJECT, Some(20_000));
    let restored = w
        .handler
        .handle(json!({"action": "restore", "scope": "ai/prod", "actor": "bob"}))
        .await
        .unwrap();
    let limit = resource(&restored, "openai:project:proj_p");
    assert_eq!(limit["outcome"], "changed_by_hand", "{restored:#}");
    assert_eq!(
        limit["detail"],
        "now spend limit 200.00 USD (spendguard left spend limit 0.01 USD): left as the operator set it"
    );
    assert_eq!(w.openai.spend_limit(PROJECT), Some(20_000));
    assert_eq!(w.openai.writes_for(PROJECT), ["spend_limit 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_key_leaves_its_projects_limit_alone() {
    let w = project_world(Some(50_000)).await;
    let report = w
        .handler
        .handle(
            json!({"action": "disable", "scope": "ai/prod/a", "reason": "leak", "actor": "bob"}),
        )
        .await
        .unwrap();
    assert!(report.get("resources").is_none(), "{report:#}");
    assert_eq!(w.openai.spend_limit(PROJECT), Some(50_000));
    assert!(w.openai.writes_for(PROJECT).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_openai_refuses_fails_the_stop_loudly_and_a_retry_sets_it() {
    let w = project_world(Some(50_000)).await;
    w.openai.fail_next.store(1, Ordering::SeqCst);
    let failed = w
        .handler
        .handle(json!({"action": "disable", "scope": "ai/prod", "reason": "leak", "actor": "bob"}))
        .await;
    let why = failed
        .expect_err("a stop OpenAI did not take is an error")
        .to_string();
    assert!(
        why.contains("openai:project:proj_p") && why.contains("500"),
        "{why}"
    );
    assert_eq!(w.openai.spend_limit(PROJECT), Some(50_000));
    w.handler
        .handle(json!({"action": "disable", "scope": "ai/prod", "reason": "leak", "actor": "bob"}))
        .await
        .expect("the retry finishes the stop");
    assert_eq!(w.openai.spend_limit(PROJECT), Some(1));
    // OpenAI refuses the restore's write too: the restore fails, naming it; again, it finishes
    w.openai.fail_next.store(1, Ordering::SeqCst);
    let failed = w
        .handler
        .handle(json!({"action": "restore", "scope": "ai/prod", "actor": "bob"}))
        .await;
    let why = failed
        .expect_err("a restore OpenAI did not take is an error")
        .to_string();
    assert!(why.contains("openai:project:proj_p"), "{why}");
    assert_eq!(w.openai.spend_limit(PROJECT), Some(1));
    w.handler
        .handle(json!({"action": "restore", "scope": "ai/prod", "actor": "bob"}))
        .await
        .unwrap();
    assert_eq!(
        w.openai.spend_limit(PROJECT),
        Some(50_000),
        "the limit recorded by the failed attempt is the one put back"
    );
}

/// After a leak the registry changes while the scope is stopped: the leaked key goes, a new
/// key of the project is registered elsewhere. The limit's scope moves with the registry, and
/// the restore of the scope it was stopped under still puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_comes_back_with_its_scope_even_after_the_registry_moved_it() {
    let w = project_world(Some(50_000)).await;
    w.handler
        .handle(json!({"action": "disable", "scope": "ai/prod", "reason": "leak", "actor": "bob"}))
        .await
        .unwrap();
    assert_eq!(w.openai.spend_limit(PROJECT), Some(1));
    w.openai.add_in_project("proj_p", "key_c");
    w.register(vec![
        openai_key("b", "ai/prod/b"),
        openai_key("c", "ai/staging/c"),
    ])
    .await;
    let restored = w
        .handler
        .handle(json!({"action": "restore", "scope": "ai/prod", "actor": "bob"}))
        .await
        .unwrap();
    assert_eq!(
        resource(&restored, "openai:project:proj_p")["outcome"],
        "restored",
        "{restored:#}"
    );
    assert_eq!(w.openai.spend_limit(PROJECT), Some(50_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_on_the_whole_organisation_stops_the_organisation_limit() {
    let policy = parse_budgets(
        "budgets.toml",
        r#"
        version = 1
        [[budget]]
        id = "openai-org"
        scope = "openai"
        source = { kind = "openai" }
        [[budget.window]]
        period = "monthly"
        limit = "5000"
        tiers = [{ name = "emergency", percent = 100, actions = ["disable_keys"] }]
        "#,
    )
    .unwrap();
    let w = KeyGuardWorld::new(policy).await;
    w.openai
        .set_spend_limit_by_hand("organization", Some(900_000));
    let report = w
        .handler
        .handle(emergency(
            "openai",
            "alert-org-1",
            vec![Action::DisableKeys],
        ))
        .await
        .unwrap();
    assert_eq!(w.openai.spend_limit("organization"), Some(1), "{report:#}");
    w.handler
        .handle(json!({"action": "restore", "scope": "openai", "actor": "carol"}))
        .await
        .unwrap();
    assert_eq!(w.openai.spend_limit("organization"), Some(900_000));
}
