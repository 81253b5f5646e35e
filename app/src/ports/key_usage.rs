//! What the providers counted per API key and hour (ADR 016): the calls a thief makes with a
//! leaked key never reach the applications' usage reports, but they are in the provider's
//! usage. OpenAI `GET /v1/organization/usage/completions` and Anthropic
//! `GET /v1/organizations/usage_report/messages`, both `bucket_width=1h`, grouped by
//! `api_key_id`, filtered to the registry's keys, paginated (168 hourly buckets a page).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::sources::SourceError;
use spendguard_domain::key_hours::KeyHours;
use spendguard_domain::keys::ProviderKind;

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
    ) -> Result<KeyHours, SourceError>;
}
