//! How spendguard scales: one budget-check run over 10 / 100 / 1,000 / 10,000 budgets on the
//! embedded store and on DynamoDB (moto), with wall time, AWS requests (counted by an SDK
//! interceptor) and peak memory; and usage ingest through the webhook's `/usage` route in
//! process, in records per second for batches of 1 / 100 / 1,000, with the DynamoDB write
//! requests each record costs. Prints tables; asserts nothing.
//!
//!     cargo run --release -p spendguard-bench -- scale [--max-budgets 10000]
//!
//! Each budget-check size runs in a process of its own, so that its peak memory is its own.
//! DynamoDB figures need `AWS_ENDPOINT_URL` at moto (bench/run starts it).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use serde_json::{Value, json};
use spendguard_app::backends::Backends;
use spendguard_app::env::Env;
use spendguard_app::flows::ingest::ingest_usage;
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::StateStore;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_aws::sns::SnsBus;
use spendguard_bench::{all_counters, fixed_now, peak_rss_kib, process_cpu_time, reset_peak_rss};
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::period::{YearMonth, Zone};
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_domain::usage::UsageWire;
use spendguard_http::verify::sns::{CertificateSource, FetchError};
use spendguard_local::file_vault::FileVault;
use spendguard_local::memory_bus::MemoryBus;
use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::aws::RequestCounter;
use url::Url;

const USAGE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const BATCHES: [usize; 3] = [1, 100, 1_000];

fn key_scope(i: usize) -> String {
    format!("openai/team-{:03}/key-{i:05}", i / 100)
}

/// `n` budgets, one per key, $100 a month with three tiers.
fn budgets_file(n: usize) -> String {
    let mut text = String::from(
        "version = 1\n[defaults]\ncurrency = \"USD\"\ntimezone = \"UTC\"\n[routing]\nwarning = []\ncritical = []\nemergency = []\n",
    );
    for i in 0..n {
        let _ = write!(
            text,
            "[[budget]]\nid = \"key-{i:05}\"\nscope = \"{}\"\n[[budget.window]]\nperiod = \"monthly\"\nlimit = \"100\"\ntiers = [{{ name = \"warning\", percent = 50 }}, {{ name = \"critical\", percent = 80 }}, {{ name = \"emergency\", percent = 100 }}]\n",
            key_scope(i)
        );
    }
    text
}

/// One usage record for key `i` this month: one key in ten is past its warning tier.
fn record(i: usize, id: &str) -> Value {
    let cost = if i.is_multiple_of(10) { "60" } else { "20" };
    json!({
        "id": id, "scope": key_scope(i), "provider": "openai", "model": "gpt-4o",
        "requests": 1, "cost": {"amount": cost, "currency": "USD"},
        "timestamp": (fixed_now() - chrono::Duration::minutes(5)).to_rfc3339(),
    })
}

fn counted_dynamodb(sdk: &SdkConfig, counter: &RequestCounter) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .build(),
    )
}

/// One budget-check size, in this process: prints one JSON line.
async fn check_once(n: usize, backend: &str) {
    let policy = parse_budgets("bench", &budgets_file(n)).expect("generated budgets parse");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    sqlite.put_policy(&policy).await.unwrap();
    let records: Vec<_> = (0..n)
        .map(|i| {
            let wire: UsageWire = serde_json::from_value(record(i, &format!("seed-{i}"))).unwrap();
            wire.validate(&policy.settings.prices, fixed_now()).unwrap()
        })
        .collect();
    for chunk in records.chunks(1000) {
        ingest_usage(&sqlite, &policy.budgets, chunk, None, fixed_now())
            .await
            .unwrap();
    }
    let counter = RequestCounter::default();
    let (sdk, store, bus, table, topic): (
        SdkConfig,
        Arc<dyn StateStore>,
        Arc<dyn AlertBus>,
        String,
        String,
    ) = if backend == "dynamodb" {
        let sdk = spendguard_aws::sdk::sdk_config().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let table = format!("spendguard-scale-{}", uuid::Uuid::new_v4().simple());
        DynamoStore::create_table(&client, &table).await.unwrap();
        let seeding = DynamoStore::new(client, &table);
        seeding.put_policy(&policy).await.unwrap();
        seeding
            .import_counters(
                &all_counters(
                    &sqlite,
                    &BTreeSet::from([YearMonth::of(fixed_now().date_naive())]),
                    &[Zone::UTC],
                )
                .await,
            )
            .await
            .unwrap();
        let topic = aws_sdk_sns::Client::new(&sdk)
            .create_topic()
            .name(format!("scale-{}", uuid::Uuid::new_v4().simple()))
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        let sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        );
        let store = Arc::new(DynamoStore::new(counted_dynamodb(&sdk, &counter), &table));
        (sdk, store, Arc::new(SnsBus::new(sns, &topic)), table, topic)
    } else {
        let sdk = spendguard_aws::sdk::offline_sdk_config();
        let topic = "arn:aws:sns:us-east-1:123456789012:none".to_string();
        (
            sdk,
            Arc::new(sqlite),
            Arc::new(MemoryBus::default()),
            "embedded".into(),
            topic,
        )
    };
    let variables = HashMap::from([
        ("SPENDGUARD_TABLE".to_string(), table.clone()),
        ("SPENDGUARD_ALERTS_TOPIC_ARN".to_string(), topic),
    ]);
    let config =
        budget_check::config::Config::from_env(&Env(|name: &str| variables.get(name).cloned()))
            .unwrap();
    let backends = Backends {
        store,
        vault: Arc::new(FileVault),
        clock: Arc::new(FixedClock::new(fixed_now())),
    };
    let checker = budget_check::app::checker_with(&config, &sdk, backends, bus)
        .await
        .unwrap();
    let event = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    reset_peak_rss();
    counter.reset();
    let started = Instant::now();
    let first = budget_check::handler::handle(&checker, event.clone())
        .await
        .unwrap();
    let first_time = started.elapsed();
    let first_requests = counter.count();
    counter.reset();
    let started = Instant::now();
    budget_check::handler::handle(&checker, event)
        .await
        .unwrap();
    let next_time = started.elapsed();
    let line = json!({
        "budgets": n,
        "backend": backend,
        "alerts": first.alerts.published,
        "first_ms": first_time.as_secs_f64() * 1000.0,
        "first_requests": first_requests,
        "next_ms": next_time.as_secs_f64() * 1000.0,
        "next_requests": counter.count(),
        "peak_rss_kib": peak_rss_kib(),
    });
    println!("{line}");
}

fn budget_check_table(max: usize, with_dynamodb: bool) {
    println!(
        "\nbudget-check, one run over N budgets (one key each, one in ten past its warning tier)"
    );
    println!(
        "| budgets | store | first run (raises alerts) | AWS requests | next run | AWS requests | alerts | peak RSS |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let me = std::env::current_exe().unwrap();
    for backend in ["embedded", "dynamodb"] {
        if backend == "dynamodb" && !with_dynamodb {
            println!("| - | dynamodb | skipped: set AWS_ENDPOINT_URL to moto | | | | | |");
            continue;
        }
        for n in SIZES.into_iter().filter(|n| *n <= max) {
            let out = std::process::Command::new(&me)
                .args(["scale", "--check", &n.to_string(), backend])
                .output()
                .expect("run one size");
            let line: Value = match serde_json::from_slice(&out.stdout) {
                Ok(line) => line,
                Err(_) => panic!(
                    "{n} budgets on {backend} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            };
            let requests = |k: &str| {
                if backend == "dynamodb" {
                    line[k].to_string()
                } else {
                    "-".into()
                }
            };
            println!(
                "| {n} | {backend} | {:.1} ms | {} | {:.1} ms | {} | {} | {:.1} MB |",
                line["first_ms"].as_f64().unwrap_or(0.0),
                requests("first_requests"),
                line["next_ms"].as_f64().unwrap_or(0.0),
                requests("next_requests"),
                line["alerts"],
                line["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            );
        }
    }
}

struct NoCertificates;

#[async_trait::async_trait]
impl CertificateSource for NoCertificates {
    async fn fetch(&self, url: &Url) -> Result<String, FetchError> {
        Err(FetchError::Unavailable(format!(
            "{url}: no certificates in this benchmark"
        )))
    }
}

/// The webhook function in process, on `store`, its secrets read from files in `dir`.
async fn webhook(
    dir: &Path,
    sdk: &SdkConfig,
    store: Arc<dyn StateStore>,
) -> budget_webhook::handler::Webhook {
    let usage = dir.join("usage-secret");
    let status = dir.join("status-token");
    std::fs::write(&usage, USAGE_SECRET).unwrap();
    std::fs::write(&status, "status-token-bench-0123456789abcdef0123456789").unwrap();
    let variables = HashMap::from([
        ("SPENDGUARD_TABLE", "bench".to_string()),
        (
            "SPENDGUARD_ALERTS_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:none".into(),
        ),
        (
            "SPENDGUARD_USAGE_SECRET_ARN",
            format!("file:{}", usage.display()),
        ),
        (
            "SPENDGUARD_STATUS_TOKEN_ARN",
            format!("file:{}", status.display()),
        ),
    ]);
    let config =
        budget_webhook::config::Config::from_env(&Env(|name: &str| variables.get(name).cloned()))
            .unwrap();
    let backends = Backends {
        store,
        vault: Arc::new(FileVault),
        clock: Arc::new(FixedClock::new(fixed_now())),
    };
    budget_webhook::app::webhook_with(
        &config,
        sdk,
        backends,
        Arc::new(MemoryBus::default()),
        Box::new(NoCertificates),
    )
    .await
    .unwrap()
}

/// A signed `/usage` request with `size` new records.
fn usage_request(size: usize, serial: &mut usize) -> budget_webhook::http::HttpRequest {
    let records: Vec<Value> = (0..size)
        .map(|i| {
            *serial += 1;
            // an application's batch: its calls over ten keys
            record(i % 10, &format!("r{serial}"))
        })
        .collect();
    let body = json!({ "records": records }).to_string();
    let id = format!("msg_{serial}");
    let now = fixed_now().timestamp();
    let signature = WebhookSecret::parse(USAGE_SECRET)
        .unwrap()
        .sign(&id, now, body.as_bytes());
    budget_webhook::http::HttpRequest {
        method: "POST".into(),
        path: "/usage".into(),
        headers: HashMap::from([
            ("webhook-id".to_string(), id),
            ("webhook-timestamp".to_string(), now.to_string()),
            ("webhook-signature".to_string(), signature),
            ("content-type".to_string(), "application/json".to_string()),
        ]),
        body: body.into_bytes(),
        ..Default::default()
    }
}

async fn ingest_table(with_dynamodb: bool) {
    println!(
        "\nusage ingest through the webhook's /usage route, in process (verify, parse, count once, evaluate the budgets touched)"
    );
    println!(
        "| batch | store | records/s | ms per batch | CPU ms per batch (this process; requests built and signed before the clock) | DynamoDB requests per record (writes) |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    let policy = parse_budgets("bench", &budgets_file(1000)).unwrap();
    let sqlite = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    sqlite.put_policy(&policy).await.unwrap();
    let offline = spendguard_aws::sdk::offline_sdk_config();
    let embedded = webhook(dir.path(), &offline, sqlite).await;
    let mut serial = 0;
    for size in BATCHES {
        // warm up, then batches for at least two seconds of the webhook's own time: each
        // request is built and signed (the sender's work) before its clock starts
        embedded.http(usage_request(size, &mut serial)).await;
        let (mut records, mut batches) = (0usize, 0u32);
        let (mut took, mut cpu) = (Duration::ZERO, Duration::ZERO);
        while took < Duration::from_secs(2) {
            let request = usage_request(size, &mut serial);
            let cpu_before = process_cpu_time();
            let started = Instant::now();
            let response = embedded.http(request).await;
            took += started.elapsed();
            cpu += process_cpu_time().saturating_sub(cpu_before);
            assert_eq!(response.status, 200, "{}", response.body);
            records += size;
            batches += 1;
        }
        println!(
            "| {size} | embedded | {:.0} | {:.2} | {:.2} | - |",
            records as f64 / took.as_secs_f64(),
            took.as_secs_f64() * 1000.0 / f64::from(batches),
            cpu.as_secs_f64() * 1000.0 / f64::from(batches),
        );
    }
    if !with_dynamodb {
        println!("| - | dynamodb | skipped: set AWS_ENDPOINT_URL to moto | | | |");
        return;
    }
    let sdk = spendguard_aws::sdk::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("spendguard-ingest-{}", uuid::Uuid::new_v4().simple());
    DynamoStore::create_table(&client, &table).await.unwrap();
    DynamoStore::new(client, &table)
        .put_policy(&policy)
        .await
        .unwrap();
    let counter = RequestCounter::default();
    let store = Arc::new(DynamoStore::new(counted_dynamodb(&sdk, &counter), &table));
    let on_moto = webhook(dir.path(), &sdk, store).await;
    // a warm container, as the embedded rows: the policy read, the ten keys' scopes indexed,
    // and key 0 (every one-record batch's) past all its tiers, each raised once
    for _ in 0..2 {
        let response = on_moto.http(usage_request(10, &mut serial)).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    for size in BATCHES {
        let request = usage_request(size, &mut serial);
        counter.reset();
        let cpu = process_cpu_time();
        let started = Instant::now();
        let response = on_moto.http(request).await;
        let took = started.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu);
        if response.status != 200 {
            // moto copies its tables in every transaction: large batches can time out there
            println!(
                "| {size} | dynamodb (moto) | moto answered {} after {:.0} ms: {} | | | |",
                response.status,
                took.as_secs_f64() * 1000.0,
                response.body
            );
            continue;
        }
        println!(
            "| {size} | dynamodb (moto) | {:.0} | {:.2} | {:.2} | {:.3} ({:.3}) |",
            size as f64 / took.as_secs_f64(),
            took.as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1000.0,
            counter.count() as f64 / size as f64,
            counter.writes() as f64 / size as f64,
        );
    }
}

pub async fn run(args: &[String]) {
    if let Some(i) = args.iter().position(|a| a == "--check") {
        let n = args[i + 1].parse().expect("--check N BACKEND");
        check_once(n, &args[i + 2]).await;
        return;
    }
    let max = args
        .iter()
        .position(|a| a == "--max-budgets")
        .and_then(|i| args.get(i + 1))
        .map_or(10_000, |n| n.parse().expect("--max-budgets N"));
    let with_dynamodb = std::env::var_os("AWS_ENDPOINT_URL").is_some();
    budget_check_table(max, with_dynamodb);
    ingest_table(with_dynamodb).await;
}
