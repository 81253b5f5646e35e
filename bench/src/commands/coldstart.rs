//! Cold start, first and warm invocations and peak memory of each function's release binary,
//! hosted the way Lambda hosts it (a Runtime API on loopback, a fresh process per cold start,
//! nothing inherited from this environment), and in the same run, through the same server, the
//! Python baseline: `awslambdaric` running bench/python/replay.py, which imports boto3, creates
//! the clients the Rust function creates and makes, for each invocation, the AWS calls the Rust
//! function made for it (recorded by a proxy in front of moto). Prints a table; asserts nothing.
//!
//!     bench/run    (builds the functions, starts moto, runs this with the baseline's Python)
//!
//! Needs `AWS_ENDPOINT_URL` at moto, the functions' release binaries in target/release, and
//! `--python PATH` to a Python with bench/requirements.txt installed.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::SdkConfig;
use chrono::Utc;
use serde_json::{Value, json};
use spendguard_app::flows::ingest::ingest_usage;
use spendguard_app::ports::store::PolicyStore;
use spendguard_bench::recorder::{Recorded, RecordingProxy, boto3_call};
use spendguard_bench::runtime_api::{Hosted, Launch, RuntimeApi};
use spendguard_bench::{all_counters, fixed_now, into_month_of, median, ms};
use spendguard_domain::budgets_file::load_budgets_file;
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::period::YearMonth;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_domain::usage::UsageWire;
use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::aws;
use spendguard_tests::fanout::{FanoutWorld, quick_retries};
use spendguard_tests::keyguard::KeyGuardWorld;

const USAGE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Records per usage batch sent to the webhook.
const BATCH: usize = 20;

/// The functions, and the AWS clients each one creates at start-up (so the baseline does too).
const FUNCTIONS: [(&str, &str); 5] = [
    ("budget-check", "dynamodb,secretsmanager,sns,budgets"),
    ("budget-webhook", "dynamodb,secretsmanager,sns,budgets"),
    ("alert-fanout", "dynamodb,secretsmanager,sesv2"),
    (
        "key-guard",
        "dynamodb,secretsmanager,iam,resourcegroupstaggingapi,lambda,ecs,ec2,sts",
    ),
    ("daily-aggregate", "dynamodb,sns"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join("events").join(path)).expect("an event");
    serde_json::from_str(&text).expect("an event is JSON")
}

/// One function's world for one round: its configuration and the events of the round (the
/// first goes to the cold process). `_keep` holds what must outlive the run (stand-ins).
struct Setup {
    env: Vec<(String, String)>,
    events: Vec<Value>,
    _keep: Box<dyn Any>,
}

/// The account whose AWS Budgets budget `monthly-total` examples/budgets.toml watches.
const ACCOUNT: &str = "123456789012";

/// `monthly-total` in AWS Budgets (moto), as examples/budgets.toml expects it.
async fn aws_budget(sdk: &SdkConfig) {
    use aws_sdk_budgets::types::{Budget, BudgetType, CalculatedSpend, Spend, TimeUnit};
    let spend = |amount: &str| Spend::builder().amount(amount).unit("USD").build().unwrap();
    let created = aws_sdk_budgets::Client::new(sdk)
        .create_budget()
        .account_id(ACCOUNT)
        .budget(
            Budget::builder()
                .budget_name("monthly-total")
                .budget_limit(spend("5000"))
                .time_unit(TimeUnit::Monthly)
                .budget_type(BudgetType::Cost)
                .calculated_spend(
                    CalculatedSpend::builder()
                        .actual_spend(spend("3120.55"))
                        .forecasted_spend(spend("4410.00"))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await;
    if let Err(e) = created {
        // made by an earlier round (budget names are unique per account)
        let e = e.into_service_error();
        assert!(e.is_duplicate_record_exception(), "create budget: {e}");
    }
}

/// The instant the README checks the example usage at, in this month: the functions read the
/// system clock, so the example's usage is moved into this month, where their monthly windows
/// find all of it whatever the date (ADR 032 says what still depends on the day).
fn example_now() -> chrono::DateTime<Utc> {
    into_month_of(fixed_now(), Utc::now())
}

/// A table with the example budgets and their twenty days of usage, and an alerts topic.
async fn budgets_table(sdk: &SdkConfig) -> (String, String) {
    aws_budget(sdk).await;
    let (store, table) = aws::new_store(sdk).await;
    let policy = load_budgets_file(&root().join("examples/budgets.toml")).expect("budgets");
    store.put_policy(&policy).await.expect("put policy");
    let text = std::fs::read_to_string(root().join("examples/usage.jsonl")).expect("usage");
    let records: Vec<_> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let wire: UsageWire = serde_json::from_str(l).expect("a usage line");
            // the example's twenty days end at the instant the README checks them
            let mut record = wire
                .validate(&policy.settings.prices, fixed_now())
                .expect("a valid record");
            record.timestamp = into_month_of(record.timestamp, Utc::now());
            record
        })
        .collect();
    // counted on the embedded store and copied over whole: moto takes seconds for one
    // transaction of this size
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sqlite = SqliteStore::open(&dir.path().join("state.db")).expect("sqlite");
    sqlite.put_policy(&policy).await.expect("put policy");
    ingest_usage(&sqlite, &policy.budgets, &records, None, Utc::now())
        .await
        .expect("ingest");
    let months = records
        .iter()
        .map(|r| YearMonth::of(r.timestamp.date_naive()))
        .collect();
    let zones = PolicySet::counter_zones(&policy.budgets);
    store
        .import_counters(&all_counters(&sqlite, &months, &zones).await)
        .await
        .expect("import counters");
    let topic = aws_sdk_sns::Client::new(sdk)
        .create_topic()
        .name(aws::unique("alerts"))
        .send()
        .await
        .expect("topic")
        .topic_arn
        .expect("topic arn");
    (table, topic)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A signed usage batch as the Function URL delivers it: new record ids each time.
fn usage_event(template: &Value, n: usize) -> Value {
    let now = Utc::now();
    let records: Vec<Value> = (0..BATCH)
        .map(|i| {
            json!({
                "id": format!("bench-{}-{n}-{i}", uuid::Uuid::new_v4().simple()),
                "scope": "openai/prod/key-7f3a",
                "provider": "openai",
                "model": "gpt-4o",
                "tokens_in": 1200, "tokens_out": 350, "requests": 1,
                "cost": {"amount": "0.0065", "currency": "USD"},
                "timestamp": (now - chrono::Duration::seconds(30)).to_rfc3339(),
                "feature": "search",
            })
        })
        .collect();
    let body = json!({ "records": records }).to_string();
    let id = format!("msg_bench_{}", uuid::Uuid::new_v4().simple());
    let signature = WebhookSecret::parse(USAGE_SECRET).expect("secret").sign(
        &id,
        now.timestamp(),
        body.as_bytes(),
    );
    let mut event = template.clone();
    event["headers"]["webhook-id"] = json!(id);
    event["headers"]["webhook-timestamp"] = json!(now.timestamp().to_string());
    event["headers"]["webhook-signature"] = json!(signature);
    event["body"] = json!(body);
    event
}

/// The warning alert as SNS delivers it, with a new alert id each time.
fn alert_event(template: &Value) -> Value {
    let mut event = template.clone();
    let message = &mut event["Records"][0]["Sns"]["Message"];
    let mut alert: Value = serde_json::from_str(message.as_str().expect("a message")).unwrap();
    alert["alert_id"] = json!(uuid::Uuid::new_v4().simple().to_string());
    *message = json!(alert.to_string());
    event
}

async fn world(function: &str, sdk: &SdkConfig, invocations: usize) -> Setup {
    match function {
        "budget-check" | "daily-aggregate" => {
            let (table, topic) = budgets_table(sdk).await;
            let event = if function == "budget-check" {
                fixture("budget-check/scheduled.json")
            } else {
                json!({"date": example_now().date_naive().to_string()})
            };
            Setup {
                env: env(&[
                    ("SPENDGUARD_TABLE", &table),
                    ("SPENDGUARD_ALERTS_TOPIC_ARN", &topic),
                    ("SPENDGUARD_AWS_ACCOUNT_ID", ACCOUNT),
                ]),
                events: vec![event; invocations],
                _keep: Box::new(()),
            }
        }
        "budget-webhook" => {
            let (table, topic) = budgets_table(sdk).await;
            let usage = aws::secret(sdk, "usage", USAGE_SECRET).await;
            let status = aws::secret(sdk, "status", "status-token-bench").await;
            let template = fixture("budget-webhook/usage.json");
            Setup {
                env: env(&[
                    ("SPENDGUARD_TABLE", &table),
                    ("SPENDGUARD_ALERTS_TOPIC_ARN", &topic),
                    ("SPENDGUARD_USAGE_SECRET_ARN", &usage),
                    ("SPENDGUARD_STATUS_TOKEN_ARN", &status),
                    ("SPENDGUARD_AWS_ACCOUNT_ID", ACCOUNT),
                ]),
                events: (0..invocations)
                    .map(|n| usage_event(&template, n))
                    .collect(),
                _keep: Box::new(()),
            }
        }
        "alert-fanout" => {
            let world = FanoutWorld::new(quick_retries(), &[], PolicySet::default()).await;
            let template = fixture("alert-fanout/warning.json");
            Setup {
                env: env(&[("SPENDGUARD_TABLE", &world.table)]),
                events: (0..invocations).map(|_| alert_event(&template)).collect(),
                _keep: Box::new(world),
            }
        }
        "key-guard" => {
            let world = KeyGuardWorld::new(PolicySet::default()).await;
            let mut keys = Vec::new();
            for id in ["key-a", "key-b"] {
                world.anthropic.add(id, true);
                keys.push(KeySpec {
                    id: format!("research-{id}"),
                    provider: ProviderKind::Anthropic,
                    scope: Scope::parse("anthropic/research").unwrap(),
                    secret_arn: None,
                    key_id: Some(id.into()),
                    project_id: None,
                    user: None,
                    rotation: None,
                    allow_delete: false,
                });
            }
            world.register(keys).await;
            let c = &world.config;
            let mut variables = vec![
                ("SPENDGUARD_TABLE", c.table.clone()),
                ("SPENDGUARD_ANTHROPIC_API_URL", c.anthropic_api_url.clone()),
                ("SPENDGUARD_OPENAI_API_URL", c.openai_api_url.clone()),
            ];
            if let Some(arn) = &c.anthropic_admin_key_arn {
                variables.push(("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN", arn.clone()));
            }
            if let Some(arn) = &c.openai_admin_key_arn {
                variables.push(("SPENDGUARD_OPENAI_ADMIN_KEY_ARN", arn.clone()));
            }
            // an operator's emergency stop, then the restore, and again
            let events = (0..invocations)
                .map(|n| {
                    if n % 2 == 0 {
                        json!({"action": "disable", "scope": "anthropic/research", "reason": "benchmark", "actor": "bench"})
                    } else {
                        json!({"action": "restore", "scope": "anthropic/research", "actor": "bench"})
                    }
                })
                .collect();
            Setup {
                env: variables
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                events,
                _keep: Box::new(world),
            }
        }
        other => panic!("no such function: {other}"),
    }
}

/// `calls` with every name of `from`'s configuration (table, topic, secrets) replaced by the
/// same name in `to`.
fn in_twin(calls: &Value, from: &Setup, to: &Setup) -> Value {
    let mut text = calls.to_string();
    for ((name, a), (other, b)) in from.env.iter().zip(&to.env) {
        assert_eq!(name, other, "twins are configured alike");
        if a != b {
            text = text.replace(a.as_str(), b.as_str());
        }
    }
    serde_json::from_str(&text).expect("still JSON")
}

/// What one hosted process did.
struct Run {
    init: Duration,
    init_cpu: Duration,
    invocations: Vec<Duration>,
    /// Per invocation: CPU time the process used for it.
    cpu: Vec<Duration>,
    peak_rss_kib: u64,
    init_calls: Vec<Value>,
    calls: Vec<Vec<Value>>,
    answers: Vec<Value>,
}

/// The environment Lambda gives every function, pointed at the recording proxy.
fn lambda_env(function: &str, aws_endpoint: &str) -> Vec<(String, String)> {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    env(&[
        ("AWS_LAMBDA_FUNCTION_NAME", function),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            &format!("/aws/lambda/{function}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("AWS_REGION", &region),
        ("AWS_DEFAULT_REGION", &region),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", aws_endpoint),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("TZ", ":UTC"),
        ("LANG", "C.UTF-8"),
    ])
}

async fn host(
    launch: &Launch,
    proxy: &RecordingProxy,
    events: &[Value],
    log: &Path,
) -> Result<Run, String> {
    let mut api = RuntimeApi::start().await;
    proxy.take();
    let hosted = Hosted::spawn(launch, &api, log)?;
    let ready = api.wait_next().await?;
    let init = ready - hosted.started;
    let as_calls = |recorded: &[Recorded]| -> Result<Vec<Value>, String> {
        recorded.iter().map(boto3_call).collect()
    };
    let init_calls = as_calls(&proxy.take())?;
    let mut run = Run {
        init,
        init_cpu: hosted.cpu_time(),
        invocations: Vec::new(),
        cpu: Vec::new(),
        peak_rss_kib: 0,
        init_calls,
        calls: Vec::new(),
        answers: Vec::new(),
    };
    for event in events {
        let cpu_before = hosted.cpu_time();
        let (took, answer) = api.invoke(event).await?;
        api.wait_next().await?;
        let recorded = proxy.take();
        run.cpu.push(hosted.cpu_time().saturating_sub(cpu_before));
        run.invocations.push(took);
        run.calls.push(as_calls(&recorded)?);
        run.answers.push(answer);
    }
    run.peak_rss_kib = hosted.peak_rss_kib().unwrap_or(0);
    hosted.stop();
    Ok(run)
}

/// A month of one function: invocations, how many of them start cold, memory as deployed
/// (template.yaml).
struct Workload {
    function: &'static str,
    invocations: f64,
    cold: f64,
    memory_mb: f64,
    what: &'static str,
}

const MONTH: [Workload; 5] = [
    Workload {
        function: "budget-check",
        invocations: 8_640.0,
        cold: 1_440.0,
        memory_mb: 256.0,
        what: "every 5 minutes; cold once in 6",
    },
    Workload {
        function: "budget-webhook",
        invocations: 300_000.0,
        cold: 720.0,
        memory_mb: 256.0,
        what: "10,000 usage batches a day; cold once an hour",
    },
    Workload {
        function: "alert-fanout",
        invocations: 300.0,
        cold: 300.0,
        memory_mb: 256.0,
        what: "10 alerts a day, each cold",
    },
    Workload {
        function: "key-guard",
        invocations: 10.0,
        cold: 10.0,
        memory_mb: 256.0,
        what: "10 emergencies or restores, each cold",
    },
    Workload {
        function: "daily-aggregate",
        invocations: 30.0,
        cold: 30.0,
        memory_mb: 512.0,
        what: "nightly, cold",
    },
];

/// Lambda arm64 prices (us-east-1): per GB-second and per request. Init is billed too.
const GB_SECOND_USD: f64 = 0.000_013_333_4;
const REQUEST_USD: f64 = 0.000_000_2;

/// Latency assumed per AWS call from Lambda in the same region (DynamoDB answers in a few
/// milliseconds, SNS and Secrets Manager in ten or so).
const AWS_CALL_MS: f64 = 8.0;
/// Lambda gives one vCPU at 1,769 MB and a proportional share below.
const ONE_VCPU_MB: f64 = 1769.0;

/// One month of a function, milliseconds per phase: init, first invocation, warm invocation.
struct Phases(f64, f64, f64);

/// Each cold start pays init and the first invocation, every other invocation a warm one;
/// Lambda rounds each up to the millisecond.
fn month_usd(w: &Workload, p: &Phases) -> f64 {
    let billed_ms = w.cold * (p.0.ceil() + p.1.ceil()) + (w.invocations - w.cold) * p.2.ceil();
    billed_ms / 1000.0 * w.memory_mb / 1024.0 * GB_SECOND_USD + w.invocations * REQUEST_USD
}

/// The medians measured here (waiting on moto included).
fn measured(side: &Side) -> Phases {
    let ms = |d: &[Duration]| median(d).as_secs_f64() * 1000.0;
    Phases(ms(&side.init), ms(&side.first), ms(&side.warm))
}

/// On AWS: the process's CPU time stretched by its CPU share at the function's memory, plus
/// the same AWS calls at AWS's latency.
fn on_aws(w: &Workload, side: &Side, f: &Figures) -> Phases {
    let stretch = (ONE_VCPU_MB / w.memory_mb).max(1.0);
    let phase = |cpu: &[Duration], calls: usize| {
        median(cpu).as_secs_f64() * 1000.0 * stretch + calls as f64 * AWS_CALL_MS
    };
    Phases(
        phase(&side.init_cpu, f.calls_init),
        phase(&side.first_cpu, f.calls_first),
        phase(&side.warm_cpu, f.calls_warm),
    )
}

fn print_costs(all: &[Figures]) {
    println!(
        "\nmonthly Lambda cost at arm64 prices (${GB_SECOND_USD}/GB-s, $0.20 per million requests, init billed), both sides at the memory template.yaml gives the function;"
    );
    println!(
        "'here': the medians above, moto's latency included; 'on AWS': each phase's CPU time stretched to the CPU share of that memory (one vCPU at {ONE_VCPU_MB} MB) plus its AWS calls at {AWS_CALL_MS} ms each"
    );
    println!(
        "| function | month | here: Rust | here: Python | on AWS: Rust | on AWS: Python | ratio on AWS |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut totals = [0.0; 4];
    for f in all {
        let Some(w) = MONTH.iter().find(|w| w.function == f.function) else {
            continue;
        };
        let costs = [
            month_usd(w, &measured(&f.rust)),
            month_usd(w, &measured(&f.python)),
            month_usd(w, &on_aws(w, &f.rust, f)),
            month_usd(w, &on_aws(w, &f.python, f)),
        ];
        for (total, cost) in totals.iter_mut().zip(costs) {
            *total += cost;
        }
        println!(
            "| {} | {} | ${:.4} | ${:.4} | ${:.4} | ${:.4} | {:.1}x |",
            f.function,
            w.what,
            costs[0],
            costs[1],
            costs[2],
            costs[3],
            costs[3] / costs[2]
        );
    }
    println!(
        "| all | | ${:.4} | ${:.4} | ${:.4} | ${:.4} | {:.1}x |",
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        totals[3] / totals[2]
    );
}

struct Side {
    init: Vec<Duration>,
    init_cpu: Vec<Duration>,
    first: Vec<Duration>,
    first_cpu: Vec<Duration>,
    warm: Vec<Duration>,
    warm_cpu: Vec<Duration>,
    peak_rss_kib: u64,
}

impl Side {
    fn new() -> Side {
        Side {
            init: Vec::new(),
            init_cpu: Vec::new(),
            first: Vec::new(),
            first_cpu: Vec::new(),
            warm: Vec::new(),
            warm_cpu: Vec::new(),
            peak_rss_kib: 0,
        }
    }

    fn add(&mut self, run: &Run) {
        self.init.push(run.init);
        self.init_cpu.push(run.init_cpu);
        self.first.push(run.invocations[0]);
        self.first_cpu.push(run.cpu[0]);
        self.warm.extend(&run.invocations[1..]);
        self.warm_cpu.extend(&run.cpu[1..]);
        self.peak_rss_kib = self.peak_rss_kib.max(run.peak_rss_kib);
    }
}

struct Figures {
    function: &'static str,
    rust: Side,
    python: Side,
    calls_init: usize,
    calls_first: usize,
    calls_warm: usize,
    refused: u64,
    replayed: u64,
}

fn ratio(python: Duration, rust: Duration) -> String {
    if rust.is_zero() {
        return "-".into();
    }
    format!("{:.1}x", python.as_secs_f64() / rust.as_secs_f64())
}

/// The fastest and the slowest, in ms.
fn spread(values: &[Duration]) -> String {
    let fastest = values.iter().min().copied().unwrap_or_default();
    let slowest = values.iter().max().copied().unwrap_or_default();
    format!("{}–{}", ms(fastest), ms(slowest))
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub async fn run(args: &[String]) {
    // absolute, not resolved: a venv's python finds its packages through its own path
    let python =
        std::path::absolute(flag(args, "--python").expect("--python PATH (bench/run sets it)"))
            .expect("an absolute path");
    // init ratios moved by up to 40 % between runs of 5 cold starts: 15 give a median to trust
    let rounds: usize = flag(args, "--rounds").map_or(15, |n| n.parse().expect("--rounds N"));
    let warm: usize = flag(args, "--warm").map_or(10, |n| n.parse().expect("--warm N"));
    let only = flag(args, "--only");
    let release = root().join("target/release");
    let logs = root().join("target/bench-logs");
    std::fs::create_dir_all(&logs).expect("a log folder");

    let sdk = aws::sdk().await;
    let proxy = RecordingProxy::start(aws::endpoint()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let mut all = Vec::new();
    for (function, clients) in FUNCTIONS {
        if only.as_deref().is_some_and(|o| o != function) {
            continue;
        }
        let binary = release.join(function);
        assert!(
            binary.exists(),
            "{} is missing: cargo build --release -p {function}",
            binary.display()
        );
        let mut figures = Figures {
            function,
            rust: Side::new(),
            python: Side::new(),
            calls_init: 0,
            calls_first: 0,
            calls_warm: 0,
            refused: 0,
            replayed: 0,
        };
        let mut warm_calls = Vec::new();
        for round in 0..rounds {
            // two identical worlds: the Rust function runs in one, the baseline makes the same
            // calls in the other, so that neither finds the other's writes
            let setup = world(function, &sdk, 1 + warm).await;
            let twin = world(function, &sdk, 1 + warm).await;
            let mut base = lambda_env(function, &proxy.url);
            base.extend(setup.env.iter().cloned());
            let rust = Launch {
                program: binary.clone(),
                args: vec![],
                cwd: release.clone(),
                env: base.clone(),
            };
            let log = logs.join(format!("{function}-rust-{round}.log"));
            let rust_run = host(&rust, &proxy, &setup.events, &log)
                .await
                .unwrap_or_else(|e| {
                    panic!("{function} (Rust): {e}; its output: {}", log.display())
                });

            let mut py_env = lambda_env(function, &proxy.url);
            py_env.extend(twin.env.iter().cloned());
            py_env.push(("BENCH_CLIENTS".into(), clients.into()));
            py_env.push((
                "BENCH_INIT_CALLS".into(),
                in_twin(&Value::from(rust_run.init_calls.clone()), &setup, &twin).to_string(),
            ));
            let baseline = Launch {
                program: python.clone(),
                args: vec!["-m".into(), "awslambdaric".into(), "replay.handler".into()],
                cwd: root().join("bench/python"),
                env: py_env,
            };
            let events: Vec<Value> = setup
                .events
                .iter()
                .zip(&rust_run.calls)
                .map(|(event, calls)| {
                    json!({"event": event, "replay": in_twin(&Value::from(calls.clone()), &setup, &twin)})
                })
                .collect();
            let log = logs.join(format!("{function}-python-{round}.log"));
            let python_run = host(&baseline, &proxy, &events, &log)
                .await
                .unwrap_or_else(|e| {
                    panic!("{function} (Python): {e}; its output: {}", log.display())
                });
            for answer in &python_run.answers {
                figures.refused += answer["refused"].as_u64().unwrap_or(0);
                figures.replayed += answer["calls"].as_u64().unwrap_or(0);
            }
            figures.calls_init = rust_run.init_calls.len();
            figures.calls_first = rust_run.calls[0].len();
            warm_calls.extend(rust_run.calls[1..].iter().map(Vec::len));
            figures.rust.add(&rust_run);
            figures.python.add(&python_run);
            // moto copies every table in each transaction: keep it small
            for done in [setup, twin] {
                if let Some((_, table)) = done.env.iter().find(|(k, _)| k == "SPENDGUARD_TABLE") {
                    let _ = dynamodb.delete_table().table_name(table).send().await;
                }
            }
        }
        warm_calls.sort();
        figures.calls_warm = warm_calls.get(warm_calls.len() / 2).copied().unwrap_or(0);
        all.push(figures);
    }
    print_table(&all, rounds, warm);
    print_costs(&all);
}

fn print_table(all: &[Figures], rounds: usize, warm: usize) {
    println!(
        "{rounds} cold starts per function and runtime, {warm} warm invocations after each; medians in ms"
    );
    println!("\nwall clock (waiting on moto included)");
    println!(
        "| function | init Rust | init Python | ratio | first Rust | first Python | ratio | warm Rust | warm Python | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let pair = |rust: &[Duration], python: &[Duration]| {
            let (r, p) = (median(rust), median(python));
            format!("{} | {} | {}", ms(r), ms(p), ratio(p, r))
        };
        println!(
            "| {} | {} | {} | {} |",
            f.function,
            pair(&f.rust.init, &f.python.init),
            pair(&f.rust.first, &f.python.first),
            pair(&f.rust.warm, &f.python.warm),
        );
    }
    println!(
        "\ninit (process start to its first `next`) over the {rounds} cold starts: median, and the spread from the fastest to the slowest"
    );
    println!("| function | init Rust | spread | init Python | spread | ratio of medians |");
    println!("|---|---:|---:|---:|---:|---:|");
    for f in all {
        let (r, p) = (median(&f.rust.init), median(&f.python.init));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            f.function,
            ms(r),
            spread(&f.rust.init),
            ms(p),
            spread(&f.python.init),
            ratio(p, r),
        );
    }
    println!(
        "\nthe process's own CPU time (all its threads), peak memory, and the AWS calls both made"
    );
    println!(
        "| function | init CPU Rust | init CPU Python | first CPU Rust | first CPU Python | warm CPU Rust | warm CPU Python | warm ratio | peak RSS Rust | peak RSS Python | AWS calls init / first / warm |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let (rc, pc) = (median(&f.rust.warm_cpu), median(&f.python.warm_cpu));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} MB | {:.1} MB | {} / {} / {} |",
            f.function,
            ms(median(&f.rust.init_cpu)),
            ms(median(&f.python.init_cpu)),
            ms(median(&f.rust.first_cpu)),
            ms(median(&f.python.first_cpu)),
            ms(rc),
            ms(pc),
            ratio(pc, rc),
            f.rust.peak_rss_kib as f64 / 1024.0,
            f.python.peak_rss_kib as f64 / 1024.0,
            f.calls_init,
            f.calls_first,
            f.calls_warm,
        );
    }
    let (refused, replayed): (u64, u64) = all
        .iter()
        .fold((0, 0), |(a, b), f| (a + f.refused, b + f.replayed));
    println!(
        "the baseline made {replayed} AWS calls in its twin world; {refused} of them were refused by moto as they were for the Rust function (conditional writes that lost, by design)"
    );
}
