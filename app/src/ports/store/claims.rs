//! Claims on work done once (alerts, deliveries, key actions): won by one claimant, finished
//! for good or released for the next attempt. Used through `crate::lease`.

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_domain::records::{Claim, ClaimOutcome};

#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Tries to claim something done once. Exactly one concurrent claimant wins; a claim
    /// whose lease ran out without being finished can be won again.
    async fn claim(&self, claim: &Claim, now: DateTime<Utc>) -> StoreResult<ClaimOutcome>;

    /// For each of `claims`, whether it is finished for good: one batched read, so that a run
    /// needs no claim attempt for what earlier runs already did (`claim` decides the rest).
    async fn claims_done(&self, claims: &[Claim]) -> StoreResult<Vec<bool>>;

    /// Marks a won claim as done for good. `Conflict` if someone else holds it now.
    async fn finish_claim(&self, claim: &Claim) -> StoreResult<()>;

    /// Gives up a won claim whose work failed, so that the next attempt can do it.
    async fn release_claim(&self, claim: &Claim) -> StoreResult<()>;
}
