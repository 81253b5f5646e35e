//! One nightly run over 10,000 key scopes (plus their teams, providers and models) with 30 days
//! of history: what the daily-aggregate function does each night for a large account. On the
//! embedded store always, and on DynamoDB when `AWS_ENDPOINT_URL` points at moto (or AWS).
//!
//!     cargo run --release -p spendguard-bench -- nightly [--scopes 10000]
//!
//! Seeding ingests one record per key and day into the embedded store, and copies the counters
//! into the table (not timed: ingest is measured elsewhere); the timed part is `Nightly::run` for one date, reading counters and writing one
//! summary per scope.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use spendguard_app::flows::nightly::{Days, MemoryMetrics, Nightly};
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::SpendStore;
use spendguard_app::ports::store::StateStore;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_bench::all_counters;
use spendguard_domain::money::{Currency, Money};
use spendguard_domain::period::{YearMonth, Zone};
use spendguard_domain::pricing::Tokens;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::usage::{UsageEntry, UsageRecord};
use spendguard_local::memory_bus::MemoryBus;
use spendguard_local::sqlite::SqliteStore;

const HISTORY_DAYS: i64 = 30;
const PROVIDERS: [(&str, &str); 3] = [
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4"),
    ("bedrock", "nova-pro"),
];

fn date() -> NaiveDate {
    "2026-11-21".parse().unwrap()
}

/// Key `i`'s usage on the day `n` days before the run's date.
fn usage(i: usize, n: i64) -> UsageEntry {
    let (provider, model) = PROVIDERS[i % PROVIDERS.len()];
    let scope = Scope::parse(&format!("{provider}/team-{:03}/key-{i:05}", i / 100)).unwrap();
    let day = date() - Duration::days(n);
    let at: DateTime<Utc> = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
    // a little variety so medians and spreads are not all equal
    let cents = 100 + ((i as i64 * 7 + n * 13) % 400);
    let record = UsageRecord {
        id: format!("seed-{i}-{n}"),
        scope,
        provider: provider.into(),
        model: Some(model.into()),
        tokens: Tokens {
            input: 1000 + cents as u64,
            output: 200,
            cached: 0,
            cache_write: 0,
        },
        requests: 10 + (cents as u64 % 17),
        cost: Money::new(Decimal::new(cents, 2), Currency::USD),
        timestamp: at,
        covers_minutes: 1,
        user: None,
        endpoint: None,
        feature: None,
    };
    UsageEntry::of(&record, &[Zone::UTC])
}

/// Ingests one record per key and day into the embedded store.
async fn seed(store: &SqliteStore, keys: usize) {
    store.put_policy(&PolicySet::default()).await.unwrap();
    let entries: Vec<UsageEntry> = (0..HISTORY_DAYS)
        .flat_map(|n| (0..keys).map(move |i| usage(i, n)))
        .collect();
    for chunk in entries.chunks(1000) {
        store
            .ingest_usage(chunk, Utc::now(), Duration::days(1))
            .await
            .unwrap();
    }
}

/// The history's months.
fn months() -> BTreeSet<YearMonth> {
    (0..HISTORY_DAYS)
        .map(|n| YearMonth::of(date() - Duration::days(n)))
        .collect()
}

/// Times the nightly run for the date, and a re-run of it.
async fn measure(name: &str, store: Arc<dyn StateStore>) {
    store.put_policy(&PolicySet::default()).await.unwrap();
    let bus = Arc::new(MemoryBus::default());
    let metrics = Arc::new(MemoryMetrics::default());
    let nightly = Nightly {
        store,
        bus: bus.clone(),
        clock: Arc::new(FixedClock::new(
            (date() + Duration::days(1))
                .and_hms_opt(6, 0, 0)
                .unwrap()
                .and_utc(),
        )),
        metrics: metrics.clone(),
    };
    let started = Instant::now();
    let days = nightly.run(Days::Date(date())).await.unwrap();
    let first = started.elapsed();
    let emf_lines = metrics.0.lock().unwrap().len();
    let started = Instant::now();
    nightly.run(Days::Date(date())).await.unwrap();
    let rerun = started.elapsed();
    println!(
        "{name:<10} {:>6} scopes  nightly run {:>7.2} s  re-run {:>7.2} s  ({} EMF lines, {} events in all)",
        days[0].scopes,
        first.as_secs_f64(),
        rerun.as_secs_f64(),
        emf_lines,
        bus.events().len(),
    );
}

pub async fn run(args: &[String]) {
    let keys = args
        .iter()
        .position(|a| a == "--scopes")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--scopes takes a number"))
        .unwrap_or(10_000);
    println!(
        "nightly run for {} over {keys} keys with {HISTORY_DAYS} days of history",
        date()
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let seeding = Instant::now();
    seed(&sqlite, keys).await;
    println!(
        "seeded {} records in {:.1} s (not part of the figures)",
        keys as i64 * HISTORY_DAYS,
        seeding.elapsed().as_secs_f64()
    );
    measure("embedded", sqlite.clone()).await;
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        // the same counters, imported whole: moto copies its tables in every transaction, so
        // ingesting 300,000 records there would take hours
        let sdk = spendguard_aws::sdk::sdk_config().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let table = format!("spendguard-bench-{}", uuid::Uuid::new_v4());
        DynamoStore::create_table(&client, &table).await.unwrap();
        let dynamo = DynamoStore::new(client, table);
        dynamo
            .import_counters(&all_counters(&sqlite, &months(), &[Zone::UTC]).await)
            .await
            .unwrap();
        measure("dynamodb", Arc::new(dynamo)).await;
    } else {
        println!("dynamodb   skipped: set AWS_ENDPOINT_URL to moto (tests/moto/server.py) or AWS");
    }
}
