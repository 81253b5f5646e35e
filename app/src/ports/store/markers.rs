//! Markers (seen-once ids, with expiry) and cached values (with expiry).

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

#[async_trait]
pub trait MarkerStore: Send + Sync {
    /// Records that `id` was seen in `namespace`; true the first time. An expired marker
    /// counts as absent (expiry is checked here, not left to TTL deletion).
    async fn put_marker(
        &self,
        namespace: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Whether an unexpired marker for `id` is in `namespace` (written by `put_marker`).
    async fn has_marker(&self, namespace: &str, id: &str, now: DateTime<Utc>) -> StoreResult<bool>;

    /// A cached value that has not expired by `now`.
    async fn get_cached(&self, key: &str, now: DateTime<Utc>) -> StoreResult<Option<String>>;

    async fn put_cached(
        &self,
        key: &str,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
}
