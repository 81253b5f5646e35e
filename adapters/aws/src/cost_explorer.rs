//! AWS Cost Explorer (opt-in): every request costs $0.01, so one query per run at most, and
//! its answer is cached in the store for hours.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_costexplorer::Client;
use aws_sdk_costexplorer::types::{
    DateInterval, Granularity, GroupDefinition, GroupDefinitionType, MetricValue,
};
use chrono::{Duration, NaiveDate};

use spendguard_domain::spend::{BudgetSpend, DailyCosts, earliest_day_needed};

use spendguard_app::ports::sources::{SourceError, SpendRequest, SpendSource};
use spendguard_app::ports::store::StateStore;
use spendguard_domain::budget::SourceSpec;
use spendguard_domain::money::{Currency, Money, parse_decimal};

const KIND: &str = "cost_explorer";
const METRIC: &str = "UnblendedCost";
/// The group key of the account-wide total.
const TOTAL: &str = "";

pub struct CostExplorer {
    client: Client,
    store: Arc<dyn StateStore>,
    cache_for: Duration,
}

impl CostExplorer {
    pub fn new(client: Client, store: Arc<dyn StateStore>, cache_for: Duration) -> Self {
        CostExplorer {
            client,
            store,
            cache_for,
        }
    }

    fn bad(message: String) -> SourceError {
        SourceError::BadResponse {
            source_kind: KIND,
            message,
        }
    }

    fn add(
        costs: &mut BTreeMap<String, DailyCosts>,
        group: &str,
        day: NaiveDate,
        metrics: Option<&std::collections::HashMap<String, MetricValue>>,
    ) -> Result<(), SourceError> {
        let Some(value) = metrics.and_then(|m| m.get(METRIC)) else {
            return Ok(());
        };
        let amount = value.amount().unwrap_or("0");
        let amount = parse_decimal(amount)
            .map_err(|_| Self::bad(format!("amount `{amount}` is not a decimal")))?;
        let currency =
            Currency::parse(value.unit().unwrap_or("USD")).map_err(|e| Self::bad(e.to_string()))?;
        costs
            .entry(group.to_string())
            .or_default()
            .add(day, Money::new(amount, currency));
        if group != TOTAL {
            costs
                .entry(TOTAL.to_string())
                .or_default()
                .add(day, Money::new(amount, currency));
        }
        Ok(())
    }

    /// Daily costs by service (and the total) from `from` to `to` (exclusive).
    async fn fetch(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<BTreeMap<String, DailyCosts>, SourceError> {
        let mut costs: BTreeMap<String, DailyCosts> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let period = DateInterval::builder()
                .start(from.to_string())
                .end(to.to_string())
                .build()
                .map_err(|e| Self::bad(e.to_string()))?;
            let group = GroupDefinition::builder()
                .r#type(GroupDefinitionType::Dimension)
                .key("SERVICE")
                .build();
            let out = self
                .client
                .get_cost_and_usage()
                .time_period(period)
                .granularity(Granularity::Daily)
                .metrics(METRIC)
                .group_by(group)
                .set_next_page_token(token.take())
                .send()
                .await
                .map_err(|e| SourceError::Unavailable {
                    source_kind: KIND,
                    message: aws_sdk_costexplorer::error::DisplayErrorContext(&e).to_string(),
                })?;
            for result in out.results_by_time() {
                let start = result.time_period().map(|p| p.start()).unwrap_or_default();
                let day: NaiveDate = start
                    .parse()
                    .map_err(|_| Self::bad(format!("period start `{start}` is not a date")))?;
                for group in result.groups() {
                    let service = group
                        .keys()
                        .first()
                        .map(String::as_str)
                        .unwrap_or("unknown");
                    Self::add(&mut costs, service, day, group.metrics())?;
                }
                if result.groups().is_empty() {
                    Self::add(&mut costs, TOTAL, day, result.total())?;
                }
            }
            match out.next_page_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(costs),
            }
        }
    }
}

#[async_trait]
impl SpendSource for CostExplorer {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn spend(
        &self,
        request: &SpendRequest<'_>,
    ) -> Result<BTreeMap<String, BudgetSpend>, SourceError> {
        let from = earliest_day_needed(request.budgets, request.now);
        let to = request.now.date_naive() + Duration::days(1);
        let cache_key = format!("{KIND}:{from}:{to}");
        let unavailable = |e: spendguard_app::ports::store::StoreError| SourceError::Unavailable {
            source_kind: KIND,
            message: e.to_string(),
        };
        let cached = self
            .store
            .get_cached(&cache_key, request.now)
            .await
            .map_err(unavailable)?;
        let costs: BTreeMap<String, DailyCosts> = match cached
            .and_then(|c| serde_json::from_str(&c).ok())
        {
            Some(costs) => costs,
            None => {
                let costs = self.fetch(from, to).await?;
                let json = serde_json::to_string(&costs).map_err(|e| Self::bad(e.to_string()))?;
                self.store
                    .put_cached(&cache_key, &json, request.now + self.cache_for)
                    .await
                    .map_err(unavailable)?;
                costs
            }
        };
        let empty = DailyCosts::default();
        let mut out = BTreeMap::new();
        for budget in request.budgets {
            let SourceSpec::CostExplorer { service } = &budget.source else {
                continue;
            };
            let days = costs
                .get(service.as_deref().unwrap_or(TOTAL))
                .unwrap_or(&empty);
            out.insert(
                budget.id.clone(),
                days.budget_spend(budget, request.now, request.rates),
            );
        }
        Ok(out)
    }
}
