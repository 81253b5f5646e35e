//! The spend source port: "what have these budgets spent?", answered with one fetch per run.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use spendguard_domain::budget::Budget;
use spendguard_domain::money::FxRates;
use spendguard_domain::spend::BudgetSpend;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source could not be reached or answered with an error: try again next run.
    #[error("{source_kind}: unavailable: {message}")]
    Unavailable {
        source_kind: &'static str,
        message: String,
    },
    /// The source answered with something we do not understand.
    #[error("{source_kind}: unexpected response: {message}")]
    BadResponse {
        source_kind: &'static str,
        message: String,
    },
}

/// What a source is asked: the budgets that use it, the time, and the configured rates.
pub struct SpendRequest<'a> {
    pub budgets: &'a [&'a Budget],
    pub now: DateTime<Utc>,
    pub rates: &'a FxRates,
    /// The pending items the webhook's ingest just wrote ([`IngestOutcome::pending`]): the
    /// counters read see that spend even where it is not rolled up yet (ADR 031). Empty for a
    /// scheduled run.
    ///
    /// [`IngestOutcome::pending`]: spendguard_domain::usage::IngestOutcome::pending
    pub fresh_pending: &'a [String],
}

#[async_trait]
pub trait SpendSource: Send + Sync {
    /// The `kind` of `SourceSpec` this source serves.
    fn kind(&self) -> &'static str;
    /// Spend of every budget in the request, keyed by budget id. One call per run.
    async fn spend(
        &self,
        request: &SpendRequest<'_>,
    ) -> Result<BTreeMap<String, BudgetSpend>, SourceError>;
}
