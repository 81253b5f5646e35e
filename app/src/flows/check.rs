//! The budget check (flow 1): gather spend, evaluate, claim each crossing once, publish the
//! winners' alerts, follow up open alerts, record observations and an audit entry. Run by
//! `flows::tick` (the budget-check function, `spendguard check`) and by the webhook for the
//! budgets a signal touches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::flows::caps::CapReport;
use crate::flows::nightly::MetricsSink;
use crate::flows::rollup::PendingRollUp;
use crate::ports::shutdown::ShutdownTarget;
use spendguard_domain::resources::ResourceKind;
use tracing::{info, warn};

use crate::lease::Claimed;
use crate::ports::bus::AlertBus;
use crate::ports::clock::Clock;
use crate::ports::key_usage::KeyUsageSource;
use crate::ports::sources::{SpendRequest, SpendSource};
use crate::ports::store::{StateStore, StoreError};
use spendguard_domain::alert::{AlertEvent, AlertKind, UNEVALUABLE_TIER};
use spendguard_domain::budget::{Budget, Severity, SourceSpec, Window};
use spendguard_domain::evaluate::WindowSpend;
use spendguard_domain::evaluate::{WindowEvaluation, evaluate_window, percent_of};
use spendguard_domain::forecast::Forecast;
use spendguard_domain::ids::{AlertId, BudgetId};
use spendguard_domain::money::Money;
use spendguard_domain::period::{Period, WindowKind, Zone};
use spendguard_domain::records::{
    AuditEntry, Claim, FollowUp, Lease, Observation, OpenAlert, SourceDay,
};
use spendguard_domain::security::ScanReport;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::spend::{WindowError, source_days};

/// A claim that was never finished (crashed run) blocks others this long.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::minutes(5);
/// Alert claims are kept this long after their period ends.
const CLAIM_RETENTION: Duration = Duration::days(35);

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Evaluate and report, but claim, publish and record nothing.
    pub dry_run: bool,
    /// Only these budgets (all when empty).
    pub only: Vec<String>,
    /// Who asked (`schedule`, `manual`, a user name): kept in the audit log.
    pub actor: String,
    /// A source no budget can be read from here is a note (`spendguard check` reads only the
    /// sources it is given), not a window that cannot be evaluated (a deployment).
    pub skip_unconfigured_sources: bool,
    /// Record the run in the audit log only when it published, failed or found a window it
    /// cannot evaluate: the webhook evaluates on every request it takes.
    pub audit_only_when_acted: bool,
    /// Alerts this process already knows were raised: not asked of the store again (the
    /// webhook's warm container, which evaluates on every request).
    pub known_raised: Option<Arc<KnownRaised>>,
    /// Follow up open alerts (recoveries, escalations) only when this run raised a new alert or
    /// evaluated a window whose spend can fall (hourly, rolling): the webhook after a signal. A
    /// calendar window's spend only grows within its period, so its recoveries (period end, a
    /// raised limit, a removed budget) and escalations are left to the scheduled check, which
    /// follows every open alert up on each run.
    pub follow_ups_only_when_needed: bool,
    /// The pending items this process's ingest just wrote: the evaluation reads their spend
    /// into every counter it feeds, rolled up or not (the webhook after a usage report).
    pub fresh_pending: Vec<String>,
}

/// Alerts known to have been raised, each until its period ends: a finished claim stays
/// finished, so a process that saw one need not read it again.
#[derive(Debug, Default)]
pub struct KnownRaised(std::sync::Mutex<HashMap<String, DateTime<Utc>>>);

impl KnownRaised {
    fn contains(&self, alert_id: &str, now: DateTime<Utc>) -> bool {
        self.0
            .lock()
            .is_ok_and(|known| known.get(alert_id).is_some_and(|until| now < *until))
    }

    fn insert(&self, alert_id: &str, period_end: DateTime<Utc>, now: DateTime<Utc>) {
        if let Ok(mut known) = self.0.lock() {
            known.retain(|_, until| now < *until);
            known.insert(alert_id.to_string(), period_end);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no budget with id `{0}`")]
    UnknownBudget(String),
}

/// What happened to one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertOutcome {
    Published,
    /// Published while the store was unavailable: it may be published again once the store
    /// is back (fan-out delivers it once per channel).
    PublishedUnclaimed,
    AlreadyRaised,
    HeldByOther,
    WouldPublish,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertReport {
    pub alert_id: String,
    pub tier: String,
    pub outcome: AlertOutcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    pub window: WindowKind,
    /// The period's key (`M#2026-11`): stable, for scripts that compare runs.
    pub period: String,
    /// The period as people read it (`Nov 2026`, `16–22 Nov 2026`).
    pub period_label: String,
    /// The period's first instant and the instant it resets, in UTC.
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<Money>,
    pub limit: Money,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub percent: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// A plausible forecast as a percentage of the limit.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub forecast_percent: Option<Decimal>,
    /// Every tier reached, lowest first.
    pub tiers_reached: Vec<String>,
    /// The most severe tier reached, and its severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest_severity: Option<Severity>,
    /// Actions the reached tiers order.
    pub actions: Vec<String>,
    pub alerts: Vec<AlertReport>,
    /// Why this window could not be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why this window was not evaluated, when nothing is wrong (no GCP notification yet, a
    /// source this run was not given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetReport {
    pub budget_id: String,
    pub scope: String,
    pub source: String,
    /// The budget's time zone: its periods start and reset at midnight there.
    pub timezone: Zone,
    pub windows: Vec<WindowReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertCounts {
    pub published: usize,
    /// Recoveries of paging alerts published.
    pub recoveries: usize,
    /// Escalations of unacknowledged paging alerts published.
    pub escalations: usize,
    /// Kill switches moved one step up their restore ramp.
    pub ramps_advanced: usize,
    pub already_raised: usize,
    pub held_by_other: usize,
    pub would_publish: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub dry_run: bool,
    pub budgets: Vec<BudgetReport>,
    pub alerts: AlertCounts,
    /// Sources that failed and alerts that could not be published: the run should be retried.
    pub failures: Vec<String>,
    /// Sources that budgets use but this deployment is not configured to read.
    pub unconfigured: Vec<String>,
    /// Windows that could not be evaluated (`budget window period: why`): each raised a
    /// `budget_unevaluable` alert once per period, and the run fails after evaluating the rest.
    pub unevaluable: Vec<String>,
    /// Key-theft and burst detection over every active key (not run for `only`).
    pub security: ScanReport,
    /// The providers' own limits the budgets keep (`provider_cap`; not run for `only` or a dry
    /// run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provider_caps: Vec<CapReport>,
    /// What ingest left pending that the run rolled up before it evaluated (ADR 031; a
    /// scheduled or manual run on DynamoDB).
    #[serde(skip_serializing_if = "PendingRollUp::is_empty")]
    pub pending: PendingRollUp,
}

/// Whether an evaluation judges the present periods or ended ones a late roll-up completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    Now,
    Late,
}

impl AlertCounts {
    /// Adds another evaluation's counts (a run's evaluation of ended periods).
    pub(crate) fn add(&mut self, other: &AlertCounts) {
        self.published += other.published;
        self.recoveries += other.recoveries;
        self.escalations += other.escalations;
        self.ramps_advanced += other.ramps_advanced;
        self.already_raised += other.already_raised;
        self.held_by_other += other.held_by_other;
        self.would_publish += other.would_publish;
        self.failed += other.failed;
    }
}

impl CheckReport {
    /// Whether the run published anything, or failed, or found a window it cannot evaluate.
    pub fn acted(&self) -> bool {
        let a = &self.alerts;
        a.published + a.recoveries + a.escalations + a.ramps_advanced + a.failed > 0
            || !self.failures.is_empty()
            || !self.unevaluable.is_empty()
    }

    pub fn windows_over_a_tier(&self) -> usize {
        self.budgets
            .iter()
            .flat_map(|b| &b.windows)
            .filter(|w| w.highest_tier.is_some())
            .count()
    }
}

/// Why a window was not evaluated this run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotEvaluated {
    /// Nothing is wrong (no GCP notification yet; a source this run skips).
    Note(String),
    /// The whole source failed: the run fails and is retried; no alert.
    SourceFailed(String),
    /// This window's figures cannot be evaluated: an operator alert, and a failed run.
    Unevaluable(String),
}

impl NotEvaluated {
    fn message(&self) -> &str {
        match self {
            NotEvaluated::Note(m)
            | NotEvaluated::SourceFailed(m)
            | NotEvaluated::Unevaluable(m) => m,
        }
    }
}

impl From<WindowError> for NotEvaluated {
    fn from(e: WindowError) -> Self {
        match e {
            WindowError::Pending(m) => NotEvaluated::Note(m),
            WindowError::Unevaluable(m) => NotEvaluated::Unevaluable(m),
        }
    }
}

/// Spend per window of each budget, as the checker gathered it.
type GatheredSpend = BTreeMap<String, BTreeMap<WindowKind, Result<WindowSpend, NotEvaluated>>>;

/// What an evaluation saw that a finished run records.
pub(crate) struct Observed {
    /// The check's snapshots of provider-sourced windows.
    observations: Vec<Observation>,
    /// What provider and cloud sources reported per day (the nightly summaries' input).
    source_days: Vec<SourceDay>,
}

/// One window of a budget and its evaluation (or why there is none).
type WindowResult<'a> = (&'a Window, Result<WindowEvaluation, NotEvaluated>);

/// What every alert of one run is raised with.
#[derive(Clone, Copy)]
struct Raising<'a> {
    /// The instant evaluated (a late evaluation: the last second of an ended period).
    now: DateTime<Utc>,
    /// When the alerts are raised and claimed: the clock's time, also for a late evaluation,
    /// so that a claim's lease runs from when it was taken (a crashed holder's claim is taken
    /// over by the next run) and an alert says when it was raised.
    raised_at: DateTime<Utc>,
    run_id: &'a str,
    options: &'a CheckOptions,
    runbook_url: Option<&'a str>,
    /// Alerts earlier runs finished (one batched read): only counted.
    raised_before: &'a HashSet<String>,
}

/// Where a run's [`spendguard_domain::pending_usage::age_seconds`] goes: the CloudWatch
/// metric the `<stack>-pending-usage-age` alarm watches, by the function's name.
pub struct PendingAgeMetric {
    pub sink: Arc<dyn MetricsSink>,
    /// The check's function name (`AWS_LAMBDA_FUNCTION_NAME`): the metric's dimension.
    pub function: String,
}

/// The budget check with its dependencies, built once per process.
pub struct Checker {
    pub store: Arc<dyn StateStore>,
    pub bus: Arc<dyn AlertBus>,
    /// One source per kind of `SourceSpec` that this deployment can read.
    pub sources: Vec<Arc<dyn SpendSource>>,
    /// The providers' usage per key, for theft detection (empty: usage reports only).
    pub key_usage: Vec<Arc<dyn KeyUsageSource>>,
    pub clock: Arc<dyn Clock>,
    pub claim_lease: Duration,
    /// The provider limits `provider_cap` windows keep, by kind (OpenAI's, Anthropic's spend
    /// limits; a kind without one: its caps are reported as not kept).
    pub provider_caps: Vec<(ResourceKind, Arc<dyn ShutdownTarget>)>,
    /// Where each run's `PendingUsageAge` goes (the deployed check's; none: not emitted, for
    /// the webhook's checks of some budgets and the CLI's local runs).
    pub pending_age: Option<PendingAgeMetric>,
}

impl Checker {
    /// Evaluates the budgets of `policy` (all, or `options.only`), raises each crossing once
    /// and follows up open alerts; records nothing yet (see [`Checker::record`]). The
    /// scheduled run around it is `flows::tick`.
    pub(crate) async fn evaluate(
        &self,
        policy: &PolicySet,
        options: &CheckOptions,
    ) -> Result<(CheckReport, Observed), CheckError> {
        self.evaluate_at(policy, options, self.clock.now(), Timing::Now)
            .await
    }

    /// [`Checker::evaluate`] as of `now`. [`Timing::Late`]: periods that have ended, whose
    /// spend a late roll-up just completed: their crossings are raised (once, as ever), but
    /// neither their unevaluable windows nor follow-ups, which the evaluation of the present
    /// period of the same run does.
    pub(crate) async fn evaluate_at(
        &self,
        policy: &PolicySet,
        options: &CheckOptions,
        now: DateTime<Utc>,
        timing: Timing,
    ) -> Result<(CheckReport, Observed), CheckError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        // a set: the webhook names every budget a batch touched (up to one per record); ordered,
        // not hashed: each of the policy's budgets is looked up, usually in a set of a few
        let only: BTreeSet<&str> = options.only.iter().map(String::as_str).collect();
        let budgets: Vec<&Budget> = policy
            .budgets
            .iter()
            .filter(|b| only.is_empty() || only.contains(b.id.as_str()))
            .collect();
        if budgets.len() < only.len() {
            let found: HashSet<&str> = budgets.iter().map(|b| b.id.as_str()).collect();
            if let Some(unknown) = options.only.iter().find(|id| !found.contains(id.as_str())) {
                return Err(CheckError::UnknownBudget(unknown.clone()));
            }
        }

        let (spend, mut failures, unconfigured) = self
            .gather(&budgets, now, &policy.settings.rates, options)
            .await;
        let mut unevaluable = Vec::new();
        let source_days: Vec<SourceDay> = budgets
            .iter()
            .filter(|b| b.source != SourceSpec::Usage)
            .flat_map(|b| {
                let answered: Vec<(WindowKind, &WindowSpend)> = spend
                    .get(&b.id)
                    .into_iter()
                    .flatten()
                    .filter_map(|(kind, s)| Some((*kind, s.as_ref().ok()?)))
                    .collect();
                source_days(b, &answered, now)
            })
            .collect();

        let mut counts = AlertCounts::default();
        let mut reports = Vec::new();
        let mut observations = Vec::new();
        // (budget, window) -> (period, tiers reached): what recoveries are judged against
        let mut reached = BTreeMap::new();
        let runbook = policy.settings.runbook_url.as_deref();
        // every window is evaluated first (no I/O), so that the crossings earlier runs already
        // raised are found in one batched read rather than by a claim attempt each
        let evaluated: Vec<(&Budget, Vec<WindowResult>)> = budgets
            .iter()
            .map(|budget| {
                let windows = budget
                    .windows
                    .iter()
                    .map(|window| {
                        let evaluation = spend
                            .get(&budget.id)
                            .and_then(|s| s.get(&window.kind))
                            .cloned()
                            .unwrap_or_else(|| {
                                Err(NotEvaluated::Unevaluable(
                                    "its source answered nothing for this window".into(),
                                ))
                            })
                            .and_then(|s| {
                                evaluate_window(
                                    budget,
                                    window.kind,
                                    &s,
                                    now,
                                    &policy.settings.forecast,
                                )
                                .map_err(|e| NotEvaluated::Unevaluable(e.to_string()))
                            });
                        (window, evaluation)
                    })
                    .collect();
                (*budget, windows)
            })
            .collect();
        let raised_before = if options.dry_run {
            HashSet::new()
        } else {
            self.raised_before(&evaluated, now, &run_id, options).await
        };
        let run = Raising {
            now,
            raised_at: match timing {
                Timing::Now => now,
                Timing::Late => self.clock.now(),
            },
            run_id: &run_id,
            options,
            runbook_url: runbook,
            raised_before: &raised_before,
        };
        for (budget, windows_evaluated) in &evaluated {
            let mut windows = Vec::new();
            for (window, evaluation) in windows_evaluated {
                let report = match evaluation {
                    Ok(e) => {
                        if budget.source != SourceSpec::Usage {
                            observations.push(observation(budget, e, now));
                        }
                        reached.insert(
                            (budget.id.clone(), e.kind),
                            (
                                e.period.key(),
                                e.crossings.iter().map(|c| c.tier.name.clone()).collect(),
                            ),
                        );
                        let crossings = e
                            .crossings
                            .iter()
                            .filter_map(|c| AlertEvent::for_crossing(budget, e, c, now))
                            .collect();
                        let alerts = self
                            .raise(&run, budget, crossings, &mut counts, &mut failures)
                            .await;
                        window_report(budget, now, Ok(e), alerts)
                    }
                    Err(problem) => {
                        let mut events = Vec::new();
                        if let NotEvaluated::Unevaluable(why) = problem
                            && timing == Timing::Now
                        {
                            let period = Period::for_unevaluable(window.kind, budget.zone, now);
                            unevaluable.push(format!(
                                "{} {} {}: {why}",
                                budget.id,
                                window.kind,
                                period.key()
                            ));
                            reached.insert(
                                (budget.id.clone(), window.kind),
                                (period.key(), vec![UNEVALUABLE_TIER.to_string()]),
                            );
                            events.push(AlertEvent::unevaluable(budget, window, &period, why, now));
                        }
                        let alerts = self
                            .raise(&run, budget, events, &mut counts, &mut failures)
                            .await;
                        window_report(
                            budget,
                            now,
                            Err((window.kind, window.limit, problem.clone())),
                            alerts,
                        )
                    }
                };
                windows.push(report);
            }
            reports.push(BudgetReport {
                budget_id: budget.id.clone(),
                scope: budget.scope.to_string(),
                source: budget.source.kind().to_string(),
                timezone: budget.zone,
                windows,
            });
        }

        let raised_new = reports
            .iter()
            .flat_map(|b| &b.windows)
            .flat_map(|w| &w.alerts)
            .any(|a| a.outcome != AlertOutcome::AlreadyRaised);
        let spend_can_fall = budgets
            .iter()
            .any(|b| b.windows.iter().any(|w| w.kind.is_sub_daily()));
        if timing == Timing::Now
            && (raised_new || spend_can_fall || !options.follow_ups_only_when_needed)
        {
            self.follow_ups(
                policy,
                &reached,
                now,
                &run_id,
                options,
                &mut counts,
                &mut failures,
            )
            .await?;
        }
        let report = CheckReport {
            run_id,
            at: now,
            dry_run: options.dry_run,
            budgets: reports,
            alerts: counts,
            failures,
            unconfigured,
            unevaluable,
            security: ScanReport::default(),
            provider_caps: Vec::new(),
            pending: PendingRollUp::default(),
        };
        Ok((
            report,
            Observed {
                observations,
                source_days,
            },
        ))
    }

    /// Records a finished run: what its sources reported and one audit entry.
    pub(crate) async fn record(
        &self,
        report: &CheckReport,
        observed: &Observed,
        options: &CheckOptions,
    ) -> Result<(), CheckError> {
        if !options.dry_run {
            if !observed.observations.is_empty() {
                self.store.put_observations(&observed.observations).await?;
            }
            if !observed.source_days.is_empty() {
                self.store.put_source_days(&observed.source_days).await?;
            }
        }
        if !options.dry_run && (report.acted() || !options.audit_only_when_acted) {
            self.store
                .append_audit(&AuditEntry {
                    id: report.run_id.clone(),
                    at: report.at,
                    actor: options.actor.clone(),
                    action: "budget_check".into(),
                    scope: None,
                    detail: serde_json::json!({
                        "budgets": report.budgets.len(),
                        "windows_over_a_tier": report.windows_over_a_tier(),
                        "alerts": report.alerts,
                        "failures": report.failures,
                        "unconfigured": report.unconfigured,
                        "unevaluable": report.unevaluable,
                        "security_findings": report.security.findings.len(),
                    }),
                })
                .await?;
        }
        info!(
            run_id = %report.run_id,
            budgets = report.budgets.len(),
            published = report.alerts.published,
            failures = report.failures.len(),
            dry_run = report.dry_run,
            "budget check finished"
        );
        Ok(())
    }

    /// Asks each source once for all of its budgets.
    async fn gather(
        &self,
        budgets: &[&Budget],
        now: DateTime<Utc>,
        rates: &spendguard_domain::money::FxRates,
        options: &CheckOptions,
    ) -> (GatheredSpend, Vec<String>, Vec<String>) {
        let mut by_kind: BTreeMap<&'static str, Vec<&Budget>> = BTreeMap::new();
        for b in budgets {
            by_kind.entry(b.source.kind()).or_default().push(b);
        }
        let mut spend = GatheredSpend::new();
        let mut failures = Vec::new();
        let mut unconfigured = Vec::new();
        let every_window = |b: &Budget, problem: NotEvaluated| {
            b.windows
                .iter()
                .map(|w| (w.kind, Err(problem.clone())))
                .collect::<BTreeMap<_, _>>()
        };
        for (kind, group) in by_kind {
            let Some(source) = self.sources.iter().find(|s| s.kind() == kind) else {
                let problem = if options.skip_unconfigured_sources {
                    NotEvaluated::Note(format!("not checked: source `{kind}` is not read here"))
                } else {
                    NotEvaluated::Unevaluable(format!(
                        "source `{kind}` is not configured in this deployment"
                    ))
                };
                for b in &group {
                    spend.insert(b.id.clone(), every_window(b, problem.clone()));
                }
                unconfigured.push(kind.to_string());
                continue;
            };
            let request = SpendRequest {
                budgets: &group,
                now,
                rates,
                fresh_pending: &options.fresh_pending,
            };
            match source.spend(&request).await {
                Ok(map) => spend.extend(map.into_iter().map(|(id, windows)| {
                    let windows = windows
                        .into_iter()
                        .map(|(k, r)| (k, r.map_err(NotEvaluated::from)))
                        .collect();
                    (id, windows)
                })),
                Err(e) => {
                    warn!(source = kind, error = %e, "spend source failed");
                    for b in &group {
                        spend.insert(
                            b.id.clone(),
                            every_window(b, NotEvaluated::SourceFailed(e.to_string())),
                        );
                    }
                    failures.push(e.to_string());
                }
            }
        }
        (spend, failures, unconfigured)
    }

    /// Alert ids of the crossings whose claims earlier runs finished. When the store cannot
    /// say, none: each crossing is then claimed, which decides it as well.
    async fn raised_before(
        &self,
        evaluated: &[(&Budget, Vec<WindowResult<'_>>)],
        now: DateTime<Utc>,
        run_id: &str,
        options: &CheckOptions,
    ) -> HashSet<String> {
        let known = options.known_raised.as_deref();
        let mut raised = HashSet::new();
        let mut claims = Vec::new();
        let mut asked = Vec::new();
        let mut ask = |claim: Claim, event: &AlertEvent| {
            if known.is_some_and(|k| k.contains(&event.alert_id, now)) {
                raised.insert(event.alert_id.clone());
            } else {
                claims.push(claim);
                asked.push((event.alert_id.clone(), event.period_end));
            }
        };
        for (budget, windows) in evaluated {
            for (window, result) in windows {
                if let Err(NotEvaluated::Unevaluable(why)) = result {
                    let period = Period::for_unevaluable(window.kind, budget.zone, now);
                    let event = AlertEvent::unevaluable(budget, window, &period, why, now);
                    ask(self.claim_for(budget, &event, run_id), &event);
                }
            }
            for e in windows.iter().filter_map(|(_, e)| e.as_ref().ok()) {
                for crossing in &e.crossings {
                    let Some(event) = AlertEvent::for_crossing(budget, e, crossing, now) else {
                        continue;
                    };
                    ask(self.claim_for(budget, &event, run_id), &event);
                }
            }
        }
        if claims.is_empty() {
            return raised;
        }
        match self.store.claims_done(&claims).await {
            Ok(done) => {
                for ((id, period_end), done) in asked.into_iter().zip(done) {
                    if done {
                        if let Some(k) = known {
                            k.insert(&id, period_end, now);
                        }
                        raised.insert(id);
                    }
                }
                raised
            }
            Err(e) => {
                warn!(error = %e, "earlier claims unreadable: claiming each crossing");
                raised
            }
        }
    }

    /// The claim that makes `event` (a crossing, or an unevaluable window) happen once.
    fn claim_for(&self, budget: &Budget, event: &AlertEvent, run_id: &str) -> Claim {
        debug_assert_eq!(budget.id, event.budget_id);
        Claim::alert(
            event,
            Lease::new(run_id, self.claim_lease, event.period_end + CLAIM_RETENTION),
        )
    }

    /// Claims and publishes each alert of `budget` (its crossings, or an unevaluable window);
    /// only the claim's winner publishes. Alerts in `raised_before` were published by an
    /// earlier run and are only counted. Paging alerts (critical and above) are then tracked
    /// as open alerts.
    async fn raise(
        &self,
        run: &Raising<'_>,
        budget: &Budget,
        events: Vec<AlertEvent>,
        counts: &mut AlertCounts,
        failures: &mut Vec<String>,
    ) -> Vec<AlertReport> {
        let mut out = Vec::new();
        for event in events {
            out.push(self.raise_one(run, budget, event, counts, failures).await);
        }
        out
    }

    async fn raise_one(
        &self,
        run: &Raising<'_>,
        budget: &Budget,
        mut event: AlertEvent,
        counts: &mut AlertCounts,
        failures: &mut Vec<String>,
    ) -> AlertReport {
        let Raising {
            now,
            raised_at,
            run_id,
            options,
            runbook_url,
            raised_before,
        } = *run;
        event.runbook_url = runbook_url.map(str::to_string);
        event.raised_at = raised_at;
        let outcome = if options.dry_run {
            counts.would_publish += 1;
            AlertOutcome::WouldPublish
        } else if raised_before.contains(&event.alert_id)
            || self.rolling_crossing_raised(&event, now).await
        {
            AlertOutcome::AlreadyRaised
        } else {
            let claim = self.claim_for(budget, &event, run_id);
            let track = event.severity >= Severity::Critical;
            match self.publish_once(&claim, &event, raised_at, track).await {
                Ok(o) => {
                    if o == AlertOutcome::Published {
                        self.remember_rolling_crossing(&event).await;
                    }
                    o
                }
                Err(message) => {
                    warn!(alert_id = %event.alert_id, error = %message, "alert not published");
                    failures.push(format!(
                        "alert {} ({} {}): {message}",
                        event.alert_id, budget.id, event.tier
                    ));
                    AlertOutcome::Failed
                }
            }
        };
        if matches!(
            outcome,
            AlertOutcome::Published | AlertOutcome::AlreadyRaised
        ) && let Some(known) = &options.known_raised
        {
            known.insert(&event.alert_id, event.period_end, raised_at);
        }
        match outcome {
            AlertOutcome::Published => counts.published += 1,
            AlertOutcome::PublishedUnclaimed => {
                counts.published += 1;
                failures.push(format!(
                    "alert {} ({} {}): published without a claim (the store is unavailable); it may be published again",
                    event.alert_id, budget.id, event.tier
                ));
            }
            AlertOutcome::AlreadyRaised => counts.already_raised += 1,
            AlertOutcome::HeldByOther => counts.held_by_other += 1,
            AlertOutcome::Failed => counts.failed += 1,
            AlertOutcome::WouldPublish => {}
        }
        AlertReport {
            alert_id: event.alert_id,
            tier: event.tier,
            outcome,
        }
    }

    /// Whether `event`, a rolling window's crossing, is one that already alerted: a record dated
    /// before the one that crossed moves where the run above the tier began (a different
    /// claim), but a crossing less than a window length after the one that alerted is the same
    /// one (ADR 027). Other windows: false. An unreadable record decides nothing: the claim
    /// still makes the alert once per crossing it names.
    async fn rolling_crossing_raised(&self, event: &AlertEvent, now: DateTime<Utc>) -> bool {
        let WindowKind::Rolling { minutes } = event.window else {
            return false;
        };
        let key = rolling_crossing_key(event);
        let Ok(Some(alerted)) = self.store.get_cached(&key, now).await else {
            return false;
        };
        let Ok(alerted) = DateTime::parse_from_rfc3339(&alerted) else {
            return false;
        };
        event.period_end != alerted
            && event.period_end < alerted + Duration::minutes(minutes.into())
    }

    /// Records the crossing a rolling window's alert was published for, for as long as
    /// [`Self::rolling_crossing_raised`] can need it (the three window lengths evaluated).
    async fn remember_rolling_crossing(&self, event: &AlertEvent) {
        let WindowKind::Rolling { minutes } = event.window else {
            return;
        };
        let expires = event.period_end + Duration::minutes(3 * i64::from(minutes));
        let stamp = event.period_end.to_rfc3339();
        if let Err(e) = self
            .store
            .put_cached(&rolling_crossing_key(event), &stamp, expires)
            .await
        {
            warn!(alert_id = %event.alert_id, error = %e, "rolling crossing not recorded");
        }
    }

    /// Publishes `event` if `claim` is won; `track` records it as an open alert (before the
    /// claim is finished, so a crash in between publishes again rather than forgets it).
    async fn publish_once(
        &self,
        claim: &Claim,
        event: &AlertEvent,
        now: DateTime<Utc>,
        track: bool,
    ) -> Result<AlertOutcome, String> {
        let held = match Claimed::take(self.store.as_ref(), claim.clone(), now).await {
            Ok(Claimed::Won(held)) => held,
            Ok(Claimed::Done) => return Ok(AlertOutcome::AlreadyRaised),
            Ok(Claimed::Busy) => return Ok(AlertOutcome::HeldByOther),
            // fail safe (ADR 013): with the store unavailable a duplicate is better than
            // silence; fan-out's per-channel claims collapse the repeat once the store is back
            Err(e) if e.is_retryable() => {
                warn!(alert_id = %event.alert_id, error = %e, "store unavailable: publishing the alert without a claim");
                self.bus.publish(event).await.map_err(|p| {
                    format!("store unavailable ({e}) and the publish without a claim failed: {p}")
                })?;
                return Ok(AlertOutcome::PublishedUnclaimed);
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Err(e) = self.bus.publish(event).await {
            // give the claim back so the next run (or Lambda's retry) publishes it
            return Err(held.release_after(e.to_string()).await);
        }
        info!(alert_id = %event.alert_id, kind = ?event.kind, budget = %event.budget_id, tier = %event.tier, "alert published");
        if track {
            let open = OpenAlert {
                event: event.clone(),
                acknowledged: None,
                escalation_level: 0,
            };
            // on failure the claim expires with its lease and a later run publishes again
            self.store
                .put_open_alert(&open)
                .await
                .map_err(|e| e.to_string())?;
        }
        held.finish().await.map_err(|e| e.to_string())?;
        Ok(AlertOutcome::Published)
    }

    /// Recoveries and escalations of open alerts: an alert whose period ended, whose tier is
    /// no longer reached, or whose budget or window is gone recovers; an unacknowledged one escalates to
    /// the next level once that level's delay has passed. Each follow-up is published once.
    #[allow(clippy::too_many_arguments)]
    async fn follow_ups(
        &self,
        policy: &PolicySet,
        reached: &BTreeMap<(String, WindowKind), (String, Vec<String>)>,
        now: DateTime<Utc>,
        run_id: &str,
        options: &CheckOptions,
        counts: &mut AlertCounts,
        failures: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let levels = &policy.settings.escalation.levels;
        for open in self.store.open_alerts().await? {
            let e = &open.event;
            if !options.only.is_empty() && !options.only.contains(&e.budget_id) {
                continue;
            }
            let budget = policy.budgets.iter().find(|b| b.id == e.budget_id);
            // a window's own alerts (not a report's or a key's): they end with their window
            let of_window = matches!(e.kind, AlertKind::Budget | AlertKind::Unevaluable);
            let recovered = if budget.is_none() {
                Some("ended: the budget was removed")
            } else if of_window
                && budget.is_some_and(|b| !b.windows.iter().any(|w| w.kind == e.window))
            {
                // a rolling window's crossing never ends by itself: it would stay open and escalate
                Some("ended: the window was removed")
            } else if e.period_over(now) {
                Some("ended with its period")
            } else {
                match reached.get(&(e.budget_id.clone(), e.window)) {
                    Some((period, tiers)) if e.judged_by(period) && !tiers.contains(&e.tier) => {
                        if e.kind == AlertKind::Unevaluable {
                            Some("can be evaluated again")
                        } else if tiers.iter().any(|t| t == UNEVALUABLE_TIER) {
                            // a window that cannot be read says nothing about its tiers
                            None
                        } else {
                            Some("is no longer reached")
                        }
                    }
                    _ => None,
                }
            };
            let retention = e.period_end.max(now) + CLAIM_RETENTION;
            if let Some(reason) = recovered {
                if options.dry_run {
                    counts.would_publish += 1;
                    continue;
                }
                let claim = Claim::follow_up(
                    &BudgetId::new(&e.budget_id),
                    &AlertId::new(&e.alert_id),
                    FollowUp::Recovery,
                    Lease::new(run_id, self.claim_lease, retention),
                );
                match self
                    .publish_once(&claim, &e.recovery(reason, now), now, false)
                    .await
                {
                    Ok(AlertOutcome::Published) => {
                        counts.recoveries += 1;
                        self.store.close_alert(&e.alert_id).await?;
                    }
                    Ok(AlertOutcome::AlreadyRaised) => self.store.close_alert(&e.alert_id).await?,
                    Ok(_) => {}
                    Err(m) => failures.push(format!("recovery of alert {}: {m}", e.alert_id)),
                }
                continue;
            }
            let next = open.escalation_level + 1;
            let Some(level) = levels.get(next as usize - 1) else {
                continue;
            };
            let due = e.raised_at + Duration::minutes(i64::from(level.after_minutes));
            if open.acknowledged.is_some() || now < due {
                continue;
            }
            if options.dry_run {
                counts.would_publish += 1;
                continue;
            }
            let claim = Claim::follow_up(
                &BudgetId::new(&e.budget_id),
                &AlertId::new(&e.alert_id),
                FollowUp::Escalation(next),
                Lease::new(run_id, self.claim_lease, retention),
            );
            match self
                .publish_once(
                    &claim,
                    &e.escalation(next, level.channels.clone(), now),
                    now,
                    false,
                )
                .await
            {
                Ok(AlertOutcome::Published) => {
                    counts.escalations += 1;
                    self.store.set_escalation_level(&e.alert_id, next).await?;
                }
                Ok(AlertOutcome::AlreadyRaised) => {
                    self.store.set_escalation_level(&e.alert_id, next).await?
                }
                Ok(_) => {}
                Err(m) => failures.push(format!("escalation {next} of alert {}: {m}", e.alert_id)),
            }
        }
        Ok(())
    }
}

/// The source name of the check's own snapshots, kept apart from what providers reported
/// (a snapshot never replaces, nor outdates, a provider's observation).
pub const EVALUATION_SOURCE: &str = "evaluation";

/// Where the last alerted crossing of a rolling window's tier is cached.
fn rolling_crossing_key(event: &AlertEvent) -> String {
    format!(
        "rolling-crossing#{}#{}#{}",
        event.budget_id, event.window, event.tier
    )
}

fn observation(budget: &Budget, e: &WindowEvaluation, now: DateTime<Utc>) -> Observation {
    Observation {
        budget_id: budget.id.clone(),
        source: EVALUATION_SOURCE.to_string(),
        window: e.kind,
        period_key: e.period.key(),
        actual: Money::new(e.actual, budget.currency),
        forecast: match e.forecast {
            Forecast::Projected(f) | Forecast::Implausible(f) => {
                Some(Money::new(f, budget.currency))
            }
            Forecast::TooEarly => None,
        },
        observed_at: now,
    }
}

fn window_report(
    budget: &Budget,
    now: DateTime<Utc>,
    evaluation: Result<&WindowEvaluation, (WindowKind, Decimal, NotEvaluated)>,
    alerts: Vec<AlertReport>,
) -> WindowReport {
    let money = |amount: Decimal| Money::new(amount, budget.currency);
    match evaluation {
        Ok(e) => {
            let mut actions: Vec<String> = Vec::new();
            for c in &e.crossings {
                for a in &c.tier.actions {
                    let text = a.to_string();
                    if !actions.contains(&text) {
                        actions.push(text);
                    }
                }
            }
            WindowReport {
                window: e.kind,
                period: e.period.key(),
                period_label: e.period.label(),
                period_start: e.period.start,
                period_end: e.period.end,
                spend: Some(money(e.actual)),
                limit: money(e.limit),
                percent: Some(e.percent),
                forecast_percent: e
                    .forecast
                    .actionable()
                    .and_then(|f| percent_of(f, e.limit).ok()),
                forecast: Some(e.forecast),
                tiers_reached: e.crossings.iter().map(|c| c.tier.name.clone()).collect(),
                highest_tier: e.highest().map(|c| c.tier.name.clone()),
                highest_severity: e.highest().map(|c| c.tier.severity),
                actions,
                alerts,
                error: None,
                note: None,
            }
        }
        Err((kind, limit, problem)) => {
            let period = Period::containing(kind, budget.zone, now);
            WindowReport {
                window: kind,
                period: period.key(),
                period_label: period.label(),
                period_start: period.start,
                period_end: period.end,
                spend: None,
                limit: money(limit),
                percent: None,
                forecast: None,
                forecast_percent: None,
                tiers_reached: Vec::new(),
                highest_tier: None,
                highest_severity: None,
                actions: Vec::new(),
                alerts,
                error: (!matches!(problem, NotEvaluated::Note(_)))
                    .then(|| problem.message().to_string()),
                note: matches!(problem, NotEvaluated::Note(_))
                    .then(|| problem.message().to_string()),
            }
        }
    }
}
