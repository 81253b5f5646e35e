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
use spendguard_app::flows::nightly::{Days, MemoryMetrics, Nightly};
use spendguard_app::ports::clock::FixedClock;
use spendguard_app::ports::sources::SpendSource;
use spendguard_app::sources::counters::UsageCounters;
use spendguard_app::sources::gcp::GcpBudgetObservations;
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::alert::{AlertDetails, AlertKind};
use spendguard_domain::budget::{Budget, SourceSpec};
use spendguard_domain::money::{Currency, Money};
use spendguard_domain::period::WindowKind;
use spendguard_domain::records::Observation;
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
use spendguard_tests::hotitem::ingest_usage;
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

    /// One scheduled budget check at `now`, reading OpenAI's costs, the usage counters and the
    /// GCP notifications stored.
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
                Arc::new(GcpBudgetObservations::new(self.store.clone())),
            ],
            key_usage: Vec::new(),
            clock: Arc::new(FixedClock::new(at(now))),
            claim_lease: DEFAULT_CLAIM_LEASE,
            provider_caps: Vec::new(),
            pending_age: None,
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
    // OpenAI's bucket of the 20th grows after the night (late data): the next morning's check
    // records it on the 20th, and a re-run of the night replaces that day, never adds to it
    w.openai_spent("2026-11-20", dec!(14));
    w.check("2026-11-21T06:00:00Z").await;
    w.nightly("2026-11-21T07:00:00Z", Days::Date(d("2026-11-20")))
        .await;
    assert_eq!(
        w.series("openai", "2026-11-20").await,
        [
            ("openai".to_string(), dec!(14)),
            ("usage".to_string(), dec!(3)),
        ]
    );
}

/// A GCP budget's running total (what its last notification said) is differenced into days:
/// the first total of the month lands on the day it was seen, each later day gets what the
/// total grew by; the day's last check wins. A re-run of the night rewrites the same rows and
/// publishes nothing twice.
pub async fn a_running_total_becomes_days_and_a_rerun_changes_nothing(store: Store) {
    let mut gcp = budget("gcp-data", "gcp/data", WindowKind::Monthly, 1000);
    gcp.source = SourceSpec::GcpBudget {
        budget_id: "g1".into(),
    };
    let w = World::new(store, vec![gcp]).await;
    // Google's notifications, as the webhook stores them, then the checks that read them
    for (cost, checked_at) in [
        (dec!(40), "2026-11-19T23:00:00Z"),
        (dec!(55), "2026-11-20T12:00:00Z"),
        (dec!(70), "2026-11-20T23:00:00Z"),
    ] {
        w.store
            .put_observations(&[Observation {
                budget_id: "gcp-data".into(),
                source: "gcp_budget".into(),
                window: WindowKind::Monthly,
                period_key: "M#2026-11".into(),
                actual: Money::new(cost, Currency::USD),
                forecast: None,
                observed_at: at(checked_at) - chrono::Duration::minutes(10),
            }])
            .await
            .unwrap();
        w.check(checked_at).await;
    }
    w.nightly("2026-11-20T00:30:00Z", Days::Yesterday).await;
    w.nightly("2026-11-21T00:30:00Z", Days::Yesterday).await;
    assert_eq!(
        w.series("gcp/data", "2026-11-19").await,
        [("gcp_budget".to_string(), dec!(40))]
    );
    assert_eq!(
        w.series("gcp/data", "2026-11-20").await,
        [("gcp_budget".to_string(), dec!(30))],
        "70 seen at the end of the 20th, 40 at the end of the 19th"
    );
    let twentieth = || async {
        w.store
            .summaries(
                &Scope::parse("gcp/data").unwrap(),
                d("2026-11-20"),
                d("2026-11-20"),
            )
            .await
            .unwrap()
    };
    let rows = twentieth().await;
    assert_eq!(rows[0].month_to_date[&Currency::USD], "70");
    let published = w.bus.events().len();
    w.nightly("2026-11-21T03:00:00Z", Days::Date(d("2026-11-20")))
        .await;
    assert_eq!(twentieth().await, rows, "the same rows");
    assert_eq!(w.bus.events().len(), published, "nothing published twice");
}

/// A spike in what OpenAI reports is an anomaly of the `openai` series, named so in the
/// alert; the scope's quiet usage series raises nothing.
pub async fn a_spike_in_a_providers_days_is_an_anomaly_naming_the_source(store: Store) {
    let w = World::new(
        store,
        vec![
            openai_org("openai-costs", "openai"),
            budget("openai-usage", "openai", WindowKind::Monthly, 1000),
        ],
    )
    .await;
    let spike = d("2026-11-20");
    let first = spike - chrono::Duration::days(27);
    let budgets = w.store.load_policy().await.unwrap().budgets;
    let usage: Vec<_> = first
        .iter_days()
        .take_while(|day| *day <= spike)
        .map(|day| {
            record(
                &format!("u-{day}"),
                "openai/app",
                300,
                day.and_hms_opt(12, 0, 0).unwrap().and_utc(),
            )
        })
        .collect();
    ingest_usage(w.store.as_ref(), &budgets, &usage, None, Utc::now())
        .await
        .unwrap();
    for day in first.iter_days().take_while(|day| *day <= spike) {
        let dollars = if day == spike { dec!(100) } else { dec!(5) };
        w.openai_spent(&day.to_string(), dollars);
        w.check(&format!("{day}T23:00:00Z")).await;
    }
    w.nightly("2026-11-21T00:30:00Z", Days::Yesterday).await;
    let anomalies: Vec<_> = w
        .bus
        .events()
        .into_iter()
        .filter(|e| e.kind == AlertKind::Anomaly)
        .collect();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let alert = &anomalies[0];
    assert_eq!(alert.scope.as_str(), "openai");
    assert!(
        alert
            .summary
            .starts_with("ANOMALY: openai (openai) on 2026-11-20"),
        "{}",
        alert.summary
    );
    match &alert.details {
        AlertDetails::Anomaly { source, spikes, .. } => {
            assert_eq!(source.as_deref(), Some("openai"));
            assert_eq!(spikes[0].metric, "cost");
            assert_eq!(spikes[0].value, dec!(100));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.series("openai", "2026-11-20").await,
        [
            ("openai".to_string(), dec!(100)),
            ("usage".to_string(), dec!(3)),
        ]
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

both_stores!(
    an_openai_sourced_budgets_day_is_summarised_beside_the_usage,
    a_running_total_becomes_days_and_a_rerun_changes_nothing,
    a_spike_in_a_providers_days_is_an_anomaly_naming_the_source,
);
