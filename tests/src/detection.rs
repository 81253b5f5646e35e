//! Key-theft detection on synthetic histories, the same cases on every store backend:
//! `detection_suite!(make_store)` turns each case into a test. Histories are ingested as usage
//! records (so they go through the hour counters as production usage does), then the scan
//! that every scheduled check runs looks at the key.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use spendguard_app::flows::security::{SecurityScan, acknowledge};
use spendguard_domain::alert::{AlertEvent, AlertKind};
use spendguard_domain::budget::{Action, Severity};
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::period::Zone;
use spendguard_domain::records::{KillSwitch, SwitchState};
use spendguard_domain::scope::Scope;
use spendguard_domain::security::ScanReport;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::settings::{Detector, PlannedWindow, SecurityPolicy, ThreatLevel};
use spendguard_domain::usage::USAGE_MARKER_TTL;
use spendguard_domain::usage::UsageEntry;
use spendguard_local::memory_bus::MemoryBus;
use std::sync::Arc;

use crate::conformance::{Store, record};
use crate::usage_apis::{OPENAI_ADMIN_KEY, UsageLedger, usage_standin};
use spendguard_app::ports::key_usage::KeyUsageSource;
use spendguard_domain::secret::Secret;
use spendguard_http::client::HttpSettings;
use spendguard_http::sources::key_usage::ProviderKeyUsage;

const KEY: &str = "key-1";
const KEY_SCOPE: &str = "openai/prod/key-1";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Registers the key (Anthropic's `apikey_01`) with `security` as the policy.
async fn watch(store: &Store, security: SecurityPolicy) -> PolicySet {
    watch_key(store, security, ProviderKind::Anthropic, "apikey_01").await
}

/// Registers the key as `provider`'s `key_id` with `security` as the policy.
async fn watch_key(
    store: &Store,
    security: SecurityPolicy,
    provider: ProviderKind,
    key_id: &str,
) -> PolicySet {
    let mut policy = PolicySet {
        keys: vec![KeySpec {
            id: KEY.into(),
            provider,
            scope: Scope::parse(KEY_SCOPE).unwrap(),
            secret_arn: None,
            key_id: Some(key_id.into()),
            project_id: None,
            user: None,
            rotation: None,
            allow_delete: false,
        }],
        ..PolicySet::default()
    };
    policy.settings.security = security;
    policy
        .settings
        .routing
        .insert("security".into(), vec!["log".into()]);
    store.put_policy(&policy).await.unwrap();
    policy
}

/// One usage record of the key: `cents` and `requests`, at `when`.
fn usage(id: &str, cents: i64, requests: u64, when: DateTime<Utc>) -> UsageEntry {
    let mut r = record(id, KEY_SCOPE, cents, when);
    r.requests = requests;
    UsageEntry::of(&r, &[Zone::UTC])
}

/// `days` weekdays of office hours (09:00-17:00 UTC) before `today`, day `n` back spending
/// `cents(n)` and 50 requests an hour.
async fn office_hours(store: &Store, today: DateTime<Utc>, days: i64, cents: impl Fn(i64) -> i64) {
    let mut entries = Vec::new();
    let midnight = today.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    for n in 1..=days {
        let day = midnight - Duration::days(n);
        if day.format("%u").to_string().parse::<u32>().unwrap() > 5 {
            continue;
        }
        for hour in 9..17 {
            let when = day + Duration::hours(hour) + Duration::minutes(30);
            entries.push(usage(&format!("hist-{n}-{hour}"), cents(n), 50, when));
        }
    }
    store
        .ingest_usage(&entries, today, USAGE_MARKER_TTL)
        .await
        .unwrap();
}

/// `total_cents` and `requests` spread over ten records from `start`, a minute apart.
async fn burst_of_use(
    store: &Store,
    tag: &str,
    start: DateTime<Utc>,
    total_cents: i64,
    requests: u64,
) {
    let entries: Vec<UsageEntry> = (0..10)
        .map(|i| {
            usage(
                &format!("{tag}-{i}"),
                total_cents / 10,
                requests / 10,
                start + Duration::minutes(i),
            )
        })
        .collect();
    store
        .ingest_usage(&entries, start, USAGE_MARKER_TTL)
        .await
        .unwrap();
}

async fn scan(
    store: &Store,
    bus: &MemoryBus,
    policy: &PolicySet,
    now: DateTime<Utc>,
) -> ScanReport {
    scan_with(store, bus, policy, now, &[]).await
}

/// The scan with the providers' own usage per key read through `key_usage`.
async fn scan_with(
    store: &Store,
    bus: &MemoryBus,
    policy: &PolicySet,
    now: DateTime<Utc>,
    key_usage: &[Arc<dyn KeyUsageSource>],
) -> ScanReport {
    SecurityScan {
        store: store.as_ref(),
        bus,
        key_usage,
        settings: &policy.settings,
        now,
        run_id: &uuid::Uuid::new_v4().to_string(),
        dry_run: false,
        lease: Duration::minutes(5),
    }
    .run()
    .await
    .unwrap()
}

fn detectors(event: &AlertEvent) -> Vec<String> {
    // as the wire carries them
    serde_json::to_value(&event.details).unwrap()["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["detector"].as_str().unwrap().to_string())
        .collect()
}

/// A key used only in office hours spends 12.5x its usual hour at 03:00: a spike and an hour
/// it was never used at, together critical (disable the key, page) by default; with the
/// spike configured as medium, the pair is high (rotate).
pub async fn a_night_spike_on_an_office_hours_key_is_found_and_mapped(store: Store) {
    let now = at("2026-11-23T03:20:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    burst_of_use(&store, "night", at("2026-11-23T03:05:00Z"), 2500, 600).await;

    let policy = watch(&store, SecurityPolicy::default()).await;
    let bus = MemoryBus::default();
    let report = scan(&store, &bus, &policy, now).await;
    assert_eq!(report.keys_watched, 1);
    let events = bus.events();
    assert_eq!(events.len(), 1, "{report:?}");
    let e = &events[0];
    assert_eq!(e.kind, AlertKind::Security);
    assert_eq!(e.tier, "security-critical");
    assert_eq!(e.severity, Severity::Emergency);
    assert_eq!(e.actions, [Action::DisableKeys, Action::Notify]);
    assert_eq!(e.scope.as_str(), KEY_SCOPE);
    assert_eq!(detectors(e), ["spike", "off_hours"]);
    assert!(
        e.summary.contains("12.5x the usual 2.00 USD"),
        "{}",
        e.summary
    );

    // the same history, the spike mapped to medium by the budgets file
    let mut configured = SecurityPolicy::default();
    configured
        .levels
        .insert(Detector::Spike, ThreatLevel::Medium);
    let policy = watch(&store, configured).await;
    let bus = MemoryBus::default();
    scan(&store, &bus, &policy, now + Duration::minutes(5)).await;
    let events = bus.events();
    assert_eq!(
        events.len(),
        1,
        "a new level in the same hour is a new finding"
    );
    assert_eq!(events[0].tier, "security-high");
    assert_eq!(events[0].actions, [Action::RotateKeys, Action::Notify]);
}

/// Spend that grows 4% a day for four weeks is growth, not theft.
pub async fn a_steady_ramp_over_weeks_is_not_a_finding(store: Store) {
    let now = at("2026-11-23T10:40:00Z");
    // 28 days back: 100 cents, rising to about 300 cents yesterday
    let cents = |n: i64| (100.0 * 1.04f64.powi((28 - n) as i32)).round() as i64;
    office_hours(&store, now, 28, cents).await;
    let today = usage("today-10", cents(0), 50, at("2026-11-23T10:30:00Z"));
    store
        .ingest_usage(&[today], now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    let policy = watch(&store, SecurityPolicy::default()).await;
    let bus = MemoryBus::default();
    let report = scan(&store, &bus, &policy, now).await;
    assert_eq!(report.keys_watched, 1);
    assert!(report.findings.is_empty(), "{report:?}");
    assert!(bus.events().is_empty());
}

/// A load test announced in the budgets file: the same night spike is recorded, not raised.
pub async fn a_planned_window_suppresses_the_finding(store: Store) {
    let now = at("2026-11-23T03:20:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    burst_of_use(&store, "night", at("2026-11-23T03:05:00Z"), 2500, 600).await;
    let mut security = SecurityPolicy::default();
    security.planned.push(PlannedWindow {
        key: KEY.into(),
        from: at("2026-11-23T02:00:00Z"),
        to: at("2026-11-23T05:00:00Z"),
        reason: "load test".into(),
    });
    let policy = watch(&store, security).await;
    let bus = MemoryBus::default();
    let report = scan(&store, &bus, &policy, now).await;
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].outcome, "planned: load test");
    assert!(bus.events().is_empty());
}

/// Runs every five minutes (two of them at once) raise one finding for the hour; once an
/// operator acknowledges it, the same pattern stays quiet for the rest of the day.
pub async fn a_finding_is_raised_once_per_hour_and_an_ack_quiets_the_day(store: Store) {
    let now = at("2026-11-23T03:20:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    burst_of_use(&store, "night", at("2026-11-23T03:05:00Z"), 2500, 600).await;
    let policy = watch(&store, SecurityPolicy::default()).await;
    let bus = MemoryBus::default();
    let (a, b) = tokio::join!(
        scan(&store, &bus, &policy, now),
        scan(&store, &bus, &policy, now)
    );
    let later = scan(&store, &bus, &policy, now + Duration::minutes(5)).await;
    let events = bus.events();
    assert_eq!(events.len(), 1, "{a:?} {b:?} {later:?}");
    assert_eq!(later.findings[0].outcome, "already_raised");

    let acked = acknowledge(
        store.as_ref(),
        &events[0].alert_id,
        "alice",
        "batch re-index, expected",
        now + Duration::minutes(10),
    )
    .await
    .unwrap();
    assert!(acked);
    // the pattern again the next hour: acknowledged for today, nothing raised
    burst_of_use(&store, "night-2", at("2026-11-23T04:05:00Z"), 2500, 600).await;
    let next_hour = scan(&store, &bus, &policy, at("2026-11-23T04:20:00Z")).await;
    let outcomes: Vec<&str> = next_hour
        .findings
        .iter()
        .map(|f| f.outcome.as_str())
        .collect();
    // the acknowledgement covers the day: the hour it was raised for and the next
    assert_eq!(outcomes, ["acknowledged", "acknowledged"], "{next_hour:?}");
    assert_eq!(bus.events().len(), 1);
    assert!(
        !acknowledge(store.as_ref(), "no-such-alert", "alice", "?", now)
            .await
            .unwrap()
    );
}

/// 150 requests within one second at 12:04 on 23 November: a burst of a brand-new key.
async fn burst_at_12_04(store: &Store) {
    let entries: Vec<UsageEntry> = (0..3)
        .map(|i| {
            usage(
                &format!("b-{i}"),
                5,
                50,
                at("2026-11-23T12:04:10Z") + Duration::seconds(i),
            )
        })
        .collect();
    store
        .ingest_usage(&entries, at("2026-11-23T12:10:00Z"), USAGE_MARKER_TTL)
        .await
        .unwrap();
}

/// A burst needs no history: 150 requests in one minute from a brand-new key is medium.
pub async fn a_burst_is_found_without_history(store: Store) {
    let now = at("2026-11-23T12:10:00Z");
    burst_at_12_04(&store).await;
    let policy = watch(&store, SecurityPolicy::default()).await;
    let bus = MemoryBus::default();
    scan(&store, &bus, &policy, now).await;
    let events = bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(detectors(&events[0]), ["burst"]);
    assert_eq!(events[0].tier, "security-medium");
    assert_eq!(
        events[0].actions,
        [
            Action::ReduceLimits {
                factor: Decimal::new(1, 1)
            },
            Action::Notify
        ]
    );
    assert_eq!(events[0].channels, ["log"], "routed by `security`");
}

/// A burst throttles the key (medium: reduce_limits 0.1, carried out by key-guard); once a
/// whole hour after the finding's has passed quietly, the finding's recovery is published once
/// (key-guard lifts the factor it set).
pub async fn a_throttled_key_gets_its_limit_back_after_a_quiet_hour(store: Store) {
    burst_at_12_04(&store).await;
    let policy = watch(&store, SecurityPolicy::default()).await;
    let bus = MemoryBus::default();
    scan(&store, &bus, &policy, at("2026-11-23T12:10:00Z")).await;
    let finding = bus.events()[0].clone();
    assert_eq!(finding.tier, "security-medium");
    // what key-guard does with it
    let scope = Scope::parse(KEY_SCOPE).unwrap();
    store
        .put_kill_switch(
            &KillSwitch {
                scope: scope.clone(),
                state: SwitchState::Open,
                limit_factor: Decimal::new(1, 1),
                updated_at: at("2026-11-23T12:10:00Z"),
                released: Vec::new(),
            },
            None,
            &spendguard_domain::records::AuditEntry {
                id: "throttle".into(),
                at: at("2026-11-23T12:10:00Z"),
                actor: "security".into(),
                action: "limit_factor_set".into(),
                scope: Some(scope.clone()),
                detail: serde_json::json!({"limit_factor": "0.1"}),
            },
        )
        .await
        .unwrap();
    // 13:30: the finding's hour (12:00) is the previous hour's neighbour: still throttled
    let early = scan(&store, &bus, &policy, at("2026-11-23T13:30:00Z")).await;
    assert!(early.throttles_lifted.is_empty(), "{early:?}");
    // 14:05: 13:00 passed without a finding; twice, as concurrent checks would
    let (a, b) = tokio::join!(
        scan(&store, &bus, &policy, at("2026-11-23T14:05:00Z")),
        scan(&store, &bus, &policy, at("2026-11-23T14:05:00Z"))
    );
    assert_eq!(a.throttles_lifted.len() + b.throttles_lifted.len(), 1);
    let events = bus.events();
    assert_eq!(events.len(), 2);
    let recovery = &events[1];
    assert_eq!(recovery.kind, AlertKind::Recovery);
    assert_eq!(
        recovery.related_alert_id.as_deref(),
        Some(finding.alert_id.as_str())
    );
    assert_eq!(
        recovery.actions, finding.actions,
        "key-guard lifts what it carries"
    );
    let later = scan(&store, &bus, &policy, at("2026-11-23T15:05:00Z")).await;
    assert!(later.throttles_lifted.is_empty());
    assert_eq!(bus.events().len(), 2, "lifted once");
}

/// A key last used seven weeks ago — before the baseline's four-week window — wakes up: the
/// month counters still know it was dormant.
pub async fn a_key_idle_for_longer_than_the_window_is_dormant(store: Store) {
    let now = at("2026-11-23T10:20:00Z");
    let old: Vec<UsageEntry> = (45..=60)
        .map(|back| {
            usage(
                &format!("old-{back}"),
                200,
                40,
                at("2026-11-23T10:30:00Z") - Duration::days(back),
            )
        })
        .collect();
    store
        .ingest_usage(&old, now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    let today = usage("wake", 200, 40, at("2026-11-23T10:05:00Z"));
    store
        .ingest_usage(&[today], now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    let policy = watch(&store, SecurityPolicy::default()).await;
    let bus = MemoryBus::default();
    scan(&store, &bus, &policy, now).await;
    let events = bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(detectors(&events[0]), ["dormant"]);
    assert!(
        events[0]
            .summary
            .contains("used after 45 idle days (last use 2026-10-09)"),
        "{}",
        events[0].summary
    );
    assert_eq!(events[0].tier, "security-medium");
}

/// OpenAI's usage per key through the usage stand-in at `url`.
fn openai_usage(url: &str) -> Arc<dyn KeyUsageSource> {
    Arc::new(ProviderKeyUsage::new(
        ProviderKind::Openai,
        reqwest::Client::new(),
        url,
        Secret::new(OPENAI_ADMIN_KEY),
        HttpSettings::default(),
    ))
}

/// A thief uses an office-hours key at 01:00 for embeddings and images only, and no
/// application reports it. OpenAI delivers that hour two hours late (visible from 03:05):
/// the checks at 01:30 and 02:10 see nothing; the first check after it arrives (03:10) finds
/// it, for the hour it happened in; the next check (03:15) re-reads it and raises nothing more.
pub async fn a_thiefs_late_embeddings_and_images_are_found_when_they_arrive(store: Store) {
    let now = at("2026-11-23T03:10:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    let ledger = Arc::new(UsageLedger::default());
    let thief_hour = at("2026-11-23T01:00:00Z");
    let arrives = at("2026-11-23T03:05:00Z");
    ledger.add(
        "embeddings",
        "key_thief",
        "text-embedding-3-large",
        thief_hour,
        &[("input_tokens", 40_000_000), ("num_model_requests", 400)],
        arrives,
    );
    ledger.add(
        "images",
        "key_thief",
        "gpt-image-1",
        thief_hour,
        &[("images", 300), ("num_model_requests", 300)],
        arrives,
    );
    let standin = usage_standin(ledger.clone()).await;
    let sources = [openai_usage(&standin.url)];
    let policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_thief",
    )
    .await;
    let bus = MemoryBus::default();
    for early in ["2026-11-23T01:30:00Z", "2026-11-23T02:10:00Z"] {
        ledger.set_now(at(early));
        let report = scan_with(&store, &bus, &policy, at(early), &sources).await;
        assert!(report.failures.is_empty(), "{report:?}");
        assert!(report.findings.is_empty(), "{early}: {report:?}");
    }
    ledger.set_now(now);
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    assert!(report.failures.is_empty(), "{report:?}");
    let events = bus.events();
    assert_eq!(events.len(), 1, "{report:?}");
    assert_eq!(
        events[0].period_key, "H#2026-11-23T01",
        "the hour it happened in"
    );
    assert_eq!(detectors(&events[0]), ["spike", "off_hours"]);
    assert!(
        events[0].summary.contains("700 requests"),
        "embeddings and images counted: {}",
        events[0].summary
    );
    let later = now + Duration::minutes(5);
    ledger.set_now(later);
    let again = scan_with(&store, &bus, &policy, later, &sources).await;
    assert_eq!(bus.events().len(), 1, "raised once: {again:?}");
    assert_eq!(again.findings[0].outcome, "already_raised");
}

/// A thief uses the office-hours key at 23:00 on Sunday; OpenAI delivers that hour at 02:00
/// on Monday, before Monday's first check (03:10). The baseline Monday's check learns must not
/// count the hour it is judging as the key's usual use: it is off hours and a spike.
pub async fn a_late_hour_of_the_previous_day_is_not_its_own_baseline(store: Store) {
    let now = at("2026-11-23T03:10:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    let ledger = Arc::new(UsageLedger::default());
    ledger.add(
        "embeddings",
        "key_thief",
        "text-embedding-3-large",
        at("2026-11-22T23:00:00Z"),
        &[("input_tokens", 40_000_000), ("num_model_requests", 700)],
        at("2026-11-23T02:00:00Z"),
    );
    ledger.set_now(now);
    let standin = usage_standin(ledger).await;
    let sources = [openai_usage(&standin.url)];
    let policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_thief",
    )
    .await;
    let bus = MemoryBus::default();
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    assert!(report.failures.is_empty(), "{report:?}");
    let events = bus.events();
    assert_eq!(events.len(), 1, "{report:?}");
    assert_eq!(events[0].period_key, "H#2026-11-22T23");
    assert_eq!(detectors(&events[0]), ["spike", "off_hours"]);
}

/// OpenAI's images endpoint is down while the thief's 40M embedding tokens at 01:00 arrive:
/// the embeddings still count (the finding is raised), the images outage is a failure of the
/// run naming the kind, and the provider's watermark is not advanced, so the hours are read
/// again by the next check.
pub async fn one_usage_kind_down_blinds_only_that_kind(store: Store) {
    let now = at("2026-11-23T03:10:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    let ledger = Arc::new(UsageLedger::default());
    ledger.add(
        "embeddings",
        "key_thief",
        "text-embedding-3-large",
        at("2026-11-23T01:00:00Z"),
        &[("input_tokens", 40_000_000), ("num_model_requests", 400)],
        at("2026-11-23T01:30:00Z"),
    );
    ledger.fail_kind("images");
    ledger.set_now(now);
    let standin = usage_standin(ledger.clone()).await;
    let sources = [openai_usage(&standin.url)];
    let policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_thief",
    )
    .await;
    let bus = MemoryBus::default();
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    assert_eq!(bus.events().len(), 1, "{report:?}");
    assert_eq!(bus.events()[0].period_key, "H#2026-11-23T01");
    assert!(
        report.failures.iter().any(|f| f.contains("images")),
        "the kind that failed is named: {report:?}"
    );
    let watermark = store
        .get_cached("security-provider-watermark#openai", now)
        .await
        .unwrap();
    assert_eq!(
        watermark, None,
        "not advanced past unread images: {report:?}"
    );
}

/// Checks stop at 01:10 and resume at 12:10 (an outage): the thief's 03:00 hour is older than
/// the lateness window, but the provider's watermark (01:00) says it was never read: the
/// check catches up from there and finds it.
pub async fn a_check_after_an_outage_catches_up_from_the_watermark(store: Store) {
    let now = at("2026-11-23T12:10:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    let ledger = Arc::new(UsageLedger::default());
    ledger.add(
        "embeddings",
        "key_thief",
        "text-embedding-3-large",
        at("2026-11-23T03:00:00Z"),
        &[("input_tokens", 40_000_000), ("num_model_requests", 700)],
        at("2026-11-23T03:30:00Z"),
    );
    let standin = usage_standin(ledger.clone()).await;
    let sources = [openai_usage(&standin.url)];
    let policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_thief",
    )
    .await;
    let bus = MemoryBus::default();
    ledger.set_now(at("2026-11-23T01:10:00Z"));
    scan_with(&store, &bus, &policy, at("2026-11-23T01:10:00Z"), &sources).await;
    ledger.set_now(now);
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    let events = bus.events();
    assert_eq!(events.len(), 1, "{report:?}");
    assert_eq!(events[0].period_key, "H#2026-11-23T03");
    // caught up: the next check reads the usual trailing window again
    let later = scan_with(&store, &bus, &policy, now + Duration::minutes(5), &sources).await;
    assert!(later.findings.is_empty(), "{later:?}");
}

/// Checks stop for three days: the thief's hour found on catch-up is more than two days old,
/// and its finding can still be acknowledged (`spendguard ack`) after it is raised.
pub async fn a_finding_caught_up_days_late_can_be_acknowledged(store: Store) {
    let now = at("2026-11-23T12:10:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    let ledger = Arc::new(UsageLedger::default());
    ledger.add(
        "embeddings",
        "key_thief",
        "text-embedding-3-large",
        at("2026-11-20T03:00:00Z"),
        &[("input_tokens", 40_000_000), ("num_model_requests", 700)],
        at("2026-11-20T03:30:00Z"),
    );
    let standin = usage_standin(ledger.clone()).await;
    let sources = [openai_usage(&standin.url)];
    let policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_thief",
    )
    .await;
    let bus = MemoryBus::default();
    ledger.set_now(at("2026-11-20T01:10:00Z"));
    scan_with(&store, &bus, &policy, at("2026-11-20T01:10:00Z"), &sources).await;
    ledger.set_now(now);
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    let events = bus.events();
    assert_eq!(events.len(), 1, "{report:?}");
    assert_eq!(events[0].period_key, "H#2026-11-20T03");
    let later = now + Duration::minutes(30);
    let found = acknowledge(
        store.as_ref(),
        &events[0].alert_id,
        "ops",
        "expected",
        later,
    )
    .await
    .unwrap();
    assert!(found, "the finding is kept for ack from when it was raised");
}

/// The outage of the test above, but the first check after it fails on the store (a stored
/// baseline it cannot read) after reading the provider: the next check still catches up from
/// the watermark of the last completed run (01:00) and finds the thief's 03:00 hour.
pub async fn a_check_that_fails_midway_leaves_the_watermark_for_the_next(store: Store) {
    let now = at("2026-11-23T12:10:00Z");
    office_hours(&store, now, 21, |_| 200).await;
    let ledger = Arc::new(UsageLedger::default());
    ledger.add(
        "embeddings",
        "key_thief",
        "text-embedding-3-large",
        at("2026-11-23T03:00:00Z"),
        &[("input_tokens", 40_000_000), ("num_model_requests", 700)],
        at("2026-11-23T03:30:00Z"),
    );
    let standin = usage_standin(ledger.clone()).await;
    let sources = [openai_usage(&standin.url)];
    let policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_thief",
    )
    .await;
    let bus = MemoryBus::default();
    ledger.set_now(at("2026-11-23T01:10:00Z"));
    scan_with(&store, &bus, &policy, at("2026-11-23T01:10:00Z"), &sources).await;
    ledger.set_now(now);
    let baseline_cache = format!("security-baseline#{KEY}#2026-11-23");
    store
        .put_cached(&baseline_cache, "not a baseline", now + Duration::days(1))
        .await
        .unwrap();
    let failed = SecurityScan {
        store: store.as_ref(),
        bus: &bus,
        key_usage: &sources,
        settings: &policy.settings,
        now,
        run_id: "run-that-fails",
        dry_run: false,
        lease: Duration::minutes(5),
    }
    .run()
    .await;
    assert!(failed.is_err(), "{failed:?}");
    store.put_cached(&baseline_cache, "", now).await.unwrap();
    let later = now + Duration::minutes(5);
    let report = scan_with(&store, &bus, &policy, later, &sources).await;
    let events = bus.events();
    assert_eq!(events.len(), 1, "{report:?}");
    assert_eq!(events[0].period_key, "H#2026-11-23T03");
}

/// The two ledgers of one key: at 09:00 its applications report 10 USD and OpenAI counts
/// gpt-4o tokens worth 15 USD at the price book (1.5x: an instrumented key); at 10:00 they
/// report 10 USD again but OpenAI counts 30 USD (3x): exactly one `unreported_spend` finding,
/// for 10:00, raised once however often the hour is re-read — and not before the hour has
/// ended and had its grace for late reports (10:40 and 11:05 judge nothing; 11:20 does).
pub async fn spend_the_provider_counted_and_nobody_reported_is_one_finding(store: Store) {
    let now = at("2026-11-23T11:20:00Z");
    let reported = [
        usage("app-09", 1000, 40, at("2026-11-23T09:10:00Z")),
        usage("app-10", 1000, 40, at("2026-11-23T10:10:00Z")),
    ];
    store
        .ingest_usage(&reported, now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    let ledger = Arc::new(UsageLedger::default());
    // 2.50 USD per million input tokens: 6M is 15 USD, 12M is 30 USD
    for (hour, tokens) in [
        ("2026-11-23T09:00:00Z", 6_000_000),
        ("2026-11-23T10:00:00Z", 12_000_000),
    ] {
        // the usage data names the dated snapshot; the price book its base model
        ledger.add(
            "completions",
            "key_app",
            "gpt-4o-2024-08-06",
            at(hour),
            &[("input_tokens", tokens), ("num_model_requests", 40)],
            at(hour),
        );
    }
    ledger.set_now(now);
    let standin = usage_standin(ledger).await;
    let sources = [openai_usage(&standin.url)];
    let mut policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_app",
    )
    .await;
    policy.settings.prices.0.insert(
        "openai/gpt-4o".into(),
        spendguard_domain::pricing::Price {
            currency: spendguard_domain::money::Currency::USD,
            input: Decimal::new(250, 2),
            output: Decimal::from(10),
            cached_input: None,
            cache_write: None,
            batch_percent: None,
            long_context: None,
        },
    );
    let bus = MemoryBus::default();
    for open in ["2026-11-23T10:40:00Z", "2026-11-23T11:05:00Z"] {
        let report = scan_with(&store, &bus, &policy, at(open), &sources).await;
        assert!(
            report.findings.is_empty(),
            "{open}: hour 10 not judged yet: {report:?}"
        );
    }
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    assert!(report.failures.is_empty(), "{report:?}");
    let events = bus.events();
    assert_eq!(events.len(), 1, "{report:?}");
    assert_eq!(detectors(&events[0]), ["unreported_spend"]);
    assert_eq!(events[0].period_key, "H#2026-11-23T10");
    assert_eq!(events[0].tier, "security-medium");
    assert!(
        events[0].summary.contains(
            "the provider counted 30.00 USD (completions 12000000 tokens; 3x the reported), the applications reported 10.00 USD"
        ),
        "{}",
        events[0].summary
    );
    let again = scan_with(&store, &bus, &policy, now + Duration::minutes(5), &sources).await;
    assert_eq!(bus.events().len(), 1, "{again:?}");
}

/// A key whose applications report one daily total (`covers_minutes: 1440`, at 23:30) has no
/// hour to compare with the provider's: OpenAI's 30 USD of tokens at 10:00, nothing reported
/// in that hour yet, is not `unreported_spend`.
pub async fn a_key_reporting_daily_totals_is_not_judged_unreported_by_the_hour(store: Store) {
    let now = at("2026-11-23T11:20:00Z");
    let daily: Vec<UsageEntry> = (1..=3)
        .map(|n| {
            let when = at("2026-11-23T23:30:00Z") - Duration::days(n);
            let mut r = record(&format!("day-{n}"), KEY_SCOPE, 50_00, when);
            r.requests = 800;
            r.covers_minutes = 1440;
            UsageEntry::of(&r, &[Zone::UTC])
        })
        .collect();
    store
        .ingest_usage(&daily, now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    let ledger = Arc::new(UsageLedger::default());
    ledger.add(
        "completions",
        "key_app",
        "gpt-4o",
        at("2026-11-23T10:00:00Z"),
        &[("input_tokens", 12_000_000), ("num_model_requests", 40)],
        at("2026-11-23T10:00:00Z"),
    );
    ledger.set_now(now);
    let standin = usage_standin(ledger).await;
    let sources = [openai_usage(&standin.url)];
    let mut policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_app",
    )
    .await;
    policy.settings.prices.0.insert(
        "openai/gpt-4o".into(),
        spendguard_domain::pricing::Price {
            currency: spendguard_domain::money::Currency::USD,
            input: Decimal::new(250, 2),
            output: Decimal::from(10),
            cached_input: None,
            cache_write: None,
            batch_percent: None,
            long_context: None,
        },
    );
    let bus = MemoryBus::default();
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(report.findings.is_empty(), "{report:?}");
}

/// The price book says 5.00 USD per million gpt-4o input tokens; OpenAI charged project
/// proj_a 10 USD for the 4M it counted on 22 November (2.50: the book is off by 2x), and
/// exactly the book's price for gpt-4o-mini. The first check on the 23rd whose 22nd has
/// settled reports one drift naming gpt-4o; the next check reports nothing more.
pub async fn a_price_book_off_by_twice_is_one_drift_naming_the_model(store: Store) {
    let now = at("2026-11-23T10:40:00Z");
    let day = at("2026-11-22T00:00:00Z");
    let ledger = Arc::new(UsageLedger::default());
    ledger.key_in_project("key_app", "proj_a");
    for (model, tokens) in [("gpt-4o", 4_000_000), ("gpt-4o-mini", 10_000_000)] {
        ledger.add(
            "completions",
            "key_app",
            model,
            day + Duration::hours(12),
            &[("input_tokens", tokens), ("num_model_requests", 100)],
            day + Duration::hours(13),
        );
    }
    ledger.charge("proj_a", "gpt-4o, input", day, "10.0");
    ledger.charge("proj_a", "gpt-4o-mini, input", day, "6.0");
    ledger.set_now(now);
    let standin = usage_standin(ledger).await;
    let sources = [openai_usage(&standin.url)];
    let mut policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_app",
    )
    .await;
    for (model, input) in [
        ("gpt-4o", Decimal::from(5)),
        ("gpt-4o-mini", Decimal::new(60, 2)),
    ] {
        policy.settings.prices.0.insert(
            format!("openai/{model}"),
            spendguard_domain::pricing::Price {
                currency: spendguard_domain::money::Currency::USD,
                input,
                output: Decimal::ZERO,
                cached_input: None,
                cache_write: None,
                batch_percent: None,
                long_context: None,
            },
        );
    }
    let bus = MemoryBus::default();
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.price_book_drift.len(), 1, "{report:?}");
    let drift = &report.price_book_drift[0];
    assert_eq!(
        drift.summary(),
        "price book drift: gpt-4o on 2026-11-22 in proj_a: priced 20.00 USD at the price book, charged 10.00 USD by the provider (2x)"
    );
    let later = scan_with(&store, &bus, &policy, now + Duration::minutes(5), &sources).await;
    assert!(later.price_book_drift.is_empty(), "once per day: {later:?}");
    assert!(bus.events().is_empty(), "a warning, not a security finding");
}

/// OpenAI charged proj_a 5 USD for 4M gpt-4o input tokens sent through the Batch API (half
/// the book's 2.50): the batch discount is not a price book that drifted.
pub async fn batch_usage_at_half_price_is_no_drift(store: Store) {
    let now = at("2026-11-23T10:40:00Z");
    let day = at("2026-11-22T00:00:00Z");
    let ledger = Arc::new(UsageLedger::default());
    ledger.key_in_project("key_app", "proj_a");
    ledger.add_batch(
        "key_app",
        "gpt-4o-2024-08-06",
        day + Duration::hours(12),
        &[("input_tokens", 4_000_000), ("num_model_requests", 100)],
        day + Duration::hours(13),
    );
    ledger.charge("proj_a", "gpt-4o-2024-08-06, batch input", day, "5.0");
    ledger.set_now(now);
    let standin = usage_standin(ledger).await;
    let sources = [openai_usage(&standin.url)];
    let mut policy = watch_key(
        &store,
        SecurityPolicy::default(),
        ProviderKind::Openai,
        "key_app",
    )
    .await;
    policy.settings.prices.0.insert(
        "openai/gpt-4o".into(),
        spendguard_domain::pricing::Price {
            currency: spendguard_domain::money::Currency::USD,
            input: Decimal::new(250, 2),
            output: Decimal::from(10),
            cached_input: None,
            cache_write: None,
            batch_percent: None,
            long_context: None,
        },
    );
    let bus = MemoryBus::default();
    let report = scan_with(&store, &bus, &policy, now, &sources).await;
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(report.price_book_drift.is_empty(), "{report:?}");
}

/// Generates one test per detection case for a backend.
#[macro_export]
macro_rules! detection_suite {
    ($make:expr) => {
        $crate::detection_suite!(@cases $make;
            a_night_spike_on_an_office_hours_key_is_found_and_mapped,
            a_steady_ramp_over_weeks_is_not_a_finding,
            a_planned_window_suppresses_the_finding,
            a_finding_is_raised_once_per_hour_and_an_ack_quiets_the_day,
            a_burst_is_found_without_history,
            a_throttled_key_gets_its_limit_back_after_a_quiet_hour,
            a_key_idle_for_longer_than_the_window_is_dormant,
            a_thiefs_late_embeddings_and_images_are_found_when_they_arrive,
            a_check_after_an_outage_catches_up_from_the_watermark,
            a_finding_caught_up_days_late_can_be_acknowledged,
            one_usage_kind_down_blinds_only_that_kind,
            a_late_hour_of_the_previous_day_is_not_its_own_baseline,
            a_check_that_fails_midway_leaves_the_watermark_for_the_next,
            spend_the_provider_counted_and_nobody_reported_is_one_finding,
            a_key_reporting_daily_totals_is_not_judged_unreported_by_the_hour,
            a_price_book_off_by_twice_is_one_drift_naming_the_model,
            batch_usage_at_half_price_is_no_drift,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store: $crate::conformance::Store = $make.await;
                $crate::detection::$case(store).await;
            }
        )*
    };
}
