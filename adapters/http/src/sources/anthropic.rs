//! Anthropic cost report (`GET /v1/organizations/cost_report`): amounts are decimal strings
//! **in cents**; daily buckets, paginated; one walk of the pages per run, grouped by workspace.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;

use crate::client::HttpSettings;
use crate::client::get_text;
use spendguard_app::ports::sources::{SourceError, SpendRequest, SpendSource};
use spendguard_domain::budget::SourceSpec;
use spendguard_domain::money::{Currency, Money, parse_decimal};
use spendguard_domain::secret::Secret;
use spendguard_domain::spend::{BudgetSpend, DailyCosts, earliest_day_needed};

const KIND: &str = "anthropic";
const API_VERSION: &str = "2023-06-01";
/// Most daily buckets Anthropic returns per page.
const PAGE_LIMIT: &str = "31";
const MAX_PAGES: usize = 50;

pub struct AnthropicCosts {
    http: reqwest::Client,
    base_url: String,
    admin_key: Secret,
    settings: HttpSettings,
}

impl AnthropicCosts {
    /// `base_url` is `https://api.anthropic.com` in production (configurable for tests).
    pub fn new(
        http: reqwest::Client,
        base_url: impl Into<String>,
        admin_key: Secret,
        settings: HttpSettings,
    ) -> Self {
        AnthropicCosts {
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            admin_key,
            settings,
        }
    }
}

#[derive(Deserialize)]
struct Report {
    data: Vec<Bucket>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Bucket {
    starting_at: String,
    #[serde(default)]
    results: Vec<CostItem>,
}

#[derive(Deserialize)]
struct CostItem {
    /// Lowest currency units (cents), as a decimal string: "123.45" USD is $1.23.
    amount: String,
    #[serde(default = "usd")]
    currency: String,
    #[serde(default)]
    workspace_id: Option<String>,
}

fn usd() -> String {
    "USD".into()
}

fn bad(message: String) -> SourceError {
    SourceError::BadResponse {
        source_kind: KIND,
        message,
    }
}

/// Parses one page into `by_workspace` (key `None` is the organisation total).
fn read_page(
    body: &str,
    by_workspace: &mut BTreeMap<Option<String>, DailyCosts>,
) -> Result<Option<String>, SourceError> {
    let report: Report =
        serde_json::from_str(body).map_err(|e| bad(format!("cost report: {e}")))?;
    for bucket in report.data {
        let day = DateTime::parse_from_rfc3339(&bucket.starting_at)
            .map_err(|e| bad(format!("starting_at `{}`: {e}", bucket.starting_at)))?
            .with_timezone(&Utc)
            .date_naive();
        for item in bucket.results {
            let cents = parse_decimal(&item.amount)
                .map_err(|_| bad(format!("amount `{}` is not a decimal", item.amount)))?;
            let currency = Currency::parse(&item.currency).map_err(|e| bad(e.to_string()))?;
            let money = Money::from_cents(cents, currency);
            by_workspace.entry(None).or_default().add(day, money);
            if let Some(ws) = item.workspace_id {
                by_workspace.entry(Some(ws)).or_default().add(day, money);
            }
        }
    }
    Ok(if report.has_more {
        report.next_page
    } else {
        None
    })
}

#[async_trait]
impl SpendSource for AnthropicCosts {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn spend(
        &self,
        request: &SpendRequest<'_>,
    ) -> Result<BTreeMap<String, BudgetSpend>, SourceError> {
        let from = earliest_day_needed(request.budgets, request.now);
        let start = from
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let end = (request.now.date_naive() + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let url = format!("{}/v1/organizations/cost_report", self.base_url);
        let mut by_workspace: BTreeMap<Option<String>, DailyCosts> = BTreeMap::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let body = get_text(KIND, &self.settings, || {
                let mut query = vec![
                    ("starting_at", start.as_str()),
                    ("ending_at", end.as_str()),
                    ("bucket_width", "1d"),
                    ("group_by[]", "workspace_id"),
                    ("limit", PAGE_LIMIT),
                ];
                if let Some(p) = &page {
                    query.push(("page", p.as_str()));
                }
                self.http
                    .get(&url)
                    .header("x-api-key", self.admin_key.expose())
                    .header("anthropic-version", API_VERSION)
                    .query(&query)
            })
            .await?;
            page = read_page(&body, &mut by_workspace)?;
            if page.is_none() {
                break;
            }
        }
        if page.is_some() {
            return Err(bad(format!("more than {MAX_PAGES} pages of costs")));
        }
        let empty = DailyCosts::default();
        let mut out = BTreeMap::new();
        for budget in request.budgets {
            let SourceSpec::Anthropic { workspace_id } = &budget.source else {
                continue;
            };
            let days = by_workspace.get(workspace_id).unwrap_or(&empty);
            out.insert(
                budget.id.clone(),
                days.budget_spend(budget, request.now, request.rates),
            );
        }
        Ok(out)
    }
}
