//! AWS Budgets: `DescribeBudgets` once per run; `CalculatedSpend` actual and forecast.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_budgets::Client;
use aws_sdk_budgets::types::{Spend, TimeUnit};
use rust_decimal::Decimal;

use spendguard_domain::spend::{BudgetSpend, WindowError};

use spendguard_app::ports::sources::{SourceError, SpendRequest, SpendSource};
use spendguard_app::ports::store::StateStore;
use spendguard_domain::budget::SourceSpec;
use spendguard_domain::evaluate::WindowSpend;
use spendguard_domain::money::{Currency, FxRates, Money, parse_decimal};
use spendguard_domain::period::{Period, WindowKind};
use spendguard_domain::records::Observation;

const KIND: &str = "aws_budgets";

pub struct AwsBudgets {
    client: Client,
    account_id: String,
    /// Where budget-webhook records AWS Budgets notifications: a notified figure counts as
    /// an observation of its own (DescribeBudgets lags behind the notification).
    notifications: Option<Arc<dyn StateStore>>,
}

impl AwsBudgets {
    pub fn new(client: Client, account_id: impl Into<String>) -> Self {
        AwsBudgets {
            client,
            account_id: account_id.into(),
            notifications: None,
        }
    }

    /// Also reads the notifications recorded in `store`; the larger figure of each period wins.
    pub fn with_notifications(mut self, store: Arc<dyn StateStore>) -> Self {
        self.notifications = Some(store);
        self
    }

    /// The notified actual and forecast of `budget`'s `kind` window in the current period.
    async fn notified(
        &self,
        budget: &spendguard_domain::budget::Budget,
        kind: WindowKind,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Observation>, SourceError> {
        let Some(store) = &self.notifications else {
            return Ok(None);
        };
        let period = Period::containing(kind, budget.zone, now).key();
        let observations =
            store
                .observations(&budget.id)
                .await
                .map_err(|e| SourceError::Unavailable {
                    source_kind: KIND,
                    message: e.to_string(),
                })?;
        Ok(observations
            .into_iter()
            .find(|o| o.source == KIND && o.window == kind && o.period_key == period))
    }
}

fn money(spend: &Spend, what: &str) -> Result<Money, String> {
    let amount = parse_decimal(spend.amount())
        .map_err(|_| format!("{what} amount `{}` is not a decimal", spend.amount()))?;
    let currency = Currency::parse(spend.unit()).map_err(|e| format!("{what}: {e}"))?;
    Ok(Money::new(amount, currency))
}

fn converted(m: Money, to: Currency, rates: &FxRates) -> Result<Decimal, String> {
    rates
        .convert(m, to)
        .map(|m| m.amount)
        .map_err(|e| e.to_string())
}

#[async_trait]
impl SpendSource for AwsBudgets {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn spend(
        &self,
        request: &SpendRequest<'_>,
    ) -> Result<BTreeMap<String, BudgetSpend>, SourceError> {
        let mut by_name: HashMap<String, aws_sdk_budgets::types::Budget> = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_budgets()
                .account_id(&self.account_id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| SourceError::Unavailable {
                    source_kind: KIND,
                    message: aws_sdk_budgets::error::DisplayErrorContext(&e).to_string(),
                })?;
            for b in out.budgets() {
                by_name.insert(b.budget_name().to_string(), b.clone());
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        let mut out = BTreeMap::new();
        for budget in request.budgets {
            let SourceSpec::AwsBudgets { budget_name } = &budget.source else {
                continue;
            };
            let mut spend = BudgetSpend::new();
            for window in &budget.windows {
                let notified = self.notified(budget, window.kind, request.now).await?;
                let result = (|| {
                    let aws = by_name.get(budget_name).ok_or_else(|| {
                        format!(
                            "AWS budget `{budget_name}` not found in account {}",
                            self.account_id
                        )
                    })?;
                    let kind = match aws.time_unit() {
                        TimeUnit::Daily => WindowKind::Daily,
                        TimeUnit::Monthly => WindowKind::Monthly,
                        other => {
                            return Err(format!(
                                "AWS budget `{budget_name}` is {}: spendguard windows are daily, weekly or monthly",
                                other.as_str()
                            ));
                        }
                    };
                    if kind != window.kind {
                        return Err(format!(
                            "AWS budget `{budget_name}` is {kind}, but this window is {}",
                            window.kind
                        ));
                    }
                    let calculated = aws.calculated_spend().ok_or_else(|| {
                        format!("AWS budget `{budget_name}` has no CalculatedSpend yet")
                    })?;
                    let actual = calculated
                        .actual_spend()
                        .map(|s| money(s, "ActualSpend"))
                        .transpose()?
                        .map(|m| converted(m, budget.currency, request.rates))
                        .transpose()?
                        .unwrap_or_default();
                    let forecast = calculated
                        .forecasted_spend()
                        .map(|s| money(s, "ForecastedSpend"))
                        .transpose()?
                        .map(|m| converted(m, budget.currency, request.rates))
                        .transpose()?;
                    // a notification may already know more than DescribeBudgets
                    let (actual, forecast) = match &notified {
                        Some(o) => {
                            let notified_actual =
                                converted(o.actual, budget.currency, request.rates)?;
                            let notified_forecast = o
                                .forecast
                                .map(|f| converted(f, budget.currency, request.rates))
                                .transpose()?;
                            (actual.max(notified_actual), forecast.max(notified_forecast))
                        }
                        None => (actual, forecast),
                    };
                    Ok(WindowSpend {
                        actual,
                        source_forecast: forecast,
                        ..WindowSpend::actual(actual)
                    })
                })();
                spend.insert(window.kind, result.map_err(WindowError::Unevaluable));
            }
            out.insert(budget.id.clone(), spend);
        }
        Ok(out)
    }
}
