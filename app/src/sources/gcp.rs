//! GCP billing budgets: Google pushes notifications to budget-webhook, which stores them as
//! observations; this source reads the latest one for the current period.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use spendguard_domain::spend::{BudgetSpend, WindowError};

use crate::ports::sources::{SourceError, SpendRequest, SpendSource};
use crate::ports::store::StateStore;
use spendguard_domain::budget::SourceSpec;
use spendguard_domain::evaluate::WindowSpend;
use spendguard_domain::period::Period;

const KIND: &str = "gcp_budget";

pub struct GcpBudgetObservations {
    store: Arc<dyn StateStore>,
}

impl GcpBudgetObservations {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        GcpBudgetObservations { store }
    }
}

#[async_trait]
impl SpendSource for GcpBudgetObservations {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn spend(
        &self,
        request: &SpendRequest<'_>,
    ) -> Result<BTreeMap<String, BudgetSpend>, SourceError> {
        let mut out = BTreeMap::new();
        for budget in request.budgets {
            let SourceSpec::GcpBudget { budget_id } = &budget.source else {
                continue;
            };
            let observations = self.store.observations(&budget.id).await.map_err(|e| {
                SourceError::Unavailable {
                    source_kind: KIND,
                    message: e.to_string(),
                }
            })?;
            let mut spend = BudgetSpend::new();
            for window in &budget.windows {
                let current = Period::containing(window.kind, budget.zone, request.now);
                let period = current.key();
                let latest = observations
                    .iter()
                    .filter(|o| {
                        o.source == KIND && o.window == window.kind && o.period_key == period
                    })
                    .max_by_key(|o| o.observed_at);
                let result = match latest {
                    None => Err(WindowError::Pending(format!(
                        "no notification from GCP budget `{budget_id}` for {} yet",
                        current.label()
                    ))),
                    Some(o) => (|| {
                        let actual = request
                            .rates
                            .convert(o.actual, budget.currency)
                            .map_err(|e| e.to_string())?
                            .amount;
                        let forecast = o
                            .forecast
                            .map(|f| request.rates.convert(f, budget.currency).map(|m| m.amount))
                            .transpose()
                            .map_err(|e| e.to_string())?;
                        Ok(WindowSpend {
                            actual,
                            source_forecast: forecast,
                            ..WindowSpend::actual(actual)
                        })
                    })()
                    .map_err(WindowError::Unevaluable),
                };
                spend.insert(window.kind, result);
            }
            out.insert(budget.id.clone(), spend);
        }
        Ok(out)
    }
}
