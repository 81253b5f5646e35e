//! Budget signals that arrive on their own, turned into observations of the budgets that use
//! them. Every write here is an idempotent upsert: a replayed or out-of-order signal never
//! replaces a newer one.

use chrono::{DateTime, Utc};

use crate::budget::{Budget, SourceSpec};
use crate::money::Money;
use crate::period::Period;
use crate::records::Observation;
use crate::signals::aws_budgets::{AlertType, BudgetsNotice};
use crate::signals::gcp::BudgetNotification;
use crate::store::{StateStore, StoreResult};

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

/// Keeps `candidate` unless the store already holds a newer observation of the same period.
async fn upsert_newer(store: &dyn StateStore, candidate: Observation) -> StoreResult<bool> {
    let existing = store.observations(&candidate.budget_id).await?;
    let newer_exists = existing.iter().any(|o| {
        o.source == candidate.source
            && o.window == candidate.window
            && o.period_key == candidate.period_key
            && o.observed_at > candidate.observed_at
    });
    if newer_exists {
        return Ok(false);
    }
    store.put_observations(&[candidate]).await?;
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
                forecast: n
                    .forecast_threshold
                    .map(|t| Money::new(t * n.budget, n.currency)),
                observed_at: n.published_at,
            };
            if upsert_newer(store, observation).await? {
                written += 1;
            }
        }
    }
    Ok(written)
}

/// Records an AWS Budgets notice (actual or forecast) for every budget that uses it, keeping
/// the other half of an existing observation of the same period.
pub async fn record_aws(
    store: &dyn StateStore,
    budgets: &[Budget],
    n: &BudgetsNotice,
    now: DateTime<Utc>,
) -> StoreResult<usize> {
    let mut written = 0;
    for budget in budgets_for_aws(budgets, n) {
        let existing = store.observations(&budget.id).await?;
        for window in &budget.windows {
            let period = Period::containing(window.kind, budget.zone, now).key();
            let previous = existing
                .iter()
                .find(|o| o.window == window.kind && o.period_key == period);
            let amount = Money::new(n.amount, n.currency);
            let (actual, forecast) = match n.alert_type {
                AlertType::Actual => (amount, previous.and_then(|p| p.forecast)),
                AlertType::Forecasted => (
                    previous.map_or(Money::zero(n.currency), |p| p.actual),
                    Some(amount),
                ),
            };
            store
                .put_observations(&[Observation {
                    budget_id: budget.id.clone(),
                    source: budget.source.kind().to_string(),
                    window: window.kind,
                    period_key: period,
                    actual,
                    forecast,
                    observed_at: now,
                }])
                .await?;
            written += 1;
        }
    }
    Ok(written)
}
