//! OpenAI organization costs (`GET /v1/organization/costs`): amounts in dollars, daily buckets,
//! paginated; one walk of the pages per run, grouped by project.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::HttpSettings;
use crate::client::get_text;
use spendguard_app::ports::sources::{SourceError, SpendRequest, SpendSource};
use spendguard_domain::budget::SourceSpec;
use spendguard_domain::money::{Currency, Money};
use spendguard_domain::secret::Secret;
use spendguard_domain::spend::{BudgetSpend, DailyCosts, earliest_day_needed};
use spendguard_domain::usage::json_decimal;

const KIND: &str = "openai";
/// Most buckets OpenAI returns per page.
const PAGE_LIMIT: &str = "180";
/// Most pages walked in one run (a guard against a cursor that never ends).
const MAX_PAGES: usize = 50;

pub struct OpenAiCosts {
    http: reqwest::Client,
    base_url: String,
    admin_key: Secret,
    settings: HttpSettings,
}

impl OpenAiCosts {
    /// `base_url` is `https://api.openai.com` in production (configurable for tests).
    pub fn new(
        http: reqwest::Client,
        base_url: impl Into<String>,
        admin_key: Secret,
        settings: HttpSettings,
    ) -> Self {
        OpenAiCosts {
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            admin_key,
            settings,
        }
    }
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Bucket>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Bucket {
    start_time: i64,
    #[serde(default)]
    results: Vec<CostResult>,
}

#[derive(Deserialize)]
struct CostResult {
    amount: Option<Amount>,
    #[serde(default)]
    project_id: Option<String>,
}

#[derive(Deserialize)]
struct Amount {
    value: Box<RawValue>,
    currency: String,
}

fn bad(message: String) -> SourceError {
    SourceError::BadResponse {
        source_kind: KIND,
        message,
    }
}

/// Parses one page into `by_project` (key `None` is the organisation total).
fn read_page(
    body: &str,
    by_project: &mut BTreeMap<Option<String>, DailyCosts>,
) -> Result<Option<String>, SourceError> {
    let page: Page = serde_json::from_str(body).map_err(|e| bad(format!("costs page: {e}")))?;
    for bucket in page.data {
        let day = DateTime::<Utc>::from_timestamp(bucket.start_time, 0)
            .ok_or_else(|| {
                bad(format!(
                    "bucket start_time {} is out of range",
                    bucket.start_time
                ))
            })?
            .date_naive();
        for result in bucket.results {
            let Some(amount) = result.amount else {
                continue;
            };
            let value = json_decimal(&amount.value).map_err(bad)?;
            let currency = Currency::parse(&amount.currency).map_err(|e| bad(e.to_string()))?;
            let money = Money::new(value, currency);
            by_project.entry(None).or_default().add(day, money);
            if let Some(project) = result.project_id {
                by_project.entry(Some(project)).or_default().add(day, money);
            }
        }
    }
    Ok(if page.has_more { page.next_page } else { None })
}

#[async_trait]
impl SpendSource for OpenAiCosts {
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
            .timestamp()
            .to_string();
        let end = (request.now.date_naive() + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp()
            .to_string();
        let url = format!("{}/v1/organization/costs", self.base_url);
        let mut by_project: BTreeMap<Option<String>, DailyCosts> = BTreeMap::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let body = get_text(KIND, &self.settings, || {
                let mut query = vec![
                    ("start_time", start.as_str()),
                    ("end_time", end.as_str()),
                    ("bucket_width", "1d"),
                    ("group_by", "project_id"),
                    ("limit", PAGE_LIMIT),
                ];
                if let Some(p) = &page {
                    query.push(("page", p.as_str()));
                }
                self.http
                    .get(&url)
                    .bearer_auth(self.admin_key.expose())
                    .query(&query)
            })
            .await?;
            page = read_page(&body, &mut by_project)?;
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
            let SourceSpec::Openai { project_id } = &budget.source else {
                continue;
            };
            let days = by_project.get(project_id).unwrap_or(&empty);
            out.insert(
                budget.id.clone(),
                days.budget_spend(budget, request.now, request.rates),
            );
        }
        Ok(out)
    }
}
