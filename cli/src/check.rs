//! `spendguard check` and `spendguard validate`: the budget check on the embedded store.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use spendguard_app::env::check_api_url;
use spendguard_app::flows::check::{CheckOptions, CheckReport, Checker, DEFAULT_CLAIM_LEASE};
use spendguard_app::flows::ingest::ingest_usage;
use spendguard_app::ports::clock::{Clock, FixedClock, SystemClock};
use spendguard_app::ports::key_usage::KeyUsageSource;
use spendguard_app::ports::secrets::SecretVault;
use spendguard_app::ports::sources::SpendSource;
use spendguard_app::ports::store::StateStore;
use spendguard_app::sources::counters::UsageCounters;
use spendguard_app::sources::gcp::GcpBudgetObservations;
use spendguard_aws::budgets::AwsBudgets;
use spendguard_domain::budget::Severity;
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::usage::admit;
use spendguard_domain::usage::{UsageRecord, UsageWire};
use spendguard_http::client::HttpSettings;
use spendguard_http::sources::anthropic::AnthropicCosts;
use spendguard_http::sources::key_usage::ProviderKeyUsage;
use spendguard_http::sources::openai::OpenAiCosts;
use spendguard_local::file_vault::FileVault;
use spendguard_local::memory_bus::MemoryBus;
use spendguard_local::sqlite::SqliteStore;

use crate::output::{errln, json_document, out, outln};
use crate::{CheckArgs, Failure, table};

pub fn load(path: &Path) -> Result<PolicySet, Failure> {
    crate::budgets::load(path).map(|file| file.policy)
}

/// Reads a JSONL usage file; every bad line is reported (file:line: field: message) and
/// nothing is ingested unless all lines are valid. Timestamps are bounded around `now`, the
/// instant the check evaluates (so a file replayed with `--now` stays valid).
fn read_usage(
    path: &Path,
    policy: &PolicySet,
    now: DateTime<Utc>,
) -> Result<Vec<UsageRecord>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Invalid(format!("{}: cannot read: {e}", path.display())))?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        match serde_json::from_str::<UsageWire>(line) {
            Err(e) => errors.push(format!("{at}: {e}")),
            Ok(wire) => match wire
                .validate(&policy.settings.prices, now)
                .and_then(|r| admit(&r, policy).map(|()| r))
            {
                Ok(r) => records.push(r),
                Err(e) => errors.push(format!("{at}: {e}")),
            },
        }
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(Failure::Invalid(format!(
            "{} invalid usage records (nothing was ingested):\n{}",
            errors.len(),
            errors.join("\n")
        )))
    }
}

/// A provider's API: `variable` when set (a proxy, a local stand-in), else `default`.
fn api_url(variable: &str, default: &str) -> Result<String, Failure> {
    let url = std::env::var(variable)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.into());
    check_api_url(variable, &url).map_err(|e| Failure::Invalid(e.to_string()))?;
    Ok(url)
}

/// What a run reads: budget spend, and the providers' usage per key for theft detection
/// and the two ledgers (with an admin key file).
struct Sources {
    spend: Vec<Arc<dyn SpendSource>>,
    key_usage: Vec<Arc<dyn KeyUsageSource>>,
}

async fn sources(args: &CheckArgs, store: Arc<dyn StateStore>) -> Result<Sources, Failure> {
    let mut spend: Vec<Arc<dyn SpendSource>> = vec![
        Arc::new(UsageCounters::new(store.clone())),
        Arc::new(GcpBudgetObservations::new(store.clone())),
    ];
    let mut key_usage: Vec<Arc<dyn KeyUsageSource>> = Vec::new();
    if let Some(account) = &args.aws_account_id {
        // a missing region or credentials said in one line, as for the operator commands
        let sdk = crate::aws::Access::default().sdk_config().await?;
        spend.push(Arc::new(
            AwsBudgets::new(aws_sdk_budgets::Client::new(&sdk), account).with_notifications(store),
        ));
    }
    let http = spendguard_http::https::client();
    let read = |file: &Path| {
        let file = file.display().to_string();
        async move {
            FileVault
                .read(&file)
                .await
                .map_err(|e| Failure::Invalid(e.to_string()))
        }
    };
    if let Some(file) = &args.openai_admin_key_file {
        let key = read(file).await?;
        let url = api_url("SPENDGUARD_OPENAI_API_URL", "https://api.openai.com")?;
        spend.push(Arc::new(OpenAiCosts::new(
            http.clone(),
            &url,
            key.clone(),
            HttpSettings::default(),
        )));
        key_usage.push(Arc::new(ProviderKeyUsage::new(
            ProviderKind::Openai,
            http.clone(),
            url,
            key,
            HttpSettings::default(),
        )));
    }
    if let Some(file) = &args.anthropic_admin_key_file {
        let key = read(file).await?;
        let url = api_url("SPENDGUARD_ANTHROPIC_API_URL", "https://api.anthropic.com")?;
        spend.push(Arc::new(AnthropicCosts::new(
            http.clone(),
            &url,
            key.clone(),
            HttpSettings::default(),
        )));
        key_usage.push(Arc::new(ProviderKeyUsage::new(
            ProviderKind::Anthropic,
            http,
            url,
            key,
            HttpSettings::default(),
        )));
    }
    Ok(Sources { spend, key_usage })
}

/// Where every budget stands now from what the store holds (usage counters, GCP
/// notifications), as `check` computes it, changing nothing: a dry run that claims, records
/// and raises nothing.
pub async fn standing(store: Arc<dyn StateStore>) -> Result<CheckReport, Failure> {
    let policy = store
        .load_policy()
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    let checker = Checker {
        store: store.clone(),
        bus: Arc::new(MemoryBus::default()),
        sources: vec![
            Arc::new(UsageCounters::new(store.clone())),
            Arc::new(GcpBudgetObservations::new(store)),
        ],
        key_usage: Vec::new(),
        clock: Arc::new(SystemClock),
        claim_lease: DEFAULT_CLAIM_LEASE,
        provider_caps: Vec::new(),
        pending_age: None,
    };
    checker
        .check_only(
            &policy,
            &CheckOptions {
                dry_run: true,
                only: Vec::new(),
                actor: "cli".into(),
                skip_unconfigured_sources: true,
                audit_only_when_acted: true,
                ..CheckOptions::default()
            },
        )
        .await
        .map_err(|e| Failure::Run(e.to_string()))
}

pub async fn run(args: CheckArgs) -> Result<(), Failure> {
    crate::serve::refuse_if_served(&args.store)?;
    let policy = load(&args.budgets)?;
    let clock: Arc<dyn Clock> = match &args.now {
        Some(t) => Arc::new(FixedClock::new(
            DateTime::parse_from_rfc3339(t)
                .map_err(|e| Failure::Invalid(format!("--now `{t}`: not an RFC 3339 time: {e}")))?
                .with_timezone(&Utc),
        )),
        None => Arc::new(SystemClock),
    };
    let records = match &args.usage {
        Some(path) => Some(read_usage(path, &policy, clock.now())?),
        None => None,
    };
    let store = SqliteStore::open(&args.store).map_err(|e| Failure::Run(e.to_string()))?;
    let store: Arc<dyn StateStore> = Arc::new(store);
    store
        .put_policy(&policy)
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    if let (Some(records), Some(path)) = (&records, &args.usage) {
        // markers record when a record was seen: the wall clock, whatever --now says
        let outcome = ingest_usage(store.as_ref(), &policy.budgets, records, None, Utc::now())
            .await
            .map_err(|e| Failure::Run(e.to_string()))?;
        errln!(
            "usage: {} records from {}: {} counted, {} already counted before",
            records.len(),
            path.display(),
            outcome.accepted.len(),
            outcome.duplicates.len()
        );
    }

    let bus = Arc::new(MemoryBus::default());
    let sources = sources(&args, store.clone()).await?;
    let checker = Checker {
        store: store.clone(),
        bus: bus.clone(),
        sources: sources.spend,
        key_usage: sources.key_usage,
        clock,
        claim_lease: DEFAULT_CLAIM_LEASE,
        provider_caps: Vec::new(),
        pending_age: None,
    };
    let report = checker
        .run(&CheckOptions {
            dry_run: args.dry_run,
            only: args.budget_id.iter().cloned().collect(),
            actor: "cli".into(),
            skip_unconfigured_sources: true,
            audit_only_when_acted: false,
            ..CheckOptions::default()
        })
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;

    if args.json {
        let json = json_document(&report);
        outln!("{json}");
    } else {
        out!("{}", table::render(&report, &bus.events(), &args.store));
    }

    if !report.failures.is_empty() {
        return Err(Failure::Run(format!(
            "the check is incomplete: {}",
            report.failures.join("; ")
        )));
    }
    if !report.unevaluable.is_empty() {
        return Err(Failure::Run(format!(
            "{} window(s) cannot be evaluated:\n  {}",
            report.unevaluable.len(),
            report.unevaluable.join("\n  ")
        )));
    }
    if let Some(level) = &args.fail_on {
        let level: Severity = serde_json::from_value(serde_json::Value::String(level.clone()))
            .map_err(|e| Failure::Invalid(e.to_string()))?;
        let reached = report
            .budgets
            .iter()
            .flat_map(|b| b.windows.iter().map(move |w| (b, w)))
            .filter(|(_, w)| w.highest_severity.is_some_and(|s| s >= level))
            .map(|(b, w)| format!("{} {}", b.budget_id, w.window))
            .collect::<Vec<_>>();
        if !reached.is_empty() {
            return Err(Failure::ThresholdReached(format!(
                "--fail-on {level}: reached by {}",
                reached.join(", ")
            )));
        }
    }
    Ok(())
}
