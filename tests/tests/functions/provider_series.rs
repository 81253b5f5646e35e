//! Provider-sourced budgets in the nightly run, on both store backends: budget-check records
//! what the sources reported (OpenAI's costs per day from the admin API stand-in; a GCP
//! budget's running total), and daily-aggregate turns it into day series labelled by source,
//! beside the app-reported usage series of the same scope and never added to it.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::Value;
use spendguard_app::flows::check::{CheckOptions, Checker, DEFAULT_CLAIM_LEASE};
use spendguard_app::flows::ingest::ingest_usage;
use spendguard_app::flows::nightly::{Days, MemoryMetrics, Nightly};
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::sources::SpendSource;
use spendguard_app::sources::counters::UsageCounters;
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::budget::{Budget, SourceSpec};
use spendguard_domain::period::WindowKind;
use spendguard_domain::scope::Scope;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::PolicySet;
use spendguard_http::client::HttpSettings;
use spendguard_http::sources::openai::OpenAiCosts;
use spendguard_local::memory_bus::MemoryBus;
use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::admin_apis::{OPENAI_ADMIN_KEY, ProviderState, openai_standin};
use spendguard_tests::aws;
use spendguard_tests::conformance::{Store, budget, record};
use spendguard_tests::standin::StandIn;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct World {
    store: Store,
    openai: Arc<ProviderState>,
    standin: StandIn,
    bus: Arc<MemoryBus>,
}

impl World {
    async fn new(store: Store, budgets: Vec<Budget>) -> World {
        store
            .put_policy(&PolicySet {
                budgets,
                ..PolicySet::default()
            })
            .await
            .unwrap();
        let openai = Arc::new(ProviderState::default());
        let standin = openai_standin(openai.clone()).await;
        World {
            store,
            openai,
            standin,
            bus: Arc::new(MemoryBus::default()),
        }
    }

    /// What OpenAI reports for `day`, in dollars.
    fn openai_spent(&self, day: &str, dollars: Decimal) {
        self.openai
            .openai_costs
            .lock()
            .unwrap()
            .insert(d(day), dollars);
    }

    /// One scheduled budget check at `now`, reading OpenAI's costs and the usage counters.
    async fn check(&self, now: &str) {
        let checker = Checker {
            store: self.store.clone(),
            bus: self.bus.clone(),
            sources: vec![
                Arc::new(OpenAiCosts::new(
                    reqwest::Client::new(),
                    &self.standin.url,
                    Secret::new(OPENAI_ADMIN_KEY),
                    HttpSettings::default(),
                )) as Arc<dyn SpendSource>,
                Arc::new(UsageCounters::new(self.store.clone())),
            ],
            key_usage: Vec::new(),
            clock: Arc::new(FixedClock::new(at(now))),
            claim_lease: DEFAULT_CLAIM_LEASE,
            provider_caps: Vec::new(),
        };
        let policy = self.store.load_policy().await.unwrap();
        let report = checker
            .check_only(&policy, &CheckOptions::default())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
    }

    async fn nightly(&self, now: &str, days: Days) {
        Nightly {
            store: self.store.clone(),
            bus: self.bus.clone(),
            clock: Arc::new(FixedClock::new(at(now))),
            metrics: Arc::new(MemoryMetrics::default()),
        }
        .run(days)
        .await
        .unwrap();
    }

    /// The day's summaries of `scope` as stored, by the source they are labelled with.
    async fn series(&self, scope: &str, day: &str) -> Vec<(String, Decimal)> {
        let mut out: Vec<(String, Decimal)> = self
            .store
            .summaries(&Scope::parse(scope).unwrap(), d(day), d(day))
            .await
            .unwrap()
            .iter()
            .map(|s| (source_of(s), cost(s)))
            .collect();
        out.sort();
        out
    }
}

/// The label a summary carries (`usage` when it carries none).
fn source_of(s: &DailySummary) -> String {
    let doc = serde_json::to_value(s).unwrap();
    doc.get("source")
        .and_then(Value::as_str)
        .unwrap_or("usage")
        .to_string()
}

fn cost(s: &DailySummary) -> Decimal {
    s.day
        .get("cost.USD")
        .map(|v| v.parse().unwrap())
        .unwrap_or_default()
}

fn openai_org(id: &str, scope: &str) -> Budget {
    let mut b = budget(id, scope, WindowKind::Monthly, 1000);
    b.source = SourceSpec::Openai { project_id: None };
    b
}

/// An OpenAI-sourced budget's spend was absent from the nightly summaries: only scopes with
/// usage counters were summarised. Now the day OpenAI reported is a summary labelled
/// `openai`, beside the scope's app-reported usage (not added to it).
pub async fn an_openai_sourced_budgets_day_is_summarised_beside_the_usage(store: Store) {
    let w = World::new(
        store,
        vec![
            openai_org("openai-costs", "openai"),
            budget("openai-usage", "openai", WindowKind::Monthly, 1000),
        ],
    )
    .await;
    w.openai_spent("2026-11-19", dec!(7));
    w.openai_spent("2026-11-20", dec!(12.5));
    let budgets = w.store.load_policy().await.unwrap().budgets;
    ingest_usage(
        w.store.as_ref(),
        &budgets,
        &[record("u1", "openai/app", 300, at("2026-11-20T10:00:00Z"))],
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    w.check("2026-11-20T23:00:00Z").await;
    w.nightly("2026-11-21T00:30:00Z", Days::Yesterday).await;
    assert_eq!(
        w.series("openai", "2026-11-20").await,
        [
            ("openai".to_string(), dec!(12.5)),
            ("usage".to_string(), dec!(3)),
        ],
        "two labelled series, the provider's and the app-reported"
    );
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

both_stores!(an_openai_sourced_budgets_day_is_summarised_beside_the_usage);
