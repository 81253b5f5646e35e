//! The pre-flight check (`POST /authorize`): how long one decision takes in process on the
//! embedded store, and how many DynamoDB requests (and sequential round trips) one costs,
//! counted by a recording proxy in front of moto. Figures only (ADR 028 reads them).
//!
//!     cargo run --release -p spendguard-bench -- authorize [--calls 2000]
//!
//! Each call is what the webhook does after verifying the signature: the policy read, the
//! windows' spend and outstanding holds read in parallel, the conditional write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use spendguard_app::flows::authorize::authorize;
use spendguard_app::ports::store::StateStore;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_bench::recorder::RecordingProxy;
use spendguard_bench::{median, ms};
use spendguard_domain::authorize::{AuthorizeRequest, Decision};
use spendguard_domain::budget::{Basis, Budget, Severity, SourceSpec, Threshold, Tier, Window};
use spendguard_domain::money::{Currency, Money};
use spendguard_domain::period::{WindowKind, Zone};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_local::sqlite::SqliteStore;

const TTL: Duration = Duration::minutes(15);

/// Two budgets cover the agents' scope: a daily and a monthly window, and a team's monthly.
fn policy(daily_limit: i64) -> PolicySet {
    let budget = |id: &str, scope: &str, windows: Vec<(WindowKind, i64)>| Budget {
        id: id.into(),
        description: None,
        scope: Scope::parse(scope).unwrap(),
        currency: Currency::USD,
        zone: Zone::UTC,
        windows: windows
            .into_iter()
            .map(|(kind, limit)| Window {
                kind,
                limit: Decimal::from(limit),
                tiers: vec![Tier {
                    name: "warning".into(),
                    threshold: Threshold::Percent(Decimal::from(80)),
                    basis: Basis::Actual,
                    severity: Severity::Warning,
                    actions: vec![],
                }],
                provider_cap: false,
            })
            .collect(),
        source: SourceSpec::Usage,
        routing: BTreeMap::new(),
    };
    PolicySet {
        budgets: vec![
            budget(
                "agents",
                "agents",
                vec![
                    (WindowKind::Daily, daily_limit),
                    (WindowKind::Monthly, daily_limit * 30),
                ],
            ),
            budget(
                "team",
                "agents/team-1",
                vec![(WindowKind::Monthly, 1_000_000)],
            ),
        ],
        ..PolicySet::default()
    }
}

fn request(id: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        request_id: id.into(),
        scope: Scope::parse("agents/team-1/loop-1").unwrap(),
        estimate: Money::new(Decimal::new(1, 2), Currency::USD),
    }
}

/// One decision as the webhook makes it (policy read included), and how long it took.
async fn decide(store: &Arc<dyn StateStore>, id: &str) -> (Decision, StdDuration) {
    let started = Instant::now();
    let policy = store.load_policy().await.expect("policy");
    let reserved = authorize(store, &policy, &request(id), None, TTL, Utc::now())
        .await
        .expect("a decision");
    (reserved.verdict.decision, started.elapsed())
}

/// `calls` decisions one after another: the median and the 99th percentile of each decision.
async fn latencies(store: &Arc<dyn StateStore>, prefix: &str, calls: usize) -> (Decision, String) {
    let mut times = Vec::with_capacity(calls);
    let mut last = Decision::Allow;
    for i in 0..calls {
        let (decision, took) = decide(store, &format!("{prefix}-{i}")).await;
        times.push(took);
        last = decision;
    }
    times.sort();
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    (
        last,
        format!("p50 {:>6} ms  p99 {:>6} ms", ms(median(&times)), ms(p99)),
    )
}

pub async fn run(args: &[String]) {
    let calls: usize = args
        .iter()
        .position(|a| a == "--calls")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--calls takes a number"))
        .unwrap_or(2000);
    println!(
        "one /authorize decision: 3 windows of 2 budgets cover the scope; {calls} calls in a row"
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn StateStore> =
        Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    // room for every call: each allowed one adds a hold the next ones are decided beside
    sqlite.put_policy(&policy(1_000_000)).await.unwrap();
    let (decision, allowed) = latencies(&sqlite, "allow", calls).await;
    assert_eq!(
        decision,
        Decision::Allow,
        "the room was sized for every call"
    );
    println!("embedded   allow ({calls} holds outstanding at the end)  {allowed}");
    // no room: every call is a denial (recorded, holding nothing)
    sqlite.put_policy(&policy(0)).await.unwrap();
    let (_, denied) = latencies(&sqlite, "deny", calls).await;
    println!("embedded   deny                                  {denied}");

    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        println!("dynamodb   skipped: set AWS_ENDPOINT_URL to moto (tests/moto/server.py) or AWS");
        return;
    }
    let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let proxy = RecordingProxy::start(upstream).await;
    // SAFETY of the figures: only this process's SDK goes through the proxy
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&proxy.url)
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("spendguard-bench-{}", uuid::Uuid::new_v4());
    DynamoStore::create_table(&client, &table).await.unwrap();
    let dynamo: Arc<dyn StateStore> = Arc::new(DynamoStore::new(client, table));
    for (label, limit) in [("allow", 1_000_000), ("deny", 0)] {
        dynamo.put_policy(&policy(limit)).await.unwrap();
        proxy.take();
        let rounds = 20;
        let mut times = Vec::new();
        for i in 0..rounds {
            times.push(decide(&dynamo, &format!("{label}-{i}")).await.1);
        }
        let mut operations: BTreeMap<String, usize> = BTreeMap::new();
        let recorded = proxy.take();
        for call in &recorded {
            let operation = call
                .target
                .as_deref()
                .and_then(|t| t.rsplit('.').next())
                .unwrap_or("?")
                .to_string();
            *operations.entry(operation).or_default() += 1;
        }
        let per_call = operations
            .iter()
            .map(|(op, n)| format!("{op} {}", *n as f64 / rounds as f64))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "dynamodb   {label:<5} {:.1} requests per call ({per_call}); through moto p50 {} ms",
            recorded.len() as f64 / rounds as f64,
            ms(median(&times))
        );
    }
}
