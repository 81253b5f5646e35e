//! spendguard's own counters (fed by usage reports): one batched read for all budgets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, NaiveDate};

use spendguard_domain::spend::{BudgetSpend, DailyCosts, MinuteCosts, WindowError};

use crate::ports::sources::{SourceError, SpendRequest, SpendSource};
use crate::ports::store::StateStore;
use spendguard_domain::budget::Budget;
use spendguard_domain::period::{Period, YearMonth};
use spendguard_domain::usage::{CounterKey, HourKey};

pub struct UsageCounters {
    store: Arc<dyn StateStore>,
}

impl UsageCounters {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        UsageCounters { store }
    }
}

/// The month counters a budget needs: every month its periods touch, and yesterday's month.
fn keys_for(budget: &Budget, request: &SpendRequest<'_>) -> BTreeSet<CounterKey> {
    let today = budget.zone.date_of(request.now);
    let mut months = BTreeSet::from([
        YearMonth::of(today),
        YearMonth::of(today - Duration::days(1)),
    ]);
    for w in &budget.windows {
        let p = Period::containing(w.kind, budget.zone, request.now);
        months.insert(YearMonth::of(p.first_day));
    }
    months
        .into_iter()
        .map(|month| CounterKey {
            scope: budget.scope.clone(),
            zone: budget.zone,
            month,
        })
        .collect()
}

#[async_trait]
impl SpendSource for UsageCounters {
    fn kind(&self) -> &'static str {
        "usage"
    }

    async fn spend(
        &self,
        request: &SpendRequest<'_>,
    ) -> Result<BTreeMap<String, BudgetSpend>, SourceError> {
        let wanted: BTreeMap<&str, BTreeSet<CounterKey>> = request
            .budgets
            .iter()
            .map(|b| (b.id.as_str(), keys_for(b, request)))
            .collect();
        let all: BTreeSet<CounterKey> = wanted.values().flatten().cloned().collect();
        let all: Vec<CounterKey> = all.into_iter().collect();
        // hourly and rolling windows: the budget scope's hour counters, by the minute
        let hour_keys: BTreeSet<HourKey> = request
            .budgets
            .iter()
            .flat_map(|b| {
                MinuteCosts::hours_needed(b, request.now)
                    .into_iter()
                    .map(|hour| HourKey::of(b.scope.clone(), hour))
            })
            .collect();
        let hour_keys: Vec<HourKey> = hour_keys.into_iter().collect();
        let (counters, hours) = self
            .store
            .read_fresh(&all, &hour_keys, request.fresh_pending)
            .await
            .map_err(|e| SourceError::Unavailable {
                source_kind: "usage",
                message: e.to_string(),
            })?;
        let mut out = BTreeMap::new();
        for budget in request.budgets {
            let mut days = DailyCosts::default();
            for key in &wanted[budget.id.as_str()] {
                let Some(month) = counters.get(key) else {
                    continue;
                };
                for (day, why) in &month.unreadable {
                    if let Some(date) =
                        NaiveDate::from_ymd_opt(key.month.year, key.month.month, *day)
                    {
                        days.spoil(date, format!("{} {}: {why}", key.scope, key.month));
                    }
                }
                for (day, tally) in &month.days {
                    let Some(date) = NaiveDate::from_ymd_opt(key.month.year, key.month.month, *day)
                    else {
                        continue;
                    };
                    for cost in tally.costs() {
                        days.add(date, cost);
                    }
                }
            }
            let mut spend = days.budget_spend(budget, request.now, request.rates);
            let minutes = MinuteCosts {
                hours: hours
                    .iter()
                    .filter(|(key, _)| key.scope == budget.scope)
                    .map(|(key, counters)| (key.hour, counters.clone()))
                    .collect(),
            };
            for w in budget.windows.iter().filter(|w| w.kind.is_sub_daily()) {
                let window = minutes
                    .window_spend(budget, w.kind, request.now, request.rates)
                    .map_err(WindowError::Unevaluable);
                spend.insert(w.kind, window);
            }
            out.insert(budget.id.clone(), spend);
        }
        Ok(out)
    }
}
