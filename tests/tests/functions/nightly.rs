//! The nightly run on both store backends: re-runs, backfills across a month boundary and a
//! DST change, empty days, new scopes, real spikes, weekly patterns, absurd days.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use spendguard_app::flows::nightly::{Days, MemoryMetrics, Nightly, NightlyError};
use spendguard_app::ports::bus::{AlertBus, BusError};
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::store::SpendStore;
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::alert::{AlertEvent, AlertKind};
use spendguard_domain::budget::Budget;
use spendguard_domain::forecast::Forecast;
use spendguard_domain::period::{WindowKind, YearMonth, Zone};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::usage::{CounterKey, UsageRecord};
use spendguard_local::memory_bus::MemoryBus;
use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::aws;
use spendguard_tests::conformance::{Store, budget, record};
use spendguard_tests::hotitem::ingest_usage;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn noon(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

struct World {
    bus: Arc<MemoryBus>,
    metrics: Arc<MemoryMetrics>,
    nightly: Nightly,
}

fn world(store: Store, now: &str) -> World {
    let bus = Arc::new(MemoryBus::default());
    let metrics = Arc::new(MemoryMetrics::default());
    let nightly = Nightly {
        store: store.clone(),
        bus: bus.clone(),
        clock: Arc::new(FixedClock::new(now.parse().unwrap())),
        metrics: metrics.clone(),
    };
    World {
        bus,
        metrics,
        nightly,
    }
}

async fn keep_budgets(store: &Store, budgets: Vec<Budget>) {
    store
        .put_policy(&PolicySet {
            budgets,
            ..PolicySet::default()
        })
        .await
        .unwrap();
}

/// Thirty ordinary $5 days for `openai/x/k`, then $100 on 21 November (returned).
async fn seed_a_spike(store: &Store) -> NaiveDate {
    store.put_policy(&PolicySet::default()).await.unwrap();
    let day = d("2026-11-21");
    let mut records = daily("openai/x/k", day - Duration::days(30), 30, |_| 500);
    records.push(record("big", "openai/x/k", 10000, noon(day)));
    ingest(store, records).await;
    day
}

async fn ingest(store: &Store, records: Vec<UsageRecord>) {
    let budgets = store.load_policy().await.unwrap().budgets;
    for chunk in records.chunks(200) {
        ingest_usage(store.as_ref(), &budgets, chunk, None, Utc::now())
            .await
            .unwrap();
    }
}

/// One record a day at noon UTC from `from` for `days` days, `cents(date)` each.
fn daily(
    scope: &str,
    from: NaiveDate,
    days: i64,
    cents: impl Fn(NaiveDate) -> i64,
) -> Vec<UsageRecord> {
    (0..days)
        .map(|n| from + Duration::days(n))
        .map(|date| record(&format!("{scope}-{date}"), scope, cents(date), noon(date)))
        .collect()
}

async fn summary(store: &Store, scope: &str, date: NaiveDate, zone: Zone) -> Option<DailySummary> {
    store
        .summaries(&Scope::parse(scope).unwrap(), date, date)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.zone == zone)
}

fn cost(s: &DailySummary) -> Decimal {
    s.day
        .get("cost.USD")
        .map(|v| v.parse().unwrap())
        .unwrap_or_default()
}

pub async fn a_real_spike_is_found_and_a_weekly_pattern_is_not(store: Store) {
    store.put_policy(&PolicySet::default()).await.unwrap();
    let day = d("2026-11-23"); // a Monday
    let start = day - Duration::days(35);
    let mut records = daily("openai/team/key-a", start, 36, |_| 1000);
    records.push(record("spike-a", "openai/team/key-a", 8000, noon(day)));
    records.extend(daily("anthropic/weekly/key-b", start, 36, |date| {
        if date.weekday() == chrono::Weekday::Mon {
            5000
        } else {
            1000
        }
    }));
    records.extend(daily("app/new/key-c", day, 1, |_| 90000));
    ingest(&store, records).await;
    let w = world(store.clone(), "2026-11-24T06:00:00Z");
    let report = w.nightly.run(Days::Yesterday).await.unwrap();
    assert_eq!(report.len(), 1, "one zone (UTC)");

    let a = summary(&store, "openai/team/key-a", day, Zone::UTC)
        .await
        .unwrap();
    assert_eq!(
        cost(&a),
        Decimal::from(90),
        "the usual $10 and the $80 spike"
    );
    assert_eq!(
        a.anomalies
            .iter()
            .map(|s| s.metric.as_str())
            .collect::<Vec<_>>(),
        ["cost"]
    );
    let b = summary(&store, "anthropic/weekly/key-b", day, Zone::UTC)
        .await
        .unwrap();
    assert_eq!(cost(&b), Decimal::from(50));
    assert!(b.anomalies.is_empty(), "Mondays are always busy: {b:?}");
    let c = summary(&store, "app/new/key-c", day, Zone::UTC)
        .await
        .unwrap();
    assert!(
        c.anomalies.is_empty(),
        "a new scope has no baseline to be anomalous against"
    );

    let events = w.bus.events();
    let anomalies: Vec<String> = events
        .iter()
        .filter(|e| e.kind == AlertKind::Anomaly)
        .map(|e| e.scope.to_string())
        .collect();
    assert_eq!(
        anomalies,
        ["openai/team/key-a"],
        "one alert, at the most specific scope"
    );
    let report = events
        .iter()
        .find(|e| e.kind == AlertKind::Report)
        .expect("the daily report");
    // as the wire carries them
    let details = serde_json::to_value(&report.details).unwrap();
    assert_eq!(details["total"]["USD"], "1040", "$90 + $50 + $900");
    assert_eq!(details["top_scopes"][0][0], "app/new");
    assert_eq!(details["top_models"][0][0], "_model/openai:gpt-4o");
    assert_eq!(details["movers"][0][0], "openai/team/key-a");
    assert!(
        !w.metrics.0.lock().unwrap().is_empty(),
        "EMF lines for the root and providers"
    );
}

pub async fn re_running_a_day_gives_the_same_rows_and_no_second_alert(store: Store) {
    let day = seed_a_spike(&store).await;
    let w = world(store.clone(), "2026-11-22T06:00:00Z");
    w.nightly.run(Days::Date(day)).await.unwrap();
    let first = store
        .summaries(&Scope::parse("openai/x/k").unwrap(), day, day)
        .await
        .unwrap();
    let alerts = w.bus.events().len();
    w.nightly.run(Days::Date(day)).await.unwrap();
    let second = store
        .summaries(&Scope::parse("openai/x/k").unwrap(), day, day)
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(first.len(), 1, "upserted, not appended");
    assert_eq!(
        w.bus.events().len(),
        alerts,
        "the anomaly and the report are published once"
    );
    assert_eq!(alerts, 2);
}

pub async fn a_backfill_crosses_a_month_boundary_and_a_dst_change(store: Store) {
    let mut berlin = budget("berlin-team", "eu/team", WindowKind::Monthly, 1000);
    berlin.zone = Zone::parse("Europe/Berlin").unwrap();
    keep_budgets(&store, vec![berlin]).await;
    let tz = Zone::parse("Europe/Berlin").unwrap();
    ingest(
        &store,
        vec![
            // 23:30 UTC on 25 Oct (after clocks went back) is 00:30 on 26 Oct in Berlin
            record(
                "dst",
                "eu/team/k",
                700,
                "2026-10-25T23:30:00Z".parse().unwrap(),
            ),
            // 23:30 UTC on 31 Oct is already November in Berlin
            record(
                "eom",
                "eu/team/k",
                300,
                "2026-10-31T23:30:00Z".parse().unwrap(),
            ),
            record(
                "nov",
                "eu/team/k",
                100,
                "2026-11-01T12:00:00Z".parse().unwrap(),
            ),
        ],
    )
    .await;
    let w = world(store.clone(), "2026-11-05T06:00:00Z");
    let days = w
        .nightly
        .run(Days::Range(d("2026-10-24"), d("2026-11-02")))
        .await
        .unwrap();
    assert_eq!(days.len(), 20, "10 days in each of two zones");
    assert!(w.bus.events().is_empty(), "a backfill raises no alerts");
    let at = |date, zone| {
        let store = store.clone();
        async move {
            summary(&store, "eu/team/k", d(date), zone)
                .await
                .map(|s| cost(&s))
                .unwrap_or_default()
        }
    };
    assert_eq!(at("2026-10-25", Zone::UTC).await, Decimal::from(7));
    assert_eq!(at("2026-10-25", tz).await, Decimal::ZERO);
    assert_eq!(at("2026-10-26", tz).await, Decimal::from(7));
    assert_eq!(at("2026-10-31", Zone::UTC).await, Decimal::from(3));
    assert_eq!(
        at("2026-11-01", tz).await,
        Decimal::from(4),
        "the 31 Oct UTC record is November in Berlin"
    );
    let nov1 = summary(&store, "eu/team/k", d("2026-11-01"), tz)
        .await
        .unwrap();
    assert_eq!(
        nov1.month_to_date[&spendguard_domain::money::Currency::USD],
        "4",
        "month-to-date starts in November"
    );
    let oct31 = summary(&store, "eu/team/k", d("2026-10-31"), Zone::UTC)
        .await
        .unwrap();
    assert_eq!(
        oct31.month_to_date[&spendguard_domain::money::Currency::USD],
        "10"
    );
    // bounded ranges
    assert!(matches!(
        w.nightly
            .run(Days::Range(d("2026-01-01"), d("2026-12-31")))
            .await,
        Err(NightlyError::TooLong(365))
    ));
    assert!(matches!(
        w.nightly
            .run(Days::Range(d("2026-11-02"), d("2026-11-01")))
            .await,
        Err(NightlyError::Backwards(..))
    ));
}

pub async fn an_empty_day_is_summarised_without_complaint(store: Store) {
    store.put_policy(&PolicySet::default()).await.unwrap();
    ingest(
        &store,
        daily("openai/quiet/k", d("2026-11-01"), 10, |_| 100),
    )
    .await;
    let w = world(store.clone(), "2026-11-22T06:00:00Z");
    let days = w.nightly.run(Days::Date(d("2026-11-21"))).await.unwrap();
    assert_eq!(days[0].anomalies, 0);
    let s = summary(&store, "openai/quiet/k", d("2026-11-21"), Zone::UTC)
        .await
        .unwrap();
    assert!(s.day.is_empty(), "nothing was spent");
    assert_eq!(
        s.month_to_date[&spendguard_domain::money::Currency::USD],
        "10"
    );
    // a month with no usage at all: nothing to summarise, still a clean run
    let days = w.nightly.run(Days::Date(d("2026-08-15"))).await.unwrap();
    assert_eq!(days[0].scopes, 0);
}

pub async fn one_absurd_day_does_not_make_an_absurd_forecast(store: Store) {
    let b = budget("glitch", "app/glitch", WindowKind::Monthly, 1000);
    keep_budgets(&store, vec![b]).await;
    let day = d("2026-11-21");
    let mut records = daily("app/glitch/k", d("2026-11-01"), 20, |_| 1000);
    records.push(record("absurd", "app/glitch/k", 100_000_000, noon(day))); // $1,000,000 in a day
    ingest(&store, records).await;
    let w = world(store.clone(), "2026-11-22T06:00:00Z");
    w.nightly.run(Days::Date(day)).await.unwrap();
    let s = summary(&store, "app/glitch", day, Zone::UTC).await.unwrap();
    assert!(
        matches!(s.forecast, Some(Forecast::Implausible(_))),
        "flagged, not projected: {:?}",
        s.forecast
    );
    let normal = summary(&store, "app/glitch", day - Duration::days(1), Zone::UTC).await;
    assert!(normal.is_none(), "only the requested day was summarised");
    w.nightly
        .run(Days::Date(day - Duration::days(1)))
        .await
        .unwrap();
    let normal = summary(&store, "app/glitch", day - Duration::days(1), Zone::UTC)
        .await
        .unwrap();
    assert!(
        matches!(normal.forecast, Some(Forecast::Projected(f)) if f < Decimal::from(400)),
        "{:?}",
        normal.forecast
    );
    // the budgeted scope carries PercentOfBudget in its metric line
    let lines = w.metrics.0.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""Scope":"app/glitch""#) && l.contains("PercentOfBudget")),
        "{lines:?}"
    );
}

/// The alerts topic failing its first `failures` publishes, as SNS does when throttled.
struct FlakyBus {
    failures: std::sync::atomic::AtomicUsize,
    inner: MemoryBus,
}

#[async_trait::async_trait]
impl AlertBus for FlakyBus {
    async fn publish(&self, event: &AlertEvent) -> Result<(), BusError> {
        use std::sync::atomic::Ordering;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BusError("Throttling: rate exceeded".into()));
        }
        self.inner.publish(event).await
    }
}

pub async fn a_failed_publish_fails_the_run_and_the_retry_sends_each_once(store: Store) {
    seed_a_spike(&store).await; // the clock below makes the 21st "yesterday"
    let bus = Arc::new(FlakyBus {
        failures: 1.into(),
        inner: MemoryBus::default(),
    });
    let nightly = Nightly {
        store: store.clone(),
        bus: bus.clone(),
        clock: Arc::new(FixedClock::new("2026-11-22T06:00:00Z".parse().unwrap())),
        metrics: Arc::new(MemoryMetrics::default()),
    };
    let first = nightly.run(Days::Yesterday).await;
    assert!(
        matches!(&first, Err(NightlyError::Publish(why)) if why.contains("Throttling")),
        "{first:?}"
    );
    assert_eq!(
        bus.inner.events().len(),
        1,
        "the report went out, the anomaly did not"
    );
    nightly.run(Days::Yesterday).await.unwrap();
    nightly.run(Days::Yesterday).await.unwrap();
    let mut kinds: Vec<AlertKind> = bus.inner.events().iter().map(|e| e.kind).collect();
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(kinds, [AlertKind::Anomaly, AlertKind::Report]);
}

pub async fn concurrent_runs_publish_each_alert_once(store: Store) {
    let day = seed_a_spike(&store).await;
    let w = world(store.clone(), "2026-11-22T06:00:00Z");
    let nightly = Arc::new(w.nightly);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let n = nightly.clone();
            tokio::spawn(async move { n.run(Days::Date(day)).await.unwrap() })
        })
        .collect();
    let mut published = 0;
    for r in runs {
        published += r.await.unwrap()[0].alerts_published;
    }
    assert_eq!(published, 1, "one run won the anomaly");
    assert_eq!(w.bus.events().len(), 2, "one anomaly and one report in all");
}

macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(Arc::new(SqliteStore::in_memory().unwrap())).await;
                }
            )*
        }
        mod dynamodb {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let sdk = aws::sdk().await;
                    let (store, _) = aws::new_store(&sdk).await;
                    super::$case(Arc::new(store)).await;
                }
            )*
        }
    };
}

both_stores!(
    a_real_spike_is_found_and_a_weekly_pattern_is_not,
    re_running_a_day_gives_the_same_rows_and_no_second_alert,
    a_backfill_crosses_a_month_boundary_and_a_dst_change,
    an_empty_day_is_summarised_without_complaint,
    one_absurd_day_does_not_make_an_absurd_forecast,
    a_failed_publish_fails_the_run_and_the_retry_sends_each_once,
    concurrent_runs_publish_each_alert_once,
);

/// Counters moved from the embedded store into a table (how the benchmark seeds moto) read
/// back the same, scopes indexed, and the nightly run sees the same day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_imported_into_dynamodb_read_back_the_same() {
    let local: Store = Arc::new(SqliteStore::in_memory().unwrap());
    local.put_policy(&PolicySet::default()).await.unwrap();
    let day = d("2026-11-02");
    let mut records = daily("openai/team/key-a", d("2026-10-20"), 14, |n| {
        100 + i64::from(n.day())
    });
    records.extend(daily("anthropic/x/key-b", d("2026-11-01"), 2, |_| 250));
    ingest(&local, records).await;
    let mut keys = Vec::new();
    for month in [YearMonth::of(d("2026-10-01")), YearMonth::of(day)] {
        for scope in local.scopes_with_counters(month).await.unwrap() {
            keys.push(CounterKey {
                scope,
                zone: Zone::UTC,
                month,
            });
        }
    }
    let counters = local.read_counters(&keys).await.unwrap();
    assert!(counters.len() > 10, "{} counters", counters.len());

    let sdk = aws::sdk().await;
    let (table, _) = aws::new_store(&sdk).await;
    table.import_counters(&counters).await.unwrap();
    assert_eq!(table.read_counters(&keys).await.unwrap(), counters);
    for month in [YearMonth::of(d("2026-10-01")), YearMonth::of(day)] {
        assert_eq!(
            table.scopes_with_counters(month).await.unwrap(),
            local.scopes_with_counters(month).await.unwrap()
        );
    }
    let table: Store = Arc::new(table);
    table.put_policy(&PolicySet::default()).await.unwrap();
    for store in [&local, &table] {
        world(store.clone(), "2026-11-03T06:00:00Z")
            .nightly
            .run(Days::Date(day))
            .await
            .unwrap();
    }
    let scope = Scope::parse("openai/team").unwrap();
    assert_eq!(
        local.summaries(&scope, day, day).await.unwrap(),
        table.summaries(&scope, day, day).await.unwrap()
    );
}

/// The deployed dashboard reads only metrics the nightly run writes, under the same namespace
/// and dimensions (a renamed metric would leave an empty graph, not an error).
#[tokio::test]
async fn the_dashboard_shows_what_the_nightly_run_emits() {
    let store: Store = Arc::new(SqliteStore::in_memory().unwrap());
    let b = budget("glitch", "app/glitch", WindowKind::Monthly, 1000);
    keep_budgets(&store, vec![b]).await;
    ingest(&store, daily("app/glitch/k", d("2026-11-01"), 21, |_| 1000)).await;
    let w = world(store, "2026-11-22T06:00:00Z");
    w.nightly.run(Days::Yesterday).await.unwrap();
    let mut emitted = std::collections::BTreeSet::new();
    for line in w.metrics.0.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "spendguard");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Scope", "Currency"]])
        );
        for m in directive["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(v[name].is_number(), "{name} has a numeric value in {line}");
            emitted.insert(name.to_string());
        }
    }
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../terraform/modules/spendguard/dashboard.json"),
    )
    .unwrap();
    let searched: Vec<&str> = dashboard
        .split("MetricName=\\\"")
        .skip(1)
        .map(|rest| rest.split('\\').next().unwrap())
        .collect();
    assert!(searched.len() >= 4, "{searched:?}");
    for name in searched {
        assert!(
            emitted.contains(name),
            "the dashboard graphs `{name}`, emitted: {emitted:?}"
        );
    }
    assert_eq!(
        dashboard.matches("{spendguard,Currency,Scope}").count(),
        dashboard.matches("SEARCH(").count(),
        "every search names the namespace and both dimensions"
    );
}

/// The nightly run publishes its anomaly and its daily report through the real SNS API (the
/// report belongs to no budget: an empty `budget_id` attribute would be refused by SNS).
#[tokio::test]
async fn anomalies_and_the_daily_report_publish_through_sns() {
    let sdk = spendguard_tests::aws::sdk().await;
    let probe = spendguard_tests::aws::TopicProbe::new(&sdk).await;
    let store: Store = Arc::new(SqliteStore::in_memory().unwrap());
    let spike = seed_a_spike(&store).await;
    let nightly = Nightly {
        store: store.clone(),
        bus: Arc::new(spendguard_aws::sns::SnsBus::new(
            aws_sdk_sns::Client::new(&sdk),
            &probe.topic_arn,
        )),
        clock: Arc::new(FixedClock::new(noon(spike + chrono::Duration::days(1)))),
        metrics: Arc::new(MemoryMetrics::default()),
    };
    let days = nightly.run(Days::Yesterday).await.unwrap();
    assert!(days[0].anomalies >= 1, "{days:?}");
    assert_eq!(
        days[0].alerts_published, 1,
        "one anomaly alert, at the most specific scope"
    );
    assert!(days[0].report_published);
    let kinds: Vec<String> = probe
        .drain()
        .await
        .iter()
        .map(|envelope| {
            let event: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
            event["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "report").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "anomaly").count(),
        1,
        "{kinds:?}"
    );
}

/// Issue 20 §1: a stored counter that cannot be read back (written before the bounds, or
/// edited by hand) spoils only its scope: every other scope is summarised, and the run ends
/// with an error that names the scope and is not a store outage (a retry cannot help).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_counter_spoils_only_its_scope() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let store: Store = Arc::new(store);
    keep_budgets(
        &store,
        vec![
            budget("poisoned", "app/a", WindowKind::Monthly, 1000),
            budget("healthy", "app/b", WindowKind::Monthly, 1000),
        ],
    )
    .await;
    let day = d("2026-11-20");
    let budgets = store.load_policy().await.unwrap().budgets;
    ingest_usage(
        store.as_ref(),
        &budgets,
        &[
            record("a1", "app/a/k", 100, noon(day)),
            record("b1", "app/b/k", 250, noon(day)),
        ],
        None,
        noon(day),
    )
    .await
    .unwrap();
    aws::plant_counter(&sdk, &table, "app/a", "2026-11", "d20_cost.USD", "1e35").await;
    let w = world(store.clone(), "2026-11-21T06:00:00Z");
    let err = w.nightly.run(Days::Yesterday).await.unwrap_err();
    assert!(
        !matches!(err, NightlyError::Store(_)),
        "a stored figure no retry can fix is not a store outage: {err}"
    );
    assert!(err.to_string().contains("app/a"), "{err}");
    let healthy = store
        .summaries(&Scope::parse("app/b").unwrap(), day, day)
        .await
        .unwrap();
    assert_eq!(healthy.len(), 1, "app/b is summarised");
    assert!(
        store
            .summaries(&Scope::parse("app/a").unwrap(), day, day)
            .await
            .unwrap()
            .is_empty(),
        "nothing is made up for app/a"
    );
}

/// ADR 031: spend a stream batch never rolled up (it ended in the failed-events queue, its key
/// was revoked and never reports again) is in the nightly summary of its ancestors: the run
/// rolls up what is pending before it summarises. (The first build summarised the ancestors
/// without it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_left_pending_is_in_the_nightly_summary_of_its_ancestors() {
    let sdk = aws::sdk().await;
    let (table, _) = aws::new_store(&sdk).await;
    let store: Store = Arc::new(table);
    store.put_policy(&PolicySet::default()).await.unwrap();
    let day = d("2026-12-01");
    // counted on its key, its roll-up never ran
    spendguard_app::flows::ingest::ingest_usage(
        store.as_ref(),
        &[],
        &[record("dead-lettered", "openai/x/k", 4200, noon(day))],
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    let w = world(store.clone(), "2026-12-02T06:00:00Z");
    w.nightly.run(Days::Yesterday).await.unwrap();
    for scope in ["openai/x/k", "openai/x", "openai", "*"] {
        let s = summary(&store, scope, day, Zone::UTC).await;
        assert_eq!(
            s.as_ref().map(cost),
            Some(Decimal::from(42)),
            "{scope}: {s:?}"
        );
    }
}

/// Review finding 3: a pending item the roll-up cannot read fails only itself: the nightly
/// run still rolls up and summarises everything else, then fails naming it. (Before, the
/// roll-up's first error aborted the nightly run every night: no summary at all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pending_item_fails_the_nightly_run_only_after_the_rest() {
    let sdk = aws::sdk().await;
    let (table, name) = aws::new_store(&sdk).await;
    let store: Store = Arc::new(table);
    store.put_policy(&PolicySet::default()).await.unwrap();
    let day = d("2026-12-01");
    for (id, scope, cents) in [("good", "openai/x/k", 4200), ("bad", "openai/y/k", 1000)] {
        spendguard_app::flows::ingest::ingest_usage(
            store.as_ref(),
            &[],
            &[record(id, scope, cents, noon(day))],
            None,
            Utc::now(),
        )
        .await
        .unwrap();
    }
    spendguard_tests::hotitem::spoil_pending_items(&sdk, &name, "openai/y/k").await;
    let w = world(store.clone(), "2026-12-02T06:00:00Z");
    let err = w.nightly.run(Days::Yesterday).await.unwrap_err();
    assert!(err.to_string().contains("pending item"), "{err}");
    for scope in ["openai/x", "openai", "*"] {
        let s = summary(&store, scope, day, Zone::UTC).await;
        assert_eq!(
            s.as_ref().map(cost),
            Some(Decimal::from(42)),
            "{scope}: {s:?}"
        );
    }
}
