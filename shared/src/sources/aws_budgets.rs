//! AWS Budgets: `DescribeBudgets` once per run; `CalculatedSpend` actual and forecast.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_budgets::Client;
use aws_sdk_budgets::types::{Spend, TimeUnit};
use rust_decimal::Decimal;

use super::{BudgetSpend, SourceError, SpendRequest, SpendSource};
use crate::budget::SourceSpec;
use crate::evaluate::WindowSpend;
use crate::money::{Currency, FxRates, Money, parse_decimal};
use crate::period::WindowKind;

const KIND: &str = "aws_budgets";

pub struct AwsBudgets {
    client: Client,
    account_id: String,
}

impl AwsBudgets {
    pub fn new(client: Client, account_id: impl Into<String>) -> Self {
        AwsBudgets {
            client,
            account_id: account_id.into(),
        }
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
                    Ok(WindowSpend {
                        actual,
                        recent: None,
                        source_forecast: forecast,
                    })
                })();
                spend.insert(window.kind, result);
            }
            out.insert(budget.id.clone(), spend);
        }
        Ok(out)
    }
}
