//! The spend capability: usage counted exactly once, hour counters, observations, sources'
//! day readings, summaries per source.

use super::*;
use chrono::Duration;
use rust_decimal::Decimal;
use spendguard_app::ports::sources::{SpendRequest, SpendSource};
use spendguard_app::sources::counters::UsageCounters;
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::evaluate::WindowSpend;
use spendguard_domain::money::Currency;
use spendguard_domain::money::FxRates;
use spendguard_domain::period::{WindowKind, Zone};
use spendguard_domain::records::{DayReading, Observation, SourceDay};
use spendguard_domain::scope::Scope;
use spendguard_domain::usage::USAGE_MARKER_TTL;
use spendguard_domain::usage::{HourKey, Metric, UsageEntry, UsageRecord};
use std::collections::{BTreeMap, BTreeSet};

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
    // a day's total in one record: 2,880 requests over 1,440 minutes
    let mut day = record("h-day", "openai/prod/key-1", 10, at("2026-11-23T04:05:00Z"));
    (day.requests, day.covers_minutes) = (2880, 1440);
    records.push(day);
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
    roll_up_all(&*store, NOV).await;
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
        assert_eq!(h.aggregates, Decimal::ZERO);
    }
    assert!(
        !hours.contains_key(&keys[3]),
        "no hour counters for the root"
    );
    let four = &hours[&keys[5]];
    assert_eq!(four.total.get(Metric::Records), Decimal::from(2));
    assert_eq!(four.total.get(Metric::Requests), Decimal::from(2881));
    assert_eq!(
        four.busiest_minute(),
        Decimal::from(3),
        "one request and the day's 2 per minute"
    );
    assert_eq!(
        four.aggregates,
        Decimal::ONE,
        "the day's total is an aggregate"
    );
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

/// One batch holding a new record, a replayed one, an in-batch repeat of the new one and one
/// whose marker expired: each record counts once, the replay and the repeat are duplicates.
pub async fn a_batch_mixing_new_replayed_repeated_and_expired_ids_counts_each_once(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let ttl = Duration::hours(1);
    let earlier = |id: &str, minutes: i64| {
        entries(
            &[record(id, "app/mix", 100, now - Duration::minutes(minutes))],
            &[Zone::UTC],
        )
    };
    // "seen" is still remembered; "old"'s marker expired ten minutes ago
    store
        .ingest_usage(&earlier("seen", 30), now - Duration::minutes(30), ttl)
        .await
        .unwrap();
    store
        .ingest_usage(&earlier("old", 70), now - Duration::minutes(70), ttl)
        .await
        .unwrap();
    let batch = entries(
        &[
            record("new-1", "app/mix", 1, now),
            record("seen", "app/mix", 10, now),
            record("new-1", "app/mix", 1, now),
            record("old", "app/mix", 1000, now),
            record("new-2", "app/mix", 10000, now),
            record("seen", "app/mix", 10, now),
        ],
        &[Zone::UTC],
    );
    let outcome = store.ingest_usage(&batch, now, ttl).await.unwrap();
    let sorted = |ids: &[String]| {
        let mut ids = ids.to_vec();
        ids.sort();
        ids
    };
    assert_eq!(sorted(&outcome.accepted), ["new-1", "new-2", "old"]);
    assert_eq!(sorted(&outcome.duplicates), ["new-1", "seen", "seen"]);
    // $1 + $1 before, then new-1, old and new-2 once each
    assert_eq!(
        month_total(&*store, "app/mix", Zone::UTC, NOV, USD_COST).await,
        Decimal::new(2 * 100 + 1 + 1000 + 10000, 2)
    );
    assert_eq!(
        month_total(&*store, "app", Zone::UTC, NOV, Metric::Records).await,
        Decimal::from(5)
    );
    // the whole batch again: nothing new
    let again = store.ingest_usage(&batch, now, ttl).await.unwrap();
    assert_eq!((again.accepted.len(), again.duplicates.len()), (0, 6));
    assert_eq!(
        month_total(&*store, "app/mix", Zone::UTC, NOV, USD_COST).await,
        Decimal::new(2 * 100 + 1 + 1000 + 10000, 2)
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
                fresh_pending: &[],
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

/// Minute costs are written per currency into the hour counters (the root's too, when a
/// budget with a minute window watches it), read back exactly, and answer hourly and rolling
/// windows across an hour boundary.
pub async fn minute_costs_round_trip_and_answer_minute_windows(store: Store) {
    let eur = Currency::parse("EUR").unwrap();
    let mut in_euros = record(
        "m-eur",
        "openai/prod/key-1",
        200,
        at("2026-11-23T03:58:10Z"),
    );
    in_euros.cost.currency = eur;
    let records = [
        record("m-1", "openai/prod/key-1", 125, at("2026-11-23T03:58:01Z")),
        record("m-2", "openai/prod/key-1", 75, at("2026-11-23T03:58:59Z")),
        in_euros,
        record("m-3", "openai/prod/key-2", 300, at("2026-11-23T04:02:00Z")),
    ];
    let root = Scope::root();
    let minute_scopes = BTreeSet::from([root.clone()]);
    let batch: Vec<UsageEntry> = records
        .iter()
        .map(|r| UsageEntry::counting(r, &[Zone::UTC], &minute_scopes))
        .collect();
    let now = at("2026-11-23T04:05:00Z");
    for _ in 0..2 {
        store
            .ingest_usage(&batch, now, USAGE_MARKER_TTL)
            .await
            .unwrap();
    }
    roll_up_all(&*store, NOV).await;
    let three = HourKey::of(root.clone(), at("2026-11-23T03:00:00Z"));
    let four = HourKey::of(root.clone(), at("2026-11-23T04:00:00Z"));
    let hours = store
        .read_hours(&[three.clone(), four.clone()])
        .await
        .unwrap();
    assert_eq!(
        hours[&three].cost_by_minute,
        BTreeMap::from([
            ((58, Currency::USD), Decimal::new(200, 2)),
            ((58, eur), Decimal::new(200, 2)),
        ])
    );
    assert_eq!(
        hours[&four].cost_by_minute,
        BTreeMap::from([((2, Currency::USD), Decimal::new(300, 2))])
    );
    // the budgets see the root's minutes, in their currency (EUR at 1.5 USD)
    let mut rates = FxRates::default();
    rates.insert(eur, Currency::USD, Decimal::new(15, 1));
    let source = UsageCounters::new(store.clone());
    for (kind, cents) in [
        (WindowKind::Hourly, 300),
        (WindowKind::Rolling { minutes: 5 }, 300),
        (WindowKind::Rolling { minutes: 10 }, 800),
    ] {
        let b = budget("m", "*", kind, 100);
        let refs = [&b];
        let spend = source
            .spend(&SpendRequest {
                fresh_pending: &[],
                budgets: &refs,
                now,
                rates: &rates,
            })
            .await
            .unwrap();
        let s: &WindowSpend = spend["m"][&kind].as_ref().unwrap();
        assert_eq!(s.actual, Decimal::new(cents, 2), "{kind}");
    }
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

pub async fn source_days_are_upserted_and_read_by_date_range(store: Store) {
    let reading = |budget: &str, date: &str, cents: i64| SourceDay {
        budget_id: budget.into(),
        source: "openai".into(),
        date: date.parse().unwrap(),
        reading: DayReading::Day {
            spend: usd(cents, 2),
        },
        observed_at: at("2026-11-22T10:00:00Z"),
    };
    store
        .put_source_days(&[
            reading("oa", "2026-11-20", 100),
            reading("oa", "2026-11-21", 200),
            reading("other", "2026-11-21", 5),
        ])
        .await
        .unwrap();
    // a later run's reading of the same day replaces it (late costs arrived)
    store
        .put_source_days(&[
            reading("oa", "2026-11-21", 250),
            reading("oa", "2026-11-22", 1),
        ])
        .await
        .unwrap();
    let day = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    assert_eq!(
        store
            .source_days("oa", day("2026-11-21"), day("2026-11-30"))
            .await
            .unwrap(),
        vec![
            reading("oa", "2026-11-21", 250),
            reading("oa", "2026-11-22", 1)
        ],
        "oldest first, the range inclusive, other budgets apart"
    );
    assert_eq!(
        store
            .source_days("oa", day("2026-11-01"), day("2026-11-20"))
            .await
            .unwrap(),
        vec![reading("oa", "2026-11-20", 100)]
    );
    assert!(
        store
            .source_days("none", day("2026-11-01"), day("2026-11-30"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn summaries_of_one_day_are_kept_per_source(store: Store) {
    let scope = Scope::parse("openai").unwrap();
    let summary = |source: &str, dollars: &str| DailySummary {
        scope: scope.clone(),
        zone: Zone::UTC,
        date: "2026-11-20".parse().unwrap(),
        source: source.into(),
        day: BTreeMap::from([("cost.USD".to_string(), dollars.to_string())]),
        month_to_date: BTreeMap::new(),
        forecast: None,
        anomalies: Vec::new(),
    };
    store
        .put_summaries(&[summary("usage", "3"), summary("openai", "12.5")])
        .await
        .unwrap();
    // a re-run replaces each series, it does not add one
    store
        .put_summaries(&[summary("openai", "13")])
        .await
        .unwrap();
    let date = "2026-11-20".parse().unwrap();
    let mut got = store.summaries(&scope, date, date).await.unwrap();
    got.sort_by(|a, b| a.source.cmp(&b.source));
    assert_eq!(got, vec![summary("openai", "13"), summary("usage", "3")]);
}
