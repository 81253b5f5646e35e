//! The providers' own usage per key, hour, kind and model: OpenAI's organisation usage of
//! every kind that groups by `api_key_id`, Anthropic's messages usage report.

use crate::client::HttpSettings;
use crate::client::get_text;
use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use spendguard_app::ports::key_usage::{HourlyUsage, KeyUsageSource};
use spendguard_app::ports::sources::SourceError;
use spendguard_domain::key_hours::{BATCH_KIND, KeyHours, ProviderUsage};
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::ledger::DayLedger;
use spendguard_domain::money::{Currency, Money};
use spendguard_domain::secret::Secret;
use spendguard_domain::usage::json_decimal;

const ANTHROPIC_API_VERSION: &str = "2023-06-01";
/// Four weeks of hours is four pages; more than this is a provider bug, not a report.
const MAX_PAGES: usize = 20;
/// Most hourly buckets either provider returns per page.
const HOURS_PER_PAGE: &str = "168";
/// OpenAI's usage endpoints that group by `api_key_id` (`/v1/organization/usage/{kind}`).
/// Vector stores and code interpreter sessions group by project only: not per key.
pub const OPENAI_KEY_USAGE_KINDS: [&str; 6] = [
    "completions",
    "embeddings",
    "moderations",
    "images",
    "audio_speeches",
    "audio_transcriptions",
];
/// OpenAI's usage kinds counted in tokens: what the price book prices.
const OPENAI_TOKEN_KINDS: [&str; 3] = ["completions", "embeddings", "moderations"];
/// Anthropic's usage report per key: messages (the only kind it reports per key).
const ANTHROPIC_KEY_USAGE_KINDS: [&str; 1] = ["messages"];
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
    /// OpenAI: unix seconds.
    #[serde(default)]
    start_time: Option<i64>,
    /// Anthropic: RFC 3339.
    #[serde(default)]
    starting_at: Option<String>,
    #[serde(default)]
    results: Vec<Value>,
}

fn count(v: &Value) -> Decimal {
    match v {
        Value::Number(n) => n.as_u64().map(Decimal::from).unwrap_or_default(),
        // Anthropic's `cache_creation` is an object of token counts
        Value::Object(fields) => fields
            .values()
            .map(count)
            .fold(Decimal::ZERO, Decimal::saturating_add),
        _ => Decimal::ZERO,
    }
}

/// OpenAI completions made through the Batch API (results grouped by `batch`).
fn is_batch(result: &Value) -> bool {
    result.get("batch").and_then(Value::as_bool) == Some(true)
}

/// One result's figures, whichever kind it is: each kind has its own units.
fn usage_of(result: &Value) -> ProviderUsage {
    let field = |name: &str| result.get(name).map(count).unwrap_or_default();
    // OpenAI's `input_tokens` includes the cached ones; Anthropic counts them apart, and its
    // cache writes are input too
    let cached = field("input_cached_tokens").saturating_add(field("cache_read_input_tokens"));
    let input = (field("input_tokens") - field("input_cached_tokens"))
        .max(Decimal::ZERO)
        .saturating_add(field("uncached_input_tokens"))
        .saturating_add(field("cache_creation"));
    ProviderUsage {
        requests: field("num_model_requests"),
        input_tokens: input,
        cached_tokens: cached,
        output_tokens: field("output_tokens"),
        audio_tokens: field("input_audio_tokens").saturating_add(field("output_audio_tokens")),
        images: field("images"),
        characters: field("characters"),
        seconds: field("seconds"),
    }
}

/// Reads one page of `usage_kind` into `out`; returns the next page's cursor.
fn read_page(
    source_kind: &'static str,
    usage_kind: &str,
    body: &str,
    out: &mut KeyHours,
) -> Result<Option<String>, SourceError> {
    let bad = |message: String| SourceError::BadResponse {
        source_kind,
        message,
    };
    let page: Page =
        serde_json::from_str(body).map_err(|e| bad(format!("{usage_kind} usage: {e}")))?;
    for bucket in page.data {
        let hour = match (bucket.start_time, &bucket.starting_at) {
            (Some(unix), _) => DateTime::from_timestamp(unix, 0)
                .ok_or_else(|| bad(format!("start_time {unix} is out of range")))?,
            (None, Some(text)) => DateTime::parse_from_rfc3339(text)
                .map_err(|e| bad(format!("starting_at `{text}`: {e}")))?
                .with_timezone(&Utc),
            (None, None) => return Err(bad("a bucket without its start".into())),
        };
        for result in bucket.results {
            // usage not made with an API key (the console, a workbench) has no key id
            let Some(key_id) = result.get("api_key_id").and_then(Value::as_str) else {
                continue;
            };
            let model = result.get("model").and_then(Value::as_str).unwrap_or("");
            let usage_kind = if is_batch(&result) {
                BATCH_KIND
            } else {
                usage_kind
            };
            out.entry((key_id.to_string(), hour)).or_default().add(
                usage_kind,
                model,
                &usage_of(&result),
            );
        }
    }
    Ok(if page.has_more { page.next_page } else { None })
}

/// One day's page of OpenAI usage grouped by project and model, or of its costs grouped by
/// project and line item (`gpt-4o-2024-08-06, input`: the model is before the comma), into
/// `ledger`; returns the next page's cursor.
fn read_day_page(
    source_kind: &'static str,
    body: &str,
    ledger: &mut DayLedger,
) -> Result<Option<String>, SourceError> {
    let bad = |message: String| SourceError::BadResponse {
        source_kind,
        message,
    };
    let page: Page = serde_json::from_str(body).map_err(|e| bad(format!("day ledger: {e}")))?;
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    for result in page.data.iter().flat_map(|b| &b.results) {
        let project = text(result, "project_id").unwrap_or_default();
        if let Some(amount) = result.get("amount") {
            let (Some(value), Some(currency), Some(item)) = (
                amount.get("value"),
                amount.get("currency").and_then(Value::as_str),
                text(result, "line_item"),
            ) else {
                continue;
            };
            let raw = serde_json::value::to_raw_value(value).map_err(|e| bad(e.to_string()))?;
            let value = json_decimal(&raw).map_err(bad)?;
            let currency = Currency::parse(currency).map_err(|e| bad(e.to_string()))?;
            let model = item
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let charged = ledger
                .charged
                .entry((project, model))
                .or_insert(Money::zero(currency));
            if charged.currency != currency {
                return Err(bad(format!(
                    "line item `{item}` charged in {currency} and {}",
                    charged.currency
                )));
            }
            charged.amount = charged.amount.saturating_add(value);
        } else if is_batch(result) {
            // charged at the Batch API's discount, which the price book does not hold
            continue;
        } else if let Some(model) = text(result, "model") {
            ledger
                .usage
                .entry((project, model))
                .or_default()
                .add(&usage_of(result));
        }
    }
    Ok(if page.has_more { page.next_page } else { None })
}

/// OpenAI or Anthropic usage per key, through the organisation's admin key.
pub struct ProviderKeyUsage {
    provider: ProviderKind,
    http: reqwest::Client,
    base_url: String,
    admin_key: Secret,
    settings: HttpSettings,
}

impl ProviderKeyUsage {
    /// `provider` is `Openai` or `Anthropic`; `base_url` is the provider's API (configurable
    /// for tests).
    pub fn new(
        provider: ProviderKind,
        http: reqwest::Client,
        base_url: impl Into<String>,
        admin_key: Secret,
        settings: HttpSettings,
    ) -> Self {
        ProviderKeyUsage {
            provider,
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            admin_key,
            settings,
        }
    }

    fn request(
        &self,
        kind: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        key_ids: &[String],
        page: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut query: Vec<(&str, String)> = vec![
            ("bucket_width", "1h".into()),
            ("limit", HOURS_PER_PAGE.into()),
        ];
        let request = if self.provider == ProviderKind::Openai {
            query.push(("start_time", from.timestamp().to_string()));
            query.push(("end_time", to.timestamp().to_string()));
            query.push(("group_by", "api_key_id".into()));
            query.push(("group_by", "model".into()));
            if kind == "completions" {
                query.push(("group_by", "batch".into()));
            }
            query.extend(key_ids.iter().map(|k| ("api_key_ids", k.clone())));
            self.http
                .get(format!("{}/v1/organization/usage/{kind}", self.base_url))
                .bearer_auth(self.admin_key.expose())
        } else {
            let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
            query.push(("starting_at", at(from)));
            query.push(("ending_at", at(to)));
            query.push(("group_by[]", "api_key_id".into()));
            query.push(("group_by[]", "model".into()));
            query.extend(key_ids.iter().map(|k| ("api_key_ids[]", k.clone())));
            self.http
                .get(format!(
                    "{}/v1/organizations/usage_report/{kind}",
                    self.base_url
                ))
                .header("x-api-key", self.admin_key.expose())
                .header("anthropic-version", ANTHROPIC_API_VERSION)
        };
        if let Some(p) = page {
            query.push(("page", p.to_string()));
        }
        request.query(&query)
    }
}

#[async_trait]
impl KeyUsageSource for ProviderKeyUsage {
    fn provider(&self) -> ProviderKind {
        self.provider
    }

    async fn hourly(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        key_ids: &[String],
    ) -> HourlyUsage {
        let kind = match self.provider {
            ProviderKind::Openai => "openai key usage",
            _ => "anthropic key usage",
        };
        let mut out = HourlyUsage::default();
        if key_ids.is_empty() || from >= to {
            return out;
        }
        let kinds: &[&str] = if self.provider == ProviderKind::Openai {
            &OPENAI_KEY_USAGE_KINDS
        } else {
            &ANTHROPIC_KEY_USAGE_KINDS
        };
        for usage_kind in kinds {
            // a kind's pages go into the hours only once all of them are read
            let mut hours = KeyHours::new();
            match self
                .read_kind(kind, usage_kind, from, to, key_ids, &mut hours)
                .await
            {
                Ok(()) => {
                    for (key_hour, hour) in hours {
                        let merged = out.hours.entry(key_hour).or_default();
                        for ((kind, model), usage) in &hour.usage {
                            merged.add(kind, model, usage);
                        }
                    }
                }
                Err(e) => out.failures.push((usage_kind.to_string(), e)),
            }
        }
        out
    }

    /// OpenAI: the token kinds' usage per project and model and the costs per project and
    /// line item of `day`. Anthropic keeps no cost per workspace and model here: `None`.
    async fn day_ledger(&self, day: NaiveDate) -> Result<Option<DayLedger>, SourceError> {
        if self.provider != ProviderKind::Openai {
            return Ok(None);
        }
        let kind = "openai day ledger";
        let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let query = |group: &str| {
            vec![
                ("start_time", start.timestamp().to_string()),
                (
                    "end_time",
                    (start + Duration::days(1)).timestamp().to_string(),
                ),
                ("bucket_width", "1d".to_string()),
                ("limit", "1".to_string()),
                ("group_by", "project_id".to_string()),
                ("group_by", group.to_string()),
            ]
        };
        let mut ledger = DayLedger::default();
        let paths = OPENAI_TOKEN_KINDS
            .iter()
            .map(|k| (format!("usage/{k}"), "model"))
            .chain([("costs".to_string(), "line_item")]);
        for (path, group) in paths {
            let batch = path == "usage/completions";
            let url = format!("{}/v1/organization/{path}", self.base_url);
            let mut page: Option<String> = None;
            let mut pages = 0;
            loop {
                let body = get_text(kind, &self.settings, || {
                    let mut q = query(group);
                    if batch {
                        q.push(("group_by", "batch".to_string()));
                    }
                    if let Some(p) = &page {
                        q.push(("page", p.clone()));
                    }
                    self.http
                        .get(&url)
                        .bearer_auth(self.admin_key.expose())
                        .query(&q)
                })
                .await?;
                page = read_day_page(kind, &body, &mut ledger)?;
                pages += 1;
                if page.is_none() {
                    break;
                }
                if pages >= MAX_PAGES {
                    return Err(SourceError::BadResponse {
                        source_kind: kind,
                        message: format!("more than {MAX_PAGES} pages of {path} for {day}"),
                    });
                }
            }
        }
        Ok(Some(ledger))
    }
}

impl ProviderKeyUsage {
    /// Every page of one usage kind.
    async fn read_kind(
        &self,
        source_kind: &'static str,
        usage_kind: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        key_ids: &[String],
        out: &mut KeyHours,
    ) -> Result<(), SourceError> {
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let body = get_text(source_kind, &self.settings, || {
                self.request(usage_kind, from, to, key_ids, page.as_deref())
            })
            .await?;
            page = read_page(source_kind, usage_kind, &body, out)?;
            if page.is_none() {
                return Ok(());
            }
        }
        Err(SourceError::BadResponse {
            source_kind,
            message: format!("more than {MAX_PAGES} pages of hourly {usage_kind} usage"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour() -> DateTime<Utc> {
        DateTime::from_timestamp(1_763_866_800, 0).unwrap()
    }

    #[test]
    fn both_providers_pages_are_read_per_key_hour_kind_and_model() {
        let mut out = KeyHours::new();
        let openai = r#"{"object":"page","data":[{"object":"bucket","start_time":1763866800,"end_time":1763870400,
            "results":[{"object":"organization.usage.completions.result","input_tokens":1200,"output_tokens":300,
            "input_cached_tokens":200,"num_model_requests":7,"api_key_id":"key_abc","model":"gpt-4o"},
            {"object":"organization.usage.completions.result","input_tokens":5,"output_tokens":5,"num_model_requests":1,"api_key_id":null}]}],
            "has_more":true,"next_page":"page_2"}"#;
        let next = read_page("openai key usage", "completions", openai, &mut out).unwrap();
        assert_eq!(next.as_deref(), Some("page_2"));
        let completions = out[&("key_abc".to_string(), hour())].total();
        assert_eq!(
            completions,
            ProviderUsage {
                requests: Decimal::from(7),
                input_tokens: Decimal::from(1000),
                cached_tokens: Decimal::from(200),
                output_tokens: Decimal::from(300),
                ..ProviderUsage::default()
            }
        );
        let anthropic = r#"{"data":[{"starting_at":"2025-11-23T03:00:00Z","ending_at":"2025-11-23T04:00:00Z",
            "results":[{"api_key_id":"apikey_01","model":"claude-sonnet-4-5","uncached_input_tokens":1000,"cache_read_input_tokens":500,
            "cache_creation":{"ephemeral_1h_input_tokens":50,"ephemeral_5m_input_tokens":25},"output_tokens":400,
            "server_tool_use":{"web_search_requests":3}}]}],"has_more":false,"next_page":null}"#;
        assert_eq!(
            read_page("anthropic key usage", "messages", anthropic, &mut out).unwrap(),
            None
        );
        let messages = &out[&("apikey_01".to_string(), hour())];
        assert_eq!(messages.total().tokens(), Decimal::from(1975));
        assert_eq!(
            messages.usage[&("messages".to_string(), "claude-sonnet-4-5".to_string())]
                .cached_tokens,
            Decimal::from(500)
        );
        assert!(read_page("x", "completions", r#"{"data":[{"results":[]}]}"#, &mut out).is_err());
    }

    #[test]
    fn completions_count_their_audio_tokens_too() {
        let mut out = KeyHours::new();
        let page = r#"{"object":"page","data":[{"object":"bucket","start_time":1763866800,"end_time":1763870400,"results":[{"input_tokens":1000,"output_tokens":200,"input_cached_tokens":0,"input_audio_tokens":500,"output_audio_tokens":300,"num_model_requests":6,"api_key_id":"key_abc","model":"gpt-4o-audio-preview","batch":false}]}],"has_more":false,"next_page":null}"#;
        read_page("openai key usage", "completions", page, &mut out).unwrap();
        let total = out[&("key_abc".to_string(), hour())].total();
        assert_eq!(total.tokens(), Decimal::from(2000));
        assert_eq!(total.audio_tokens, Decimal::from(800));
    }

    #[test]
    fn every_kind_counts_in_its_own_units() {
        let mut out = KeyHours::new();
        for (kind, result) in [
            (
                "embeddings",
                r#"{"input_tokens":90000,"num_model_requests":30,"api_key_id":"key_abc","model":"text-embedding-3-small"}"#,
            ),
            (
                "moderations",
                r#"{"input_tokens":100,"num_model_requests":2,"api_key_id":"key_abc","model":"omni-moderation-latest"}"#,
            ),
            (
                "images",
                r#"{"images":12,"num_model_requests":3,"api_key_id":"key_abc","model":"gpt-image-1","size":null,"source":null}"#,
            ),
            (
                "audio_speeches",
                r#"{"characters":4000,"num_model_requests":4,"api_key_id":"key_abc","model":"tts-1"}"#,
            ),
            (
                "audio_transcriptions",
                r#"{"seconds":600,"num_model_requests":5,"api_key_id":"key_abc","model":"whisper-1"}"#,
            ),
        ] {
            let page = format!(
                r#"{{"object":"page","data":[{{"object":"bucket","start_time":1763866800,"end_time":1763870400,"results":[{result}]}}],"has_more":false,"next_page":null}}"#
            );
            read_page("openai key usage", kind, &page, &mut out).unwrap();
        }
        let hour = &out[&("key_abc".to_string(), hour())];
        let total = hour.total();
        assert_eq!(total.requests, Decimal::from(44));
        assert_eq!(total.tokens(), Decimal::from(90_100));
        assert_eq!(
            (total.images, total.characters, total.seconds),
            (Decimal::from(12), Decimal::from(4000), Decimal::from(600))
        );
        assert_eq!(
            hour.by_kind(),
            "audio_speeches 4000 characters; audio_transcriptions 600 seconds; embeddings 90000 tokens; images 12 images; moderations 100 tokens"
        );
    }
}
