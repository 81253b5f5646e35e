//! The policy as a warm process holds it (issue 28): read and indexed once, then used for
//! [`TTL`] without a read; after that one small read of the policy's version decides whether
//! it is read again. A `budgets apply` is therefore seen within [`TTL`], and a request costs no
//! policy read at all in between (the webhook read and parsed every budget on every request).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use spendguard_domain::policy_index::IndexedPolicy;
use tokio::sync::Mutex;

use crate::ports::clock::Clock;
use crate::ports::store::{PolicyStore, StoreResult};

/// How long a policy is used before its version is read again.
pub const TTL: Duration = Duration::seconds(10);

pub struct PolicyCache {
    store: Arc<dyn PolicyStore>,
    clock: Arc<dyn Clock>,
    held: Mutex<Option<Held>>,
}

struct Held {
    policy: Arc<IndexedPolicy>,
    version: String,
    checked_at: DateTime<Utc>,
}

impl PolicyCache {
    /// Nothing is read until the first [`PolicyCache::get`].
    pub fn new(store: Arc<dyn PolicyStore>, clock: Arc<dyn Clock>) -> PolicyCache {
        PolicyCache {
            store,
            clock,
            held: Mutex::new(None),
        }
    }

    /// The policy, at most [`TTL`] behind the store's.
    pub async fn get(&self) -> StoreResult<Arc<IndexedPolicy>> {
        let now = self.clock.now();
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_mut() {
            // a clock that went back does not extend the policy's life
            if now >= h.checked_at && now - h.checked_at < TTL {
                return Ok(h.policy.clone());
            }
        }
        // the version is read before the policy: a change written in between is seen at the
        // next check, since writers move the version after the policy
        let version = self.store.policy_version().await?;
        if let Some(h) = held.as_mut()
            && h.version == version
        {
            h.checked_at = now;
            return Ok(h.policy.clone());
        }
        let policy = Arc::new(IndexedPolicy::new(self.store.load_policy().await?));
        *held = Some(Held {
            policy: policy.clone(),
            version,
            checked_at: now,
        });
        Ok(policy)
    }
}
