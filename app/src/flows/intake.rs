//! Budget signals that arrive on their own, turned into observations of the budgets that use
//! them. Every write here is an idempotent merge: a replayed, reordered or lower signal never
//! lowers what was observed in its period. Evaluation snapshots are kept apart (`evaluation`).

use chrono::{DateTime, Utc};

use crate::ports::store::{StateStore, StoreResult};
use spendguard_domain::budget::{Budget, SourceSpec};
use spendguard_domain::money::Money;
use spendguard_domain::period::Period;
use spendguard_domain::records::Observation;
use spendguard_domain::signals::aws_budgets::{AlertType, BudgetsNotice};
use spendguard_domain::signals::gcp::BudgetNotification;

/// The budgets a GCP budget notification is about.
pub fn budgets_for_gcp<'a>(budgets: &'a [Budget], n: &BudgetNotification) -> Vec<&'a Budget> {
    budgets
        .iter()
        .filter(|b| matches!(&b.source, SourceSpec::GcpBudget { budget_id } if *budget_id == n.budget_id))
        .collect()
}

/// The budgets an AWS Budgets notice is about.
pub fn budgets_for_aws<'a>(budgets: &'a [Budget], n: &BudgetsNotice) -> Vec<&'a Budget> {
    budgets
        .iter()
        .filter(|b| matches!(&b.source, SourceSpec::AwsBudgets { budget_name } if *budget_name == n.budget_name))
        .collect()
}

/// The observation of the same budget, source, window and period as `candidate`.
fn same_period<'a>(
    existing: &'a [Observation],
    candidate: &Observation,
) -> Option<&'a Observation> {
    existing.iter().find(|o| {
        o.source == candidate.source
            && o.window == candidate.window
            && o.period_key == candidate.period_key
    })
}

/// The larger of two figures of one period (the later one when their currencies differ).
fn larger(kept: Option<Money>, new: Option<Money>) -> Option<Money> {
    match (kept, new) {
        (Some(k), Some(n)) if k.currency == n.currency && k.amount > n.amount => Some(k),
        (k, None) => k,
        (_, n) => n,
    }
}

/// Provider-reported spend is a high-water mark within its period (docs/budgets.md#signals):
/// a redelivered, reordered or lower figure (a credit) never lowers what was observed, so an
/// alert it raised recovers with its period, not mid-period. Returns whether anything changed.
async fn keep_highest(store: &dyn StateStore, candidate: Observation) -> StoreResult<bool> {
    let existing = store.observations(&candidate.budget_id).await?;
    let merged = match same_period(&existing, &candidate) {
        None => candidate,
        Some(kept) => Observation {
            actual: larger(Some(kept.actual), Some(candidate.actual)).unwrap_or(candidate.actual),
            forecast: larger(kept.forecast, candidate.forecast),
            observed_at: kept.observed_at.max(candidate.observed_at),
            ..candidate
        },
    };
    if same_period(&existing, &merged) == Some(&merged) {
        return Ok(false);
    }
    store.put_observations(&[merged]).await?;
    Ok(true)
}

/// Records a GCP notification for every budget that uses it: the cost of the notification's
/// interval, and — when a forecast threshold was crossed — the forecast floor it implies
/// (threshold x budget amount). Returns how many observations were written.
pub async fn record_gcp(
    store: &dyn StateStore,
    budgets: &[Budget],
    n: &BudgetNotification,
) -> StoreResult<usize> {
    let mut written = 0;
    for budget in budgets_for_gcp(budgets, n) {
        for window in &budget.windows {
            let period = Period::containing(window.kind, budget.zone, n.cost_interval_start);
            let observation = Observation {
                budget_id: budget.id.clone(),
                source: budget.source.kind().to_string(),
                window: window.kind,
                period_key: period.key(),
                actual: Money::new(n.cost, n.currency),
                // both factors are bounded at parsing; checked all the same
                forecast: n
                    .forecast_threshold
                    .and_then(|t| t.checked_mul(n.budget))
                    .map(|f| Money::new(f, n.currency)),
                observed_at: n.published_at,
            };
            if keep_highest(store, observation).await? {
                written += 1;
            }
        }
    }
    Ok(written)
}

/// Records an AWS Budgets notice (actual or forecast) for every budget that uses it: the
/// notified figure is an observation of its own (evaluated beside DescribeBudgets, the larger
/// wins), and the other half of an existing observation of the same period is kept.
pub async fn record_aws(
    store: &dyn StateStore,
    budgets: &[Budget],
    n: &BudgetsNotice,
    now: DateTime<Utc>,
) -> StoreResult<usize> {
    let mut written = 0;
    for budget in budgets_for_aws(budgets, n) {
        for window in &budget.windows {
            let amount = Money::new(n.amount, n.currency);
            let (actual, forecast) = match n.alert_type {
                AlertType::Actual => (amount, None),
                AlertType::Forecasted => (Money::zero(n.currency), Some(amount)),
            };
            let observation = Observation {
                budget_id: budget.id.clone(),
                source: budget.source.kind().to_string(),
                window: window.kind,
                period_key: Period::containing(window.kind, budget.zone, now).key(),
                actual,
                forecast,
                observed_at: now,
            };
            if keep_highest(store, observation).await? {
                written += 1;
            }
        }
    }
    Ok(written)
}
