//! The pre-flight check (`POST /authorize`, ADR 028): a request's estimate held against the
//! headroom of every window of the usage budgets covering its scope.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use spendguard_domain::authorize::{AuthorizeRequest, covering_budgets, holds, window_keys};
use spendguard_domain::senders::usage_marker_id;
use spendguard_domain::settings::PolicySet;

use crate::ports::sources::{SpendRequest, SpendSource};
use crate::ports::store::{ReservationRequest, Reserved, StateStore, StoreError};
use crate::sources::counters::UsageCounters;

/// Why a request could not be decided: the caller retries (nothing was held).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A window's spend cannot be read or converted.
    #[error("{0}")]
    Spend(String),
}

/// Decides `request` from `sender` (none: the shared secrets) at `now`, holding its estimate
/// for `ttl` when allowed. Two reads in parallel (the windows' spend from the counters, their
/// outstanding holds), then one conditional write. The reservation carries the id the
/// sender's usage record will be counted under, so that record reconciles it.
pub async fn authorize(
    store: &Arc<dyn StateStore>,
    policy: &PolicySet,
    request: &AuthorizeRequest,
    sender: Option<&str>,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Reserved, AuthorizeError> {
    let budgets = covering_budgets(&policy.budgets, &request.scope);
    let windows = window_keys(&budgets, now);
    let counters = UsageCounters::new(store.clone());
    let spend_request = SpendRequest {
        budgets: &budgets,
        now,
        rates: &policy.settings.rates,
        // ancestors' counters as rolled up (ADR 031: about a second behind)
        fresh_pending: &[],
    };
    let (spend, outstanding) = tokio::join!(
        counters.spend(&spend_request),
        store.outstanding(&windows, now)
    );
    let spend = spend.map_err(|e| AuthorizeError::Spend(e.to_string()))?;
    let holds = holds(
        &budgets,
        &spend,
        request.estimate,
        &policy.settings.rates,
        now,
    )
    .map_err(|e| AuthorizeError::Spend(e.0))?;
    let reservation = ReservationRequest {
        id: usage_marker_id(sender, &request.request_id),
        holds,
        expires_at: now + ttl,
        outstanding_seen: outstanding?,
    };
    Ok(store.reserve(&reservation, now).await?)
}
