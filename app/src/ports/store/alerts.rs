//! Open paging alerts (acknowledgement, escalation, recovery) and the digest queues.

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::records::{Acknowledgement, OpenAlert};

/// What [`AlertStore::acknowledge_alert`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// This acknowledgement was recorded: the alert as it is now.
    Acknowledged(Box<OpenAlert>),
    /// Someone acknowledged it before; nothing changed.
    AlreadyAcknowledged(Acknowledgement),
    /// No open alert has this id.
    Unknown,
}

#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Records (or replaces) an open alert.
    async fn put_open_alert(&self, alert: &OpenAlert) -> StoreResult<()>;

    /// Every open alert (one read).
    async fn open_alerts(&self) -> StoreResult<Vec<OpenAlert>>;

    /// Acknowledges an open alert unless it already is (the first acknowledgement stands).
    async fn acknowledge_alert(
        &self,
        alert_id: &str,
        ack: &Acknowledgement,
    ) -> StoreResult<AckOutcome>;

    /// Records that escalation `level` was published (never lowers it).
    async fn set_escalation_level(&self, alert_id: &str, level: u32) -> StoreResult<()>;

    /// Removes an open alert (recovered).
    async fn close_alert(&self, alert_id: &str) -> StoreResult<()>;

    /// Queues a warning for a channel's digest (idempotent per alert).
    async fn queue_digest(
        &self,
        channel: &str,
        event: &AlertEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The queued alerts of a channel, oldest first, with when each was queued.
    async fn digest_queue(&self, channel: &str) -> StoreResult<Vec<(DateTime<Utc>, AlertEvent)>>;

    /// Removes alerts that went out in a digest.
    async fn remove_from_digest(&self, channel: &str, alert_ids: &[String]) -> StoreResult<()>;
}
