//! What the providers counted per API key and hour (ADR 016): the calls a thief makes with a
//! leaked key never reach the applications' usage reports, but they are in the provider's
//! usage. OpenAI `GET /v1/organization/usage/completions` and Anthropic
//! `GET /v1/organizations/usage_report/messages`, both `bucket_width=1h`, grouped by
//! `api_key_id`, filtered to the registry's keys, paginated (168 hourly buckets a page); and
//! the provider's own ledger of a day (usage and costs per project and model) for the price
//! book's drift.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::ports::sources::SourceError;
use spendguard_domain::key_hours::KeyHours;
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::ledger::DayLedger;

/// What one read of a provider's usage per key and hour got: each usage kind is read on its
/// own, so an endpoint that fails blinds only its kind.
#[derive(Debug, Default)]
pub struct HourlyUsage {
    pub hours: KeyHours,
    /// The usage kinds (`images`, …) that could not be read, and why: missing from `hours`.
    pub failures: Vec<(String, SourceError)>,
}

/// A provider's usage per key and hour.
#[async_trait]
pub trait KeyUsageSource: Send + Sync {
    fn provider(&self) -> ProviderKind;
    /// The hours starting in `[from, to)` of the keys `key_ids` (provider key ids).
    async fn hourly(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        key_ids: &[String],
    ) -> HourlyUsage;
    /// The provider's own ledger of the completed UTC day `day`: token usage and charges per
    /// scope and model (ADR 026). `None` where the provider keeps no such ledger per scope.
    async fn day_ledger(&self, day: NaiveDate) -> Result<Option<DayLedger>, SourceError>;
}
