//! The store conformance suite: the same cases, unchanged, against every `StateStore` backend.
//! `conformance_suite!(make_store)` turns each case into a test.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use spendguard_core::budget::{
    Action, Basis, Budget, ChannelKind, ChannelSpec, PolicySet, Settings, Severity, SourceSpec,
    Threshold, Tier, Window,
};
use spendguard_core::evaluate::WindowSpend;
use spendguard_core::ingest::USAGE_MARKER_TTL;
use spendguard_core::money::{Currency, FxRates, Money};
use spendguard_core::period::{Period, WindowKind, YearMonth, Zone};
use spendguard_core::pricing::Tokens;
use spendguard_core::records::{
    Acknowledgement, AuditEntry, Claim, ClaimOutcome, KillSwitch, Observation, OpenAlert,
    SwitchState,
};
use spendguard_core::scope::Scope;
use spendguard_core::sources::{SpendRequest, SpendSource, UsageCounters};
use spendguard_core::store::{StateStore, StoreError};
use spendguard_core::usage::{CounterKey, HourKey, Metric, UsageEntry, UsageRecord};

pub type Store = Arc<dyn StateStore>;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn usd(v: i64, scale: u32) -> Money {
    Money::new(Decimal::new(v, scale), Currency::USD)
}

pub fn budget(id: &str, scope: &str, kind: WindowKind, limit: i64) -> Budget {
    Budget {
        id: id.into(),
        description: None,
        scope: Scope::parse(scope).unwrap(),
        currency: Currency::USD,
        zone: Zone::UTC,
        windows: vec![Window {
            kind,
            limit: Decimal::from(limit),
            tiers: vec![Tier {
                name: "warning".into(),
                threshold: Threshold::Percent(Decimal::from(80)),
                basis: Basis::Actual,
                severity: Severity::Warning,
                actions: vec![Action::Notify],
            }],
        }],
        source: SourceSpec::Usage,
        routing: BTreeMap::from([("warning".to_string(), vec!["log".to_string()])]),
    }
}

pub fn record(id: &str, scope: &str, cents: i64, when: DateTime<Utc>) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        scope: Scope::parse(scope).unwrap(),
        provider: "openai".into(),
        model: Some("gpt-4o".into()),
        tokens: Tokens {
            input: 100,
            output: 50,
            cached: 10,
        },
        requests: 1,
        cost: usd(cents, 2),
        timestamp: when,
        user: None,
        endpoint: None,
        feature: None,
    }
}

fn entries(records: &[UsageRecord], zones: &[Zone]) -> Vec<UsageEntry> {
    records.iter().map(|r| UsageEntry::of(r, zones)).collect()
}

/// A scope's total of `metric` in a month, from the store's counters.
pub async fn month_total(
    store: &dyn StateStore,
    scope: &str,
    zone: Zone,
    month: YearMonth,
    metric: Metric,
) -> Decimal {
    let key = CounterKey {
        scope: Scope::parse(scope).unwrap(),
        zone,
        month,
    };
    let counters = store
        .read_counters(std::slice::from_ref(&key))
        .await
        .unwrap();
    counters
        .get(&key)
        .map(|m| m.days.values().map(|t| t.get(metric)).sum())
        .unwrap_or_default()
}

const NOV: YearMonth = YearMonth {
    year: 2026,
    month: 11,
};
const USD_COST: Metric = Metric::Cost(Currency::USD);

/// A scope's cost in US dollars this month (UTC).
pub async fn month_cost_now(store: &dyn StateStore, scope: &str) -> Decimal {
    let month = YearMonth::of(Utc::now().date_naive());
    month_total(store, scope, Zone::UTC, month, USD_COST).await
}

pub async fn budgets_crud(store: Store) {
    let mut settings = Settings::default();
    settings.channels.insert(
        "ops".into(),
        ChannelSpec {
            kind: ChannelKind::Slack,
            secret: Some("arn:aws:secretsmanager:x".into()),
            digest_minutes: None,
        },
    );
    let a = budget("a", "openai/prod", WindowKind::Monthly, 100);
    let b = budget("b", "anthropic", WindowKind::Daily, 10);
    store
        .put_policy(&PolicySet {
            settings: settings.clone(),
            budgets: vec![a.clone(), b.clone()],
            keys: Vec::new(),
        })
        .await
        .unwrap();
    let loaded = store.load_policy().await.unwrap();
    assert_eq!(loaded.settings, settings);
    let mut ids: Vec<_> = loaded.budgets.iter().map(|x| x.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(store.get_budget("a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_budget("zz").await.unwrap(), None);

    let mut edited = a.clone();
    edited.windows[0].limit = Decimal::from(250);
    store.put_budget(&edited).await.unwrap();
    assert_eq!(
        store.get_budget("a").await.unwrap().unwrap().windows[0].limit,
        Decimal::from(250)
    );

    assert!(store.delete_budget("b").await.unwrap());
    assert!(!store.delete_budget("b").await.unwrap());

    // applying a policy replaces the whole set
    store
        .put_policy(&PolicySet {
            settings: Settings::default(),
            budgets: vec![b.clone()],
            keys: Vec::new(),
        })
        .await
        .unwrap();
    let loaded = store.load_policy().await.unwrap();
    assert_eq!(loaded.budgets, vec![b]);
    assert_eq!(loaded.settings, Settings::default());
}

pub async fn replayed_usage_counts_once(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let batch = entries(
        &[
            record("r-1", "openai/prod/key-1", 125, now),
            record("r-2", "openai/prod/key-1", 75, now),
        ],
        &[Zone::UTC],
    );
    let first = store
        .ingest_usage(&batch, now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    assert_eq!(first.accepted.len(), 2);
    let again = store
        .ingest_usage(&batch, now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    assert_eq!((again.accepted.len(), again.duplicates.len()), (0, 2));
    for scope in ["openai/prod/key-1", "openai/prod", "openai", "*"] {
        assert_eq!(
            month_total(&*store, scope, Zone::UTC, NOV, USD_COST).await,
            Decimal::new(200, 2),
            "{scope}"
        );
        assert_eq!(
            month_total(&*store, scope, Zone::UTC, NOV, Metric::Records).await,
            Decimal::from(2)
        );
        assert_eq!(
            month_total(&*store, scope, Zone::UTC, NOV, Metric::TokensCached).await,
            Decimal::from(20)
        );
    }
}

pub async fn hour_counters_keep_totals_and_minutes_once(store: Store) {
    let now = at("2026-11-23T04:00:00Z");
    let mut records = Vec::new();
    for i in 0..30 {
        // 30 records in minute 12 of 03:00, 3 in minute 40, one at 04:05
        let minute = if i < 27 { 12 } else { 40 };
        let mut r = record(
            &format!("h-{i}"),
            "openai/prod/key-1",
            10,
            at(&format!("2026-11-23T03:{minute}:30Z")),
        );
        r.requests = 5;
        records.push(r);
    }
    records.push(record(
        "h-next",
        "openai/prod/key-1",
        10,
        at("2026-11-23T04:05:00Z"),
    ));
    let batch = entries(&records, &[Zone::UTC]);
    for _ in 0..2 {
        // the replay counts nothing
        store
            .ingest_usage(&batch, now, USAGE_MARKER_TTL)
            .await
            .unwrap();
    }
    let three = |scope: &str| HourKey::of(Scope::parse(scope).unwrap(), at("2026-11-23T03:00:00Z"));
    let keys = [
        three("openai/prod/key-1"),
        three("openai/prod"),
        three("openai"),
        three("*"),
        three("openai/other"),
        HourKey::of(
            Scope::parse("openai/prod/key-1").unwrap(),
            at("2026-11-23T04:00:00Z"),
        ),
    ];
    let hours = store.read_hours(&keys).await.unwrap();
    assert_eq!(
        hours.len(),
        4,
        "three scopes of the path at 03:00, the key at 04:00"
    );
    for key in &keys[..3] {
        let h = &hours[key];
        assert_eq!(h.total.get(USD_COST), Decimal::new(300, 2), "{}", key.scope);
        assert_eq!(h.total.get(Metric::Requests), Decimal::from(150));
        assert_eq!(
            h.busiest_minute(),
            Decimal::from(135),
            "27 records x 5 in minute 12"
        );
        assert_eq!(h.requests_by_minute[&40], Decimal::from(15));
    }
    assert!(
        !hours.contains_key(&keys[3]),
        "no hour counters for the root"
    );
    assert_eq!(hours[&keys[5]].total.get(Metric::Records), Decimal::ONE);
}

pub async fn duplicate_ids_within_one_batch_count_once(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let batch = entries(
        &[
            record("same", "app/x", 100, now),
            record("same", "app/x", 100, now),
        ],
        &[Zone::UTC],
    );
    let outcome = store
        .ingest_usage(&batch, now, USAGE_MARKER_TTL)
        .await
        .unwrap();
    assert_eq!((outcome.accepted.len(), outcome.duplicates.len()), (1, 1));
    assert_eq!(
        month_total(&*store, "app/x", Zone::UTC, NOV, USD_COST).await,
        Decimal::ONE
    );
}

pub async fn concurrent_replays_count_once(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let batch = entries(
        &[record("race-1", "openai/prod/key-9", 333, now)],
        &[Zone::UTC],
    );
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (store, batch) = (store.clone(), batch.clone());
        tasks.push(tokio::spawn(async move {
            store.ingest_usage(&batch, now, USAGE_MARKER_TTL).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().unwrap().accepted.len();
    }
    assert_eq!(accepted, 1, "exactly one delivery may count");
    assert_eq!(
        month_total(&*store, "openai/prod/key-9", Zone::UTC, NOV, USD_COST).await,
        Decimal::new(333, 2)
    );
    assert_eq!(
        month_total(&*store, "*", Zone::UTC, NOV, Metric::Records).await,
        Decimal::ONE
    );
}

pub async fn overlapping_concurrent_batches_are_exact(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    // 4 batches of 60 records over ids 0..150, overlapping: 150 distinct records of 1 cent
    let mut tasks = Vec::new();
    for b in 0..4usize {
        let records: Vec<UsageRecord> = (b * 30..b * 30 + 60)
            .map(|i| record(&format!("o-{i}"), &format!("app/k{}", i % 3), 1, now))
            .collect();
        let (store, batch) = (store.clone(), entries(&records, &[Zone::UTC]));
        tasks.push(tokio::spawn(async move {
            store.ingest_usage(&batch, now, USAGE_MARKER_TTL).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().unwrap().accepted.len();
    }
    assert_eq!(accepted, 150);
    assert_eq!(
        month_total(&*store, "app", Zone::UTC, NOV, USD_COST).await,
        Decimal::new(150, 2)
    );
    assert_eq!(
        month_total(&*store, "app", Zone::UTC, NOV, Metric::Records).await,
        Decimal::from(150)
    );
}

pub async fn large_batch_is_counted_exactly(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let records: Vec<UsageRecord> = (0..250)
        .map(|i| {
            record(
                &format!("big-{i}"),
                &format!("openai/p{}/k{}", i % 4, i % 9),
                7,
                now,
            )
        })
        .collect();
    let outcome = store
        .ingest_usage(
            &entries(&records, &[Zone::UTC, Zone::parse("Asia/Tokyo").unwrap()]),
            now,
            USAGE_MARKER_TTL,
        )
        .await
        .unwrap();
    assert_eq!(outcome.accepted.len(), 250);
    assert_eq!(
        month_total(&*store, "openai", Zone::UTC, NOV, USD_COST).await,
        Decimal::new(1750, 2)
    );
    assert_eq!(
        month_total(
            &*store,
            "*",
            Zone::parse("Asia/Tokyo").unwrap(),
            NOV,
            USD_COST
        )
        .await,
        Decimal::new(1750, 2)
    );
}

pub async fn counters_give_day_week_and_month(store: Store) {
    // Week 2026-W49 runs Monday 30 Nov to Sunday 6 Dec: it spans two month counters.
    let days = [
        ("2026-11-29T12:00:00Z", 100),
        ("2026-11-30T12:00:00Z", 200),
        ("2026-12-01T12:00:00Z", 400),
        ("2026-12-02T08:00:00Z", 800),
    ];
    let records: Vec<UsageRecord> = days
        .iter()
        .enumerate()
        .map(|(i, (t, c))| record(&format!("d-{i}"), "openai/prod", *c, at(t)))
        .collect();
    store
        .ingest_usage(
            &entries(&records, &[Zone::UTC]),
            at("2026-12-02T09:00:00Z"),
            USAGE_MARKER_TTL,
        )
        .await
        .unwrap();
    let now = at("2026-12-02T12:00:00Z");
    let source = UsageCounters::new(store.clone());
    let check = |kind: WindowKind| budget("w", "openai/prod", kind, 100);
    let budgets = [
        check(WindowKind::Daily),
        check(WindowKind::Weekly),
        check(WindowKind::Monthly),
    ];
    let expected = [
        (WindowKind::Daily, 800),
        (WindowKind::Weekly, 1400),
        (WindowKind::Monthly, 1200),
    ];
    for (b, (kind, cents)) in budgets.iter().zip(expected) {
        let refs = [b];
        let spend = source
            .spend(&SpendRequest {
                budgets: &refs,
                now,
                rates: &FxRates::default(),
            })
            .await
            .unwrap();
        let s: &WindowSpend = spend["w"][&kind].as_ref().unwrap();
        assert_eq!(s.actual, Decimal::new(cents, 2), "{kind}");
    }
    // the previous month is untouched by December's records
    assert_eq!(
        month_total(&*store, "openai/prod", Zone::UTC, NOV, USD_COST).await,
        Decimal::new(300, 2)
    );
}

pub async fn expired_usage_markers_are_ignored(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let batch = entries(&[record("old", "app/y", 100, now)], &[Zone::UTC]);
    store
        .ingest_usage(&batch, now, Duration::hours(1))
        .await
        .unwrap();
    // within the marker's life: a duplicate
    let soon = store
        .ingest_usage(&batch, now + Duration::minutes(59), Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(soon.duplicates.len(), 1);
    // after expiry the id is forgotten, whether or not TTL deletion ran
    let later = store
        .ingest_usage(&batch, now + Duration::hours(2), Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(later.accepted.len(), 1);
}

fn claim(tier: &str, period: &Period, owner: &str) -> Claim {
    Claim::alert(
        "b1",
        WindowKind::Monthly,
        &period.key(),
        tier,
        &format!("{tier}-{}", period.key()),
        owner,
        Duration::minutes(5),
        period.end + Duration::days(35),
    )
}

pub async fn alert_claims_have_exactly_one_winner(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let period = Period::containing(WindowKind::Monthly, Zone::UTC, now);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (store, c) = (
            store.clone(),
            claim("warning", &period, &format!("run-{i}")),
        );
        tasks.push(tokio::spawn(async move {
            (store.claim(&c, now).await.unwrap(), c)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (outcome, c) = t.await.unwrap();
        match outcome {
            ClaimOutcome::Won => winners.push(c),
            ClaimOutcome::HeldByOther => {}
            ClaimOutcome::AlreadyRaised => panic!("nothing was published yet"),
        }
    }
    assert_eq!(winners.len(), 1);
    store.finish_claim(&winners[0]).await.unwrap();
    assert_eq!(
        store
            .claim(&claim("warning", &period, "late"), now)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyRaised
    );
    // another tier is its own crossing
    assert_eq!(
        store
            .claim(&claim("critical", &period, "late"), now)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    // re-armed in the next period
    let next = period.next();
    assert_eq!(
        store
            .claim(&claim("warning", &next, "december"), next.start)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
}

pub async fn abandoned_claims_can_be_taken_over(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let period = Period::containing(WindowKind::Monthly, Zone::UTC, now);
    let crashed = claim("warning", &period, "crashed-run");
    assert_eq!(store.claim(&crashed, now).await.unwrap(), ClaimOutcome::Won);
    // the lease still runs: others wait
    assert_eq!(
        store
            .claim(&claim("warning", &period, "b"), now + Duration::minutes(4))
            .await
            .unwrap(),
        ClaimOutcome::HeldByOther
    );
    // lease over: taken over, and the crashed run can no longer finish it
    let taker = claim("warning", &period, "c");
    assert_eq!(
        store
            .claim(&taker, now + Duration::minutes(6))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert!(matches!(
        store.finish_claim(&crashed).await,
        Err(StoreError::Conflict(_))
    ));
    // a released claim (publish failed) is free at once
    store.release_claim(&taker).await.unwrap();
    let retry = claim("warning", &period, "d");
    assert_eq!(
        store
            .claim(&retry, now + Duration::minutes(6))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    store.finish_claim(&retry).await.unwrap();
    // releasing a published claim does nothing
    store.release_claim(&retry).await.unwrap();
    assert_eq!(
        store
            .claim(&claim("warning", &period, "e"), now + Duration::hours(1))
            .await
            .unwrap(),
        ClaimOutcome::AlreadyRaised
    );
}

pub async fn finished_claims_are_read_in_one_batch(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let period = Period::containing(WindowKind::Monthly, Zone::UTC, now);
    let done = claim("warning", &period, "a");
    let held = claim("critical", &period, "a");
    let released = claim("emergency", &period, "a");
    let never = claim("forecast", &period, "a");
    for c in [&done, &held, &released] {
        assert_eq!(store.claim(c, now).await.unwrap(), ClaimOutcome::Won);
    }
    store.finish_claim(&done).await.unwrap();
    store.release_claim(&released).await.unwrap();
    // asked twice, in any order, and alongside others
    let asked = [never.clone(), done.clone(), held, released, done];
    assert_eq!(
        store.claims_done(&asked).await.unwrap(),
        [false, true, false, false, true]
    );
    assert!(store.claims_done(&[]).await.unwrap().is_empty());
    // more than one BatchGetItem holds
    let many: Vec<Claim> = (0..150)
        .map(|i| claim(&format!("t{i}"), &period, "m"))
        .collect();
    for c in many.iter().step_by(3) {
        store.claim(c, now).await.unwrap();
        store.finish_claim(c).await.unwrap();
    }
    let answers = store.claims_done(&many).await.unwrap();
    assert_eq!(answers.len(), 150);
    assert!(answers.iter().enumerate().all(|(i, d)| *d == (i % 3 == 0)));
}

pub async fn delivery_claims_are_per_alert_and_channel(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let exp = now + Duration::days(35);
    let slack =
        |owner: &str| Claim::delivery("alert-1", "ops-slack", owner, Duration::minutes(2), exp);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (store, c) = (store.clone(), slack(&format!("invocation-{i}")));
        tasks.push(tokio::spawn(async move {
            (store.claim(&c, now).await.unwrap(), c)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        let (o, c) = t.await.unwrap();
        if o == ClaimOutcome::Won {
            won.push(c);
        }
    }
    assert_eq!(won.len(), 1);
    // a failed send is released: the retry delivers
    store.release_claim(&won[0]).await.unwrap();
    let retry = slack("retry");
    assert_eq!(store.claim(&retry, now).await.unwrap(), ClaimOutcome::Won);
    store.finish_claim(&retry).await.unwrap();
    assert_eq!(
        store.claim(&slack("late"), now).await.unwrap(),
        ClaimOutcome::AlreadyRaised
    );
    // other channels and other alerts are independent
    assert_eq!(
        store
            .claim(
                &Claim::delivery("alert-1", "pager", "x", Duration::minutes(2), exp),
                now
            )
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert_eq!(
        store
            .claim(
                &Claim::delivery("alert-2", "ops-slack", "x", Duration::minutes(2), exp),
                now
            )
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
}

pub async fn open_alerts_are_acknowledged_escalated_and_closed(store: Store) {
    let event: spendguard_core::alert::AlertEvent =
        serde_json::from_str(include_str!("../../events/alert-fanout/emergency.json"))
            .map(|e: serde_json::Value| {
                serde_json::from_str(e["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap()
            })
            .unwrap();
    let open = OpenAlert {
        event: event.clone(),
        acknowledged: None,
        escalation_level: 0,
    };
    store.put_open_alert(&open).await.unwrap();
    assert_eq!(store.open_alerts().await.unwrap(), vec![open.clone()]);
    store
        .set_escalation_level(&event.alert_id, 2)
        .await
        .unwrap();
    store
        .set_escalation_level(&event.alert_id, 1)
        .await
        .unwrap(); // never lowered
    let ack = Acknowledgement {
        actor: "alice".into(),
        at: at("2026-11-22T10:10:00Z"),
    };
    assert!(
        store
            .acknowledge_alert(&event.alert_id, &ack)
            .await
            .unwrap()
    );
    let later = Acknowledgement {
        actor: "bob".into(),
        at: at("2026-11-22T11:00:00Z"),
    };
    assert!(
        store
            .acknowledge_alert(&event.alert_id, &later)
            .await
            .unwrap(),
        "acknowledging twice is fine"
    );
    let stored = &store.open_alerts().await.unwrap()[0];
    assert_eq!(
        (stored.escalation_level, stored.acknowledged.as_ref()),
        (2, Some(&ack)),
        "the first acknowledgement stands"
    );
    assert!(
        !store
            .acknowledge_alert("no-such-alert", &ack)
            .await
            .unwrap()
    );
    store.close_alert(&event.alert_id).await.unwrap();
    assert!(store.open_alerts().await.unwrap().is_empty());
}

pub async fn digest_queues_keep_each_alert_once(store: Store) {
    let mut event: spendguard_core::alert::AlertEvent = serde_json::from_str::<serde_json::Value>(
        include_str!("../../events/alert-fanout/warning.json"),
    )
    .map(|e| serde_json::from_str(e["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap())
    .unwrap();
    let first = event.clone();
    store
        .queue_digest("ops-slack", &first, at("2026-11-22T10:00:00Z"))
        .await
        .unwrap();
    store
        .queue_digest("ops-slack", &first, at("2026-11-22T10:30:00Z"))
        .await
        .unwrap(); // replay
    event.alert_id = "another-alert".into();
    store
        .queue_digest("ops-slack", &event, at("2026-11-22T10:05:00Z"))
        .await
        .unwrap();
    store
        .queue_digest("finance-email", &event, at("2026-11-22T10:06:00Z"))
        .await
        .unwrap();
    let queue = store.digest_queue("ops-slack").await.unwrap();
    assert_eq!(
        queue
            .iter()
            .map(|(t, e)| (t.to_rfc3339(), e.alert_id.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                "2026-11-22T10:00:00+00:00".to_string(),
                first.alert_id.clone()
            ),
            (
                "2026-11-22T10:05:00+00:00".to_string(),
                "another-alert".to_string()
            ),
        ]
    );
    store
        .remove_from_digest(
            "ops-slack",
            &[first.alert_id.clone(), "another-alert".into()],
        )
        .await
        .unwrap();
    assert!(store.digest_queue("ops-slack").await.unwrap().is_empty());
    assert_eq!(store.digest_queue("finance-email").await.unwrap().len(), 1);
}

pub async fn key_status_survives_reapplying_the_budgets_file(store: Store) {
    use spendguard_core::keys::{KeySpec, KeyStatus, Measure, ProviderKind};
    let spec = |id: &str| KeySpec {
        id: id.into(),
        provider: ProviderKind::Anthropic,
        scope: Scope::parse("anthropic/x").unwrap(),
        secret_arn: None,
        key_id: Some(format!("apikey_{id}")),
        project_id: None,
        user: None,
        rotation: None,
        allow_delete: false,
    };
    let policy = |keys: Vec<KeySpec>| PolicySet {
        keys,
        ..PolicySet::default()
    };
    store
        .put_policy(&policy(vec![spec("a"), spec("b")]))
        .await
        .unwrap();
    let disabled = KeyStatus::DisabledBySpendguard {
        incidents: vec!["i1".into()],
        at: at("2026-11-22T10:00:00Z"),
        measures: vec![Measure::ProviderDisabled],
    };
    store.put_key_status("a", &disabled, 0).await.unwrap();
    // the file is applied again (with a changed spec for `a`, and `b` removed)
    let mut changed = spec("a");
    changed.key_id = Some("apikey_rotated".into());
    store
        .put_policy(&policy(vec![changed.clone()]))
        .await
        .unwrap();
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((&keys[0].spec, &keys[0].status), (&changed, &disabled));
    assert_eq!(store.load_policy().await.unwrap().keys, vec![changed]);
    assert_eq!(keys[0].version, 1, "re-applying keeps the status's version");
    assert!(matches!(
        store.put_key_status("b", &KeyStatus::Active, 0).await,
        Err(StoreError::Corrupt(_))
    ));
}

/// A key's status is written by compare-and-set: of two writers holding the same version,
/// exactly one wins; the loser gets `Conflict` and nothing of it is written.
pub async fn key_status_uses_optimistic_versions(store: Store) {
    use spendguard_core::keys::{KeySpec, KeyStatus, Measure, ProviderKind};
    let spec = KeySpec {
        id: "k".into(),
        provider: ProviderKind::Anthropic,
        scope: Scope::parse("anthropic/x").unwrap(),
        secret_arn: None,
        key_id: Some("apikey_k".into()),
        project_id: None,
        user: None,
        rotation: None,
        allow_delete: false,
    };
    store
        .put_policy(&PolicySet {
            keys: vec![spec],
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let fresh = store.key("k").await.unwrap().unwrap();
    assert_eq!((fresh.version, &fresh.status), (0, &KeyStatus::Active));
    assert_eq!(store.key("missing").await.unwrap(), None);
    let stopping = KeyStatus::Disabling {
        incidents: vec!["i1".into()],
        at: at("2026-11-22T10:00:00Z"),
        measures: Vec::new(),
    };
    let joined = KeyStatus::Disabling {
        incidents: vec!["i1".into(), "i2".into()],
        at: at("2026-11-22T10:00:00Z"),
        measures: Vec::new(),
    };
    assert_eq!(store.put_key_status("k", &stopping, 0).await.unwrap(), 1);
    assert!(matches!(
        store.put_key_status("k", &KeyStatus::Active, 0).await,
        Err(StoreError::Conflict(_))
    ));
    let stopped = KeyStatus::DisabledBySpendguard {
        incidents: vec!["i1".into()],
        at: at("2026-11-22T10:00:01Z"),
        measures: vec![Measure::ProviderDisabled],
    };
    let (a, b) = tokio::join!(
        store.put_key_status("k", &joined, 1),
        store.put_key_status("k", &stopped, 1)
    );
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count(),
        1,
        "exactly one of two writers at version 1 wins: {a:?} {b:?}"
    );
    let now = store.key("k").await.unwrap().unwrap();
    assert_eq!(now.version, 2);
    assert_eq!(now.status, if a.is_ok() { joined } else { stopped });
}

/// Every write of a kill switch carries its audit entry in the same transaction: a written
/// switch has its entry, a refused write leaves neither.
pub async fn kill_switch_writes_carry_their_audit_entry(store: Store) {
    let scope = Scope::parse("openai/prod").unwrap();
    let now = at("2026-11-22T10:00:00Z");
    let engaged = KillSwitch {
        scope: scope.clone(),
        state: SwitchState::Engaged {
            reason: "budget".into(),
            actor: "key-guard".into(),
            at: now,
            incident: "inc-1".into(),
            incidents: vec!["inc-1".into()],
        },
        limit_factor: Decimal::ZERO,
        updated_at: now,
        released: Vec::new(),
    };
    let entry = |id: &str| AuditEntry {
        id: id.into(),
        at: now,
        actor: "key-guard".into(),
        action: "kill_switch_engaged".into(),
        scope: Some(scope.clone()),
        detail: serde_json::json!({"incident": "inc-1"}),
    };
    store
        .put_kill_switch(&engaged, None, &entry("a1"))
        .await
        .unwrap();
    assert!(matches!(
        store.put_kill_switch(&engaged, None, &entry("a2")).await,
        Err(StoreError::Conflict(_))
    ));
    let log: Vec<String> = store
        .audit_log(YearMonth::of(now.date_naive()), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(log, ["a1"], "the refused write left no entry");
}

/// An audit entry for a switch a test writes directly.
pub fn audit(id: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: at("2026-11-22T10:00:00Z"),
        actor: "test".into(),
        action: "switch_written".into(),
        scope: None,
        detail: serde_json::Value::Null,
    }
}

pub async fn active_switches_are_listed_in_one_read(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let switch = |scope: &str, state: SwitchState| KillSwitch {
        scope: Scope::parse(scope).unwrap(),
        state,
        limit_factor: Decimal::ONE,
        updated_at: now,
        released: Vec::new(),
    };
    store
        .put_kill_switch(&switch("a", SwitchState::Open), None, &audit("s1"))
        .await
        .unwrap();
    let v = store
        .put_kill_switch(
            &switch(
                "b",
                SwitchState::Restoring {
                    step: 0,
                    since: now,
                },
            ),
            None,
            &audit("s2"),
        )
        .await
        .unwrap();
    store
        .put_kill_switch(
            &switch(
                "c",
                SwitchState::Engaged {
                    reason: "r".into(),
                    actor: "x".into(),
                    at: now,
                    incident: "i".into(),
                    incidents: vec!["i".into()],
                },
            ),
            None,
            &audit("s3"),
        )
        .await
        .unwrap();
    let mut active: Vec<String> = store
        .active_kill_switches()
        .await
        .unwrap()
        .iter()
        .map(|s| s.value.scope.to_string())
        .collect();
    active.sort();
    assert_eq!(active, ["b", "c"]);
    // back to open: no longer listed
    store
        .put_kill_switch(&switch("b", SwitchState::Open), Some(v), &audit("s4"))
        .await
        .unwrap();
    let active: Vec<String> = store
        .active_kill_switches()
        .await
        .unwrap()
        .iter()
        .map(|s| s.value.scope.to_string())
        .collect();
    assert_eq!(active, ["c"]);
}

pub async fn kill_switch_uses_optimistic_versions(store: Store) {
    let scope = Scope::parse("openai/prod").unwrap();
    assert_eq!(store.kill_switch(&scope).await.unwrap(), None);
    let open = KillSwitch {
        scope: scope.clone(),
        state: SwitchState::Open,
        limit_factor: Decimal::ONE,
        updated_at: at("2026-11-22T10:00:00Z"),
        released: Vec::new(),
    };
    assert_eq!(
        store
            .put_kill_switch(&open, None, &audit("v1"))
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store.put_kill_switch(&open, None, &audit("v2")).await,
        Err(StoreError::Conflict(_))
    ));
    let engaged = KillSwitch {
        state: SwitchState::Engaged {
            reason: "budget".into(),
            actor: "key-guard".into(),
            at: at("2026-11-22T10:05:00Z"),
            incident: "test".into(),
            incidents: vec!["test".into()],
        },
        limit_factor: Decimal::ZERO,
        ..open.clone()
    };
    assert_eq!(
        store
            .put_kill_switch(&engaged, Some(1), &audit("v3"))
            .await
            .unwrap(),
        2
    );
    // a writer holding the old version loses
    assert!(matches!(
        store.put_kill_switch(&open, Some(1), &audit("v4")).await,
        Err(StoreError::Conflict(_))
    ));
    let stored = store.kill_switch(&scope).await.unwrap().unwrap();
    assert_eq!((stored.value, stored.version), (engaged.clone(), 2));
    // several scopes in one read: absent ones are left out
    let scopes = Scope::parse("openai/prod/key-1").unwrap().rollup();
    let found = store.kill_switches(&scopes).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].value, engaged);
}

pub async fn audit_log_is_newest_first(store: Store) {
    for (i, t) in [
        "2026-11-01T10:00:00Z",
        "2026-11-03T10:00:00Z",
        "2026-11-02T10:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        store
            .append_audit(&AuditEntry {
                id: format!("e{i}"),
                at: at(t),
                actor: "test".into(),
                action: "budget_check".into(),
                scope: None,
                detail: serde_json::json!({"n": i}),
            })
            .await
            .unwrap();
    }
    let entries = store.audit_log(NOV, 10).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", "e0"]
    );
    assert_eq!(store.audit_log(NOV, 2).await.unwrap().len(), 2);
    assert!(
        store
            .audit_log(
                YearMonth {
                    year: 2026,
                    month: 10
                },
                10
            )
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn markers_expire_in_code(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    assert!(!store.has_marker("gcp", "msg-1", now).await.unwrap());
    assert!(
        store
            .put_marker("gcp", "msg-1", now, Duration::hours(1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_marker(
                "gcp",
                "msg-1",
                now + Duration::minutes(30),
                Duration::hours(1)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .has_marker("gcp", "msg-1", now + Duration::minutes(59))
            .await
            .unwrap()
    );
    assert!(
        !store
            .has_marker("gcp", "msg-1", now + Duration::hours(1))
            .await
            .unwrap(),
        "expired"
    );
    assert!(!store.has_marker("sns", "msg-1", now).await.unwrap());
    assert!(
        store
            .put_marker("sns", "msg-1", now, Duration::hours(1))
            .await
            .unwrap(),
        "namespaces are separate"
    );
    assert!(
        store
            .put_marker("gcp", "msg-1", now + Duration::hours(2), Duration::hours(1))
            .await
            .unwrap()
    );
}

pub async fn cache_entries_expire(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    store
        .put_cached("ce:1", "{\"a\":1}", now + Duration::hours(6))
        .await
        .unwrap();
    assert_eq!(
        store.get_cached("ce:1", now).await.unwrap().as_deref(),
        Some("{\"a\":1}")
    );
    assert_eq!(
        store
            .get_cached("ce:1", now + Duration::hours(7))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_cached("ce:missing", now).await.unwrap(), None);
}

pub async fn observations_are_upserted(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let obs = |period: &str, cents: i64| Observation {
        budget_id: "aws".into(),
        source: "aws_budgets".into(),
        window: WindowKind::Monthly,
        period_key: period.into(),
        actual: usd(cents, 2),
        forecast: Some(usd(cents * 2, 2)),
        observed_at: now,
    };
    store
        .put_observations(&[obs("M#2026-11", 100)])
        .await
        .unwrap();
    store
        .put_observations(&[obs("M#2026-11", 250), obs("M#2026-10", 900)])
        .await
        .unwrap();
    let mut got = store.observations("aws").await.unwrap();
    got.sort_by(|a, b| a.period_key.cmp(&b.period_key));
    assert_eq!(got, vec![obs("M#2026-10", 900), obs("M#2026-11", 250)]);
    assert!(store.observations("other").await.unwrap().is_empty());
}

/// Generates one test per conformance case for a backend.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases $make;
            budgets_crud,
            replayed_usage_counts_once,
            hour_counters_keep_totals_and_minutes_once,
            duplicate_ids_within_one_batch_count_once,
            concurrent_replays_count_once,
            overlapping_concurrent_batches_are_exact,
            large_batch_is_counted_exactly,
            counters_give_day_week_and_month,
            expired_usage_markers_are_ignored,
            alert_claims_have_exactly_one_winner,
            abandoned_claims_can_be_taken_over,
            finished_claims_are_read_in_one_batch,
            delivery_claims_are_per_alert_and_channel,
            open_alerts_are_acknowledged_escalated_and_closed,
            digest_queues_keep_each_alert_once,
            key_status_survives_reapplying_the_budgets_file,
            active_switches_are_listed_in_one_read,
            kill_switch_uses_optimistic_versions,
            key_status_uses_optimistic_versions,
            kill_switch_writes_carry_their_audit_entry,
            audit_log_is_newest_first,
            markers_expire_in_code,
            cache_entries_expire,
            observations_are_upserted,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store: $crate::conformance::Store = $make.await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}
