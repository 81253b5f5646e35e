//! The one claim protocol: claim → work → finish (done for good) or release (failed: the
//! next attempt may try again). A claim whose holder crashed is won again once its lease runs
//! out. Every caller goes through [`Claimed::take`]; none writes the claim records by hand.

use chrono::{DateTime, Duration, Utc};
use tracing::warn;

use crate::ports::clock::Clock;
use crate::ports::store::{StateStore, StoreError, StoreResult};
use spendguard_domain::ids::KeyId;
use spendguard_domain::records::{Claim, ClaimOutcome, Lease};

/// What trying to claim something gave.
pub enum Claimed<'a> {
    /// This caller holds the claim: do the work, then [`Held::finish`] or [`Held::release`].
    Won(Held<'a>),
    /// Finished for good by an earlier holder: nothing to do.
    Done,
    /// Another holder's lease is live: it may still be doing the work.
    Busy,
}

impl<'a> Claimed<'a> {
    /// Tries to claim `claim` at `now`.
    pub async fn take(
        store: &'a dyn StateStore,
        claim: Claim,
        now: DateTime<Utc>,
    ) -> StoreResult<Claimed<'a>> {
        Ok(match store.claim(&claim, now).await? {
            ClaimOutcome::Won => Claimed::Won(Held { store, claim }),
            ClaimOutcome::AlreadyRaised => Claimed::Done,
            ClaimOutcome::HeldByOther => Claimed::Busy,
        })
    }
}

/// A claim this caller won. Dropping it without finishing or releasing leaves it to expire
/// with its lease (what a crash does).
#[must_use = "finish or release the claim"]
pub struct Held<'a> {
    store: &'a dyn StateStore,
    claim: Claim,
}

impl Held<'_> {
    /// The work is done for good: nobody claims it again.
    pub async fn finish(self) -> StoreResult<()> {
        self.store.finish_claim(&self.claim).await
    }

    /// The work failed or is over for now: the next attempt may claim it at once.
    pub async fn release(self) -> StoreResult<()> {
        self.store.release_claim(&self.claim).await
    }

    /// Releases after a failure whose error is what the caller reports: a claim that could
    /// not be released is logged (it expires with its lease) and named in the message.
    pub async fn release_after(self, failure: String) -> String {
        let key = self.claim.key.clone();
        match self.release().await {
            Ok(()) => failure,
            Err(e) => {
                warn!(claim = %key, error = %e, "claim not released; it expires with its lease");
                format!(
                    "{failure} (its claim could not be released and expires with its lease: {e})"
                )
            }
        }
    }
}

/// How long a lease's record is kept (it is released, or expires with its lease, long before).
const LEASE_RETENTION: Duration = Duration::days(1);

/// Waits between attempts to take a lease another holder has (about six seconds in all).
pub const LEASE_WAITS_MS: [u64; 6] = [100, 200, 400, 800, 1600, 3200];

/// Takes the mutual-exclusion lease on `id` (one invocation acts on a key or a resource at a
/// time; a crashed holder's lease runs out after `lease`), waiting `waits` (milliseconds)
/// between attempts for another holder to finish. `None`: still held by another.
pub async fn exclusive<'a>(
    store: &'a dyn StateStore,
    clock: &dyn Clock,
    id: &str,
    lease: Duration,
    waits: &[u64],
) -> StoreResult<Option<Held<'a>>> {
    for wait in std::iter::once(0).chain(waits.iter().copied()) {
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        let now = clock.now();
        let claim = Claim::key(
            &KeyId::new(id),
            "lease",
            Lease::new(
                uuid::Uuid::new_v4().to_string(),
                lease,
                now + LEASE_RETENTION,
            ),
        );
        match Claimed::take(store, claim, now).await? {
            Claimed::Won(held) => return Ok(Some(held)),
            Claimed::Busy | Claimed::Done => {}
        }
    }
    Ok(None)
}

/// What [`once`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Once<T> {
    /// This caller did the work.
    Did(T),
    /// An earlier holder finished it.
    Done,
    /// Another holder is doing it now.
    Busy,
}

/// Why [`once`] failed: the work's own error (the claim was released), or the store's.
#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    #[error("{0}")]
    Work(E),
    #[error(transparent)]
    Store(StoreError),
}

/// Does `work` once under `claim`: claimed, then finished when `work` succeeds, released when
/// it fails. A finish that fails after the work is `OnceError::Store`: the work happened, and
/// a later attempt may do it again once the lease runs out (at least once, never silently).
pub async fn once<T, E, F, Fut>(
    store: &dyn StateStore,
    claim: Claim,
    now: DateTime<Utc>,
    work: F,
) -> Result<Once<T>, OnceError<E>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let held = match Claimed::take(store, claim, now)
        .await
        .map_err(OnceError::Store)?
    {
        Claimed::Won(held) => held,
        Claimed::Done => return Ok(Once::Done),
        Claimed::Busy => return Ok(Once::Busy),
    };
    match work().await {
        Ok(value) => {
            held.finish().await.map_err(OnceError::Store)?;
            Ok(Once::Did(value))
        }
        Err(e) => {
            if let Err(release) = held.store.release_claim(&held.claim).await {
                warn!(claim = %held.claim.key, error = %release, "claim not released; it expires with its lease");
            }
            Err(OnceError::Work(e))
        }
    }
}
