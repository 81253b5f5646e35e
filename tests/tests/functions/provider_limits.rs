//! Stopping spend at OpenAI itself (issue 22, ADR 020): an emergency on a scope that covers an
//! OpenAI project sets the project's hard spend limit to one cent, after recording the limit
//! it had; the restore puts back exactly that (or deletes the limit if there was none),
//! unless someone changed it since. Against moto and the OpenAI admin stand-in, which takes
//! only the documented paths, the admin key and integer cents.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_app::flows::caps::CapOutcome;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::budget::Action;
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::resources::ResourceKind;
use spendguard_domain::settings::PolicySet;
use spendguard_tests::admin_apis::ProviderState;
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

// ---- throttling at OpenAI: a project's rate limits (issue 22 part 2) ------------------------

/// An alert on `scope` ordering `reduce_limits(factor)`.
fn throttle_alert(scope: &str, id: &str, factor: Decimal) -> Value {
    emergency(
        scope,
        id,
        vec![Action::Notify, Action::ReduceLimits { factor }],
    )
}

/// The recovery budget-check publishes for `event`'s alert (it carries the same actions).
fn recovery_of(event: &Value) -> Value {
    let mut recovery = event.clone();
    let alert: AlertEvent =
        serde_json::from_str(event["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    let alert = alert.recovery("fell below the tier", chrono::Utc::now());
    recovery["Records"][0]["Sns"]["Message"] = json!(serde_json::to_string(&alert).unwrap());
    recovery
}

/// `proj_r` with three models' rate limits, and its two keys registered under `ai/batch`.
async fn throttle_world() -> KeyGuardWorld {
    let w = KeyGuardWorld::new(PolicySet::default()).await;
    w.openai.add_in_project("proj_r", "key_r1");
    w.openai.add_in_project("proj_r", "key_r2");
    w.openai.add_rate_limit(
        "proj_r",
        "rl-gpt-4o",
        "gpt-4o",
        json!({"max_requests_per_1_minute": 500, "max_tokens_per_1_minute": 30000, "max_requests_per_1_day": 10000}),
    );
    w.openai.add_rate_limit(
        "proj_r",
        "rl-dall-e-3",
        "dall-e-3",
        json!({"max_requests_per_1_minute": 7, "max_images_per_1_minute": 5}),
    );
    w.openai.add_rate_limit(
        "proj_r",
        "rl-tts-1",
        "tts-1",
        json!({"max_requests_per_1_minute": 3, "max_audio_megabytes_per_1_minute": 1}),
    );
    let key = |id: &str, scope: &str| KeySpec {
        project_id: Some("proj_r".into()),
        key_id: Some(format!("key_{id}")),
        ..crate::key_guard::key(id, ProviderKind::Openai, scope)
    };
    w.register(vec![key("r1", "ai/batch/a"), key("r2", "ai/batch/b")])
        .await;
    w
}

/// The `max_*` limits of a rate limit at the stand-in.
fn limits(openai: &ProviderState, id: &str) -> Value {
    let mut l = openai.rate_limit("proj_r", id).unwrap();
    l.retain(|k, _| k.starts_with("max_"));
    Value::Object(l)
}

fn rate_limit_writes(openai: &ProviderState) -> usize {
    openai
        .writes
        .lock()
        .unwrap()
        .iter()
        .filter(|(target, _)| target.starts_with("proj_r/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_limits_scales_each_models_rate_limits_at_openai_once_and_the_recovery_puts_back_exactly_them()
 {
    let w = throttle_world().await;
    let original: Vec<Value> = ["rl-gpt-4o", "rl-dall-e-3", "rl-tts-1"]
        .iter()
        .map(|id| limits(&w.openai, id))
        .collect();
    let half = throttle_alert("ai/batch", "alert-rl-half", Decimal::new(5, 1));
    // at-least-once delivery: twice at the same time, then once more
    let handler = Arc::new(w.handler);
    let results = delivered_twice_at_once(&handler, &half).await;
    assert!(results.iter().any(Result::is_ok), "{results:?}");
    let out = handler
        .handle(half.clone())
        .await
        .expect("a redelivery succeeds");
    assert_eq!(
        out["alerts"][0]["provider_rate_limits"][0]["outcome"], "already_lowered",
        "{out:#}"
    );
    // each limit halved, rounded down, never below 1
    assert_eq!(
        limits(&w.openai, "rl-gpt-4o"),
        json!({"max_requests_per_1_minute": 250, "max_tokens_per_1_minute": 15000, "max_requests_per_1_day": 5000})
    );
    assert_eq!(
        limits(&w.openai, "rl-dall-e-3"),
        json!({"max_requests_per_1_minute": 3, "max_images_per_1_minute": 2})
    );
    assert_eq!(
        limits(&w.openai, "rl-tts-1"),
        json!({"max_requests_per_1_minute": 1, "max_audio_megabytes_per_1_minute": 1})
    );
    assert_eq!(
        rate_limit_writes(&w.openai),
        3,
        "one write per model for all deliveries"
    );
    assert_eq!(
        w.anthropic.writes.lock().unwrap().len() + w.openai.writes_for(PROJECT).len(),
        0,
        "a throttle stops no key and sets no spend limit"
    );

    // a stricter alert lowers further, from the recorded limits (not from the halved ones)
    let fifth = throttle_alert("ai/batch", "alert-rl-fifth", Decimal::new(2, 1));
    handler.handle(fifth.clone()).await.unwrap();
    assert_eq!(
        limits(&w.openai, "rl-gpt-4o"),
        json!({"max_requests_per_1_minute": 100, "max_tokens_per_1_minute": 6000, "max_requests_per_1_day": 2000})
    );
    // the milder alert recovers first: the stricter one still holds the limits down
    let out = handler.handle(recovery_of(&half)).await.unwrap();
    assert_eq!(
        out["alerts"][0]["provider_rate_limits"][0]["outcome"], "still_lowered",
        "{out:#}"
    );
    assert_eq!(
        limits(&w.openai, "rl-gpt-4o")["max_requests_per_1_minute"],
        100
    );

    // an operator raises one model's limit by hand meanwhile
    w.openai.add_rate_limit(
        "proj_r",
        "rl-tts-1",
        "tts-1",
        json!({"max_requests_per_1_minute": 9, "max_audio_megabytes_per_1_minute": 1}),
    );
    let out = handler.handle(recovery_of(&fifth)).await.unwrap();
    let report = &out["alerts"][0]["provider_rate_limits"][0];
    assert_eq!(report["outcome"], "restored", "{out:#}");
    assert_eq!(report["detail"]["models"], 3);
    let left = report["detail"]["left"].to_string();
    assert!(
        left.contains("tts-1") && left.contains("left as the operator set it"),
        "{left}"
    );
    assert_eq!(
        limits(&w.openai, "rl-gpt-4o"),
        original[0],
        "exactly as recorded"
    );
    assert_eq!(limits(&w.openai, "rl-dall-e-3"), original[1]);
    assert_eq!(
        limits(&w.openai, "rl-tts-1")["max_requests_per_1_minute"],
        9,
        "the operator's value stays"
    );
    // a redelivered recovery puts nothing back twice
    let writes = rate_limit_writes(&w.openai);
    let out = handler.handle(recovery_of(&fifth)).await.unwrap();
    assert_eq!(
        out["alerts"][0]["provider_rate_limits"][0]["outcome"],
        "not_lowered"
    );
    assert_eq!(rate_limit_writes(&w.openai), writes);
}

/// A project with more models than one page holds is read to the end; a write OpenAI refuses
/// fails the invocation (Lambda retries) and the retry finishes from the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_reads_every_page_and_a_failed_write_is_retried_to_completion() {
    let w = throttle_world().await;
    for i in 0..120 {
        w.openai.add_rate_limit(
            "proj_r",
            &format!("rl-ft-{i:03}"),
            &format!("ft:gpt-4o-mini:{i}"),
            json!({"max_requests_per_1_minute": 1000 + i}),
        );
    }
    let alert = throttle_alert("ai/batch", "alert-rl-pages", Decimal::new(5, 1));
    w.openai.fail_next.store(1, Ordering::SeqCst);
    let err = w.handler.handle(alert.clone()).await.unwrap_err();
    assert_eq!(
        lambda_runtime::Diagnostic::from(err).error_type,
        "ThrottleIncomplete"
    );
    w.handler
        .handle(alert.clone())
        .await
        .expect("the retry completes");
    for i in [0u64, 99, 100, 119] {
        assert_eq!(
            w.openai
                .rate_limit("proj_r", &format!("rl-ft-{i:03}"))
                .unwrap()["max_requests_per_1_minute"],
            (1000 + i) / 2,
            "model {i}"
        );
    }
    w.handler.handle(recovery_of(&alert)).await.unwrap();
    for i in [0u64, 119] {
        assert_eq!(
            w.openai
                .rate_limit("proj_r", &format!("rl-ft-{i:03}"))
                .unwrap()["max_requests_per_1_minute"],
            1000 + i
        );
    }
}

/// A throttle of a scope that covers only one of a project's keys leaves the project alone
/// (the other key's traffic is not this scope's to slow down), as the spend limit does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_of_part_of_a_project_leaves_its_rate_limits_alone() {
    let w = throttle_world().await;
    let out = w
        .handler
        .handle(throttle_alert(
            "ai/batch/a",
            "alert-rl-part",
            Decimal::new(5, 1),
        ))
        .await
        .unwrap();
    assert_eq!(
        out["alerts"][0].get("provider_rate_limits"),
        None,
        "{out:#}"
    );
    assert_eq!(rate_limit_writes(&w.openai), 0);
    assert_eq!(
        out["alerts"][0]["limit_factor"], "0.5",
        "the app-side factor is set"
    );
}

/// A budget check that keeps OpenAI caps at the world's stand-in.
fn cap_checker(w: &KeyGuardWorld) -> spendguard_app::flows::check::Checker {
    spendguard_app::flows::check::Checker {
        store: Arc::new(w.store.clone()),
        bus: Arc::new(spendguard_local::memory_bus::MemoryBus::default()),
        sources: Vec::new(),
        key_usage: Vec::new(),
        clock: Arc::new(spendguard_app::ports::clock::SystemClock),
        claim_lease: spendguard_app::flows::check::DEFAULT_CLAIM_LEASE,
        provider_caps: vec![(
            ResourceKind::OpenaiSpendLimit,
            Arc::new(spendguard_http::keys::openai::OpenAiSpendLimits {
                http: reqwest::Client::new(),
                base_url: w.config.openai_api_url.clone(),
                admin_key: spendguard_domain::secret::Secret::new(
                    spendguard_tests::admin_apis::OPENAI_ADMIN_KEY,
                ),
            }),
        )],
        pending_age: None,
    }
}

/// `proj_p`'s limit kept at 500 USD by a budget on `ai/prod` (`provider_cap`), and the check
/// that keeps it.
async fn capped_world() -> (
    KeyGuardWorld,
    PolicySet,
    spendguard_app::flows::check::Checker,
) {
    let policy = parse_budgets(
        "budgets.toml",
        r#"
        version = 1
        [[budget]]
        id = "openai-p"
        scope = "ai/prod"
        source = { kind = "openai", project_id = "proj_p" }
        [[budget.window]]
        period = "monthly"
        limit = "500"
        provider_cap = true
        tiers = [{ name = "emergency", percent = 100, actions = ["disable_keys"] }]
        "#,
    )
    .unwrap();
    let w = KeyGuardWorld::new(policy.clone()).await;
    w.openai.add_in_project("proj_p", "key_a");
    let checker = cap_checker(&w);
    (w, policy, checker)
}

/// A limit kept as code (`provider_cap`) and stopped by an emergency: budget-check's keeping
/// leaves it at one cent while the stop holds it, and the restore puts the cap back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_cap_yields_to_a_stop_and_comes_back_with_the_restore() {
    let (w, policy, checker) = capped_world().await;
    let kept = checker.keep_caps(&policy).await;
    assert_eq!(kept[0].outcome, CapOutcome::Set { from: None });
    assert_eq!(w.openai.spend_limit(PROJECT), Some(50_000));

    w.handler
        .handle(emergency(
            "ai/prod",
            "alert-cap-stop",
            vec![Action::DisableKeys],
        ))
        .await
        .unwrap();
    assert_eq!(w.openai.spend_limit(PROJECT), Some(1));
    let kept = checker.keep_caps(&policy).await;
    assert_eq!(kept[0].outcome, CapOutcome::HeldByStop);
    assert_eq!(w.openai.spend_limit(PROJECT), Some(1), "the stop wins");

    w.handler
        .handle(json!({"action": "restore", "scope": "ai/prod", "actor": "op"}))
        .await
        .unwrap();
    assert_eq!(
        w.openai.spend_limit(PROJECT),
        Some(50_000),
        "the cap is back"
    );
    let kept = checker.keep_caps(&policy).await;
    assert_eq!(kept[0].outcome, CapOutcome::InPlace, "and no drift is seen");
}

/// A stop that found the limit at one cent already (a person lowered it first) records nothing
/// to restore; the kept cap must still not lift it while the switch is engaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_cap_waits_for_an_engaged_switch_even_when_the_stop_found_it_lowered() {
    let (w, policy, checker) = capped_world().await;
    checker.keep_caps(&policy).await;
    assert_eq!(w.openai.spend_limit(PROJECT), Some(50_000));
    // the operator lowers it at OpenAI by hand, then kills the scope
    w.openai.set_spend_limit_by_hand(PROJECT, Some(1));
    w.handler
        .handle(json!({"action": "disable", "scope": "ai/prod", "reason": "leak", "actor": "op"}))
        .await
        .unwrap();
    let kept = checker.keep_caps(&policy).await;
    assert_eq!(kept[0].outcome, CapOutcome::HeldByStop, "{kept:?}");
    assert_eq!(w.openai.spend_limit(PROJECT), Some(1), "the stop wins");
}

// ---- Anthropic workspace spend limits (opt-in: an early-access preview) ----------------------

const WORKSPACE: &str = "workspace:wrkspc_r";

/// A world whose Anthropic workspace `wrkspc_r` is read by a budget on `anthropic/research`,
/// with its limit at Anthropic as `before` (cents), and key-guard opted in to spend limits.
async fn workspace_world(before: Option<u64>) -> (KeyGuardWorld, key_guard::handler::Handler) {
    let policy = parse_budgets(
        "budgets.toml",
        r#"
        version = 1
        [[budget]]
        id = "anthropic-research"
        scope = "anthropic/research"
        source = { kind = "anthropic", workspace_id = "wrkspc_r" }
        [[budget.window]]
        period = "monthly"
        limit = "900"
        tiers = [{ name = "emergency", percent = 100, actions = ["disable_keys"] }]
        [[key]]
        id = "research-k"
        provider = "anthropic"
        scope = "anthropic/research/k"
        key_id = "apikey_wr"
        "#,
    )
    .unwrap();
    let w = KeyGuardWorld::new(policy).await;
    w.anthropic.add("apikey_wr", true);
    w.anthropic.set_spend_limit_by_hand(WORKSPACE, before);
    let config = key_guard::config::Config {
        anthropic_spend_limits: true,
        ..w.config.clone()
    };
    let handler = key_guard::app::handler(&config, &w.sdk).await.unwrap();
    (w, handler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_sets_an_anthropic_workspace_limit_to_zero_and_restore_puts_back_exactly_it() {
    let (w, handler) = workspace_world(Some(50_000)).await;
    let event = emergency(
        "anthropic/research",
        "alert-ws-1",
        vec![Action::DisableKeys],
    );
    let report = handler.handle(event.clone()).await.unwrap();
    handler.handle(event).await.expect("a redelivery succeeds");
    assert_eq!(w.anthropic.spend_limit(WORKSPACE), Some(0), "{report:#}");
    assert_eq!(w.anthropic.active("apikey_wr"), Some(false), "the key too");
    let limit = resource(&report["alerts"][0], "anthropic:workspace:wrkspc_r");
    assert_eq!(
        limit["before"],
        json!({"state": "spend_limit", "cents": 50_000}),
        "{report:#}"
    );
    assert_eq!(
        w.anthropic.writes_for(WORKSPACE),
        ["spend_limit 0"],
        "set once for both deliveries"
    );
    handler
        .handle(json!({"action": "restore", "scope": "anthropic/research", "actor": "op"}))
        .await
        .unwrap();
    assert_eq!(w.anthropic.spend_limit(WORKSPACE), Some(50_000));
    assert_eq!(w.anthropic.active("apikey_wr"), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_workspace_limit_that_was_not_there_is_deleted_and_a_hand_change_is_left() {
    // none before: the restore deletes the limit the stop set
    let (w, handler) = workspace_world(None).await;
    let stop = emergency(
        "anthropic/research",
        "alert-ws-2",
        vec![Action::DisableKeys],
    );
    handler.handle(stop).await.unwrap();
    assert_eq!(w.anthropic.spend_limit(WORKSPACE), Some(0));
    handler
        .handle(json!({"action": "restore", "scope": "anthropic/research", "actor": "op"}))
        .await
        .unwrap();
    assert_eq!(w.anthropic.spend_limit(WORKSPACE), None, "deleted again");

    // changed at Anthropic during the stop: left as set, and said so
    let (w, handler) = workspace_world(Some(50_000)).await;
    let stop = emergency(
        "anthropic/research",
        "alert-ws-3",
        vec![Action::DisableKeys],
    );
    handler.handle(stop).await.unwrap();
    w.anthropic.set_spend_limit_by_hand(WORKSPACE, Some(70_000));
    let restored = handler
        .handle(json!({"action": "restore", "scope": "anthropic/research", "actor": "op"}))
        .await
        .unwrap();
    let limit = resource(&restored, "anthropic:workspace:wrkspc_r");
    assert_eq!(limit["outcome"], "changed_by_hand", "{restored:#}");
    assert_eq!(w.anthropic.spend_limit(WORKSPACE), Some(70_000));
}

// ---- throttling at Anthropic: a workspace's rate limits (issue 22 part 2) --------------------

/// `wrkspc_r`'s rate limits: a model group with one override of its own, a batch group, and a
/// files group (which spends nothing: a throttle leaves it).
fn add_workspace_rate_limits(anthropic: &ProviderState) {
    anthropic.add_org_rate_limit(
        "wrkspc_r",
        "rl_sonnet",
        "model_group",
        &["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"],
        json!({"requests_per_minute": 4000, "input_tokens_per_minute_cache_aware": 2_000_000, "output_tokens_per_minute": 400_000}),
    );
    anthropic.add_org_rate_limit(
        "wrkspc_r",
        "rl_batch",
        "batch",
        &[],
        json!({"requests_per_minute": 1000}),
    );
    anthropic.add_org_rate_limit(
        "wrkspc_r",
        "rl_files",
        "files",
        &[],
        json!({"requests_per_minute": 100}),
    );
    anthropic.set_workspace_override_by_hand(
        "wrkspc_r",
        "rl_sonnet",
        "output_tokens_per_minute",
        Some(100_000),
    );
}

/// A workspace's limits of one entry: limiter type → [value, its own override].
fn ws_limits(anthropic: &ProviderState, id: &str) -> Value {
    json!(anthropic.workspace_limits("wrkspc_r", id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_limits_sets_an_anthropic_workspaces_rate_limits_once_says_it_takes_an_hour_and_the_recovery_puts_back_exactly_them()
 {
    let (w, handler) = workspace_world(None).await;
    add_workspace_rate_limits(&w.anthropic);
    let original: Vec<Value> = ["rl_sonnet", "rl_batch", "rl_files"]
        .iter()
        .map(|id| ws_limits(&w.anthropic, id))
        .collect();
    let half = throttle_alert("anthropic/research", "alert-ws-rl", Decimal::new(5, 1));
    let handler = Arc::new(handler);
    let results = delivered_twice_at_once(&handler, &half).await;
    assert!(results.iter().any(Result::is_ok), "{results:?}");
    let out = handler.handle(half.clone()).await.unwrap();
    assert_eq!(
        out["alerts"][0]["provider_rate_limits"][0]["outcome"], "already_lowered",
        "{out:#}"
    );
    let lowered = results.iter().flatten().find_map(|r| {
        r["alerts"][0]["provider_rate_limits"]
            .as_array()?
            .iter()
            .find(|t| t["outcome"] == "lowered")
            .cloned()
    });
    let lowered = lowered.expect("one delivery lowered them");
    assert_eq!(lowered["resource"], "anthropic:workspace:wrkspc_r");
    assert_eq!(lowered["detail"]["models"], 2, "{lowered:#}");
    assert!(
        lowered["takes_effect"]
            .as_str()
            .is_some_and(|t| t.contains("about an hour")),
        "the output says Anthropic takes about an hour: {lowered:#}"
    );
    // half of what was in force, stored as the workspace's own overrides
    assert_eq!(
        ws_limits(&w.anthropic, "rl_sonnet"),
        json!({"input_tokens_per_minute_cache_aware": [1_000_000, true], "output_tokens_per_minute": [50_000, true], "requests_per_minute": [2000, true]})
    );
    assert_eq!(
        ws_limits(&w.anthropic, "rl_batch"),
        json!({"requests_per_minute": [500, true]})
    );
    assert_eq!(
        ws_limits(&w.anthropic, "rl_files"),
        original[2],
        "files spend nothing"
    );
    let rate_limit_writes = || {
        w.anthropic
            .writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.starts_with("wrkspc_r/"))
            .count()
    };
    assert_eq!(
        rate_limit_writes(),
        2,
        "one write per group for all deliveries"
    );
    assert_eq!(
        w.anthropic.active("apikey_wr"),
        Some(true),
        "a throttle stops no key"
    );
    assert_eq!(
        w.anthropic.spend_limit(WORKSPACE),
        None,
        "and sets no spend limit"
    );

    // an operator sets the batch group's limit by hand meanwhile
    w.anthropic.set_workspace_override_by_hand(
        "wrkspc_r",
        "rl_batch",
        "requests_per_minute",
        Some(700),
    );
    let out = handler.handle(recovery_of(&half)).await.unwrap();
    let report = &out["alerts"][0]["provider_rate_limits"][0];
    assert_eq!(report["outcome"], "restored", "{out:#}");
    assert!(report["takes_effect"].as_str().is_some(), "{report:#}");
    let left = report["detail"]["left"].to_string();
    assert!(
        left.contains("batch") && left.contains("left as the operator set it"),
        "{left}"
    );
    // exactly as before: the workspace's own override back, the organisation's values
    // inherited again (not stored as overrides)
    assert_eq!(ws_limits(&w.anthropic, "rl_sonnet"), original[0]);
    assert_eq!(
        ws_limits(&w.anthropic, "rl_batch"),
        json!({"requests_per_minute": [700, true]}),
        "the operator's value stays"
    );
    let writes = rate_limit_writes();
    let out = handler.handle(recovery_of(&half)).await.unwrap();
    assert_eq!(
        out["alerts"][0]["provider_rate_limits"][0]["outcome"],
        "not_lowered"
    );
    assert_eq!(
        rate_limit_writes(),
        writes,
        "a redelivered recovery sets nothing"
    );
}

/// The stand-in refuses what Anthropic's workspace rate-limit API refuses.
#[tokio::test]
async fn the_anthropic_rate_limit_stand_in_refuses_what_anthropic_refuses() {
    use spendguard_tests::admin_apis::{ANTHROPIC_ADMIN_KEY, anthropic_standin};
    let state = Arc::new(ProviderState::default());
    add_workspace_rate_limits(&state);
    let standin = anthropic_standin(state.clone()).await;
    let http = reqwest::Client::new();
    let base = format!("{}/v1/organizations/workspaces", standin.url);
    let set = format!("{base}/wrkspc_r/rate_limits/rl_sonnet");
    let rpm = |value: Value| json!({"limits": [{"type": "requests_per_minute", "value": value}]});
    let seventeen: Vec<Value> = (0..17)
        .map(|_| json!({"type": "requests_per_minute", "value": 1}))
        .collect();
    for (name, method, url, key, body, status, kind) in [
        (
            "no admin key",
            "POST",
            set.clone(),
            None,
            rpm(json!(10)),
            401,
            "authentication_error",
        ),
        (
            "a non-admin key",
            "POST",
            set.clone(),
            Some("sk-ant-api03-x"),
            rpm(json!(10)),
            401,
            "authentication_error",
        ),
        (
            "a value as a string",
            "POST",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            rpm(json!("10")),
            400,
            "invalid_request_error",
        ),
        (
            "a negative value",
            "POST",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            rpm(json!(-1)),
            400,
            "invalid_request_error",
        ),
        (
            "a fraction",
            "POST",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            rpm(json!(2.5)),
            400,
            "invalid_request_error",
        ),
        (
            "an unknown limiter type",
            "POST",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            json!({"limits": [{"type": "max_requests_per_1_minute", "value": 1}]}),
            400,
            "invalid_request_error",
        ),
        (
            "OpenAI's body shape",
            "POST",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            json!({"requests_per_minute": 10}),
            400,
            "invalid_request_error",
        ),
        (
            "no limits",
            "POST",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            json!({"limits": []}),
            400,
            "invalid_request_error",
        ),
        (
            "more than 16 limits",
            "POST",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            json!({"limits": seventeen}),
            400,
            "invalid_request_error",
        ),
        (
            "an unknown rate limit",
            "POST",
            format!("{base}/wrkspc_r/rate_limits/rl_nope"),
            Some(ANTHROPIC_ADMIN_KEY),
            rpm(json!(10)),
            404,
            "not_found_error",
        ),
        (
            "an unknown workspace",
            "POST",
            format!("{base}/wrkspc_nope/rate_limits/rl_sonnet"),
            Some(ANTHROPIC_ADMIN_KEY),
            rpm(json!(10)),
            404,
            "not_found_error",
        ),
        (
            "a write by GET",
            "GET",
            set.clone(),
            Some(ANTHROPIC_ADMIN_KEY),
            json!({}),
            405,
            "invalid_request_error",
        ),
        (
            "a page size over 1000",
            "GET",
            format!("{base}/wrkspc_r/rate_limits?limit=1001"),
            Some(ANTHROPIC_ADMIN_KEY),
            json!({}),
            400,
            "invalid_request_error",
        ),
        (
            "OpenAI's cursor",
            "GET",
            format!("{base}/wrkspc_r/rate_limits?after=rl_batch"),
            Some(ANTHROPIC_ADMIN_KEY),
            json!({}),
            400,
            "invalid_request_error",
        ),
    ] {
        let mut request = http
            .request(method.parse().unwrap(), url)
            .header("anthropic-version", "2023-06-01");
        if method == "POST" {
            request = request.json(&body);
        }
        if let Some(k) = key {
            request = request.header("x-api-key", k);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["type"], kind, "{name}: {answer}");
    }
    assert!(
        state.writes.lock().unwrap().is_empty(),
        "nothing refused was applied"
    );
    // what it takes: an integer, or null to clear the workspace's own value
    for (value, expected) in [
        (json!(10), json!([10, true])),
        (json!(null), json!([4000, false])),
    ] {
        let ok = http
            .post(&set)
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", ANTHROPIC_ADMIN_KEY)
            .json(&rpm(value))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        assert_eq!(
            json!(state.workspace_limits("wrkspc_r", "rl_sonnet"))["requests_per_minute"],
            expected
        );
    }
}

/// At-least-once delivery after the fact: a `reduce_limits` alert delivered again after its
/// recovery (or first seen after it, out of order) lowers nothing — neither the limit factor
/// nor the providers' rate limits, which no later recovery would lift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_delivered_again_after_its_recovery_lowers_nothing() {
    let w = throttle_world().await;
    let original = limits(&w.openai, "rl-gpt-4o");
    let half = throttle_alert("ai/batch", "alert-rl-late", Decimal::new(5, 1));
    w.handler.handle(half.clone()).await.unwrap();
    assert_ne!(limits(&w.openai, "rl-gpt-4o"), original);
    w.handler.handle(recovery_of(&half)).await.unwrap();
    assert_eq!(limits(&w.openai, "rl-gpt-4o"), original);
    let writes = rate_limit_writes(&w.openai);

    let replay = w.handler.handle(half.clone()).await.unwrap();
    assert_eq!(limits(&w.openai, "rl-gpt-4o"), original, "{replay:#}");
    assert_eq!(rate_limit_writes(&w.openai), writes, "{replay:#}");
    assert_eq!(replay["alerts"][0]["limit_factor"], "1", "{replay:#}");

    // out of order: the recovery arrives before its alert
    let other = throttle_alert("ai/batch", "alert-rl-early", Decimal::new(2, 1));
    w.handler.handle(recovery_of(&other)).await.unwrap();
    let late = w.handler.handle(other).await.unwrap();
    assert_eq!(limits(&w.openai, "rl-gpt-4o"), original, "{late:#}");
    assert_eq!(late["alerts"][0]["limit_factor"], "1", "{late:#}");
}
