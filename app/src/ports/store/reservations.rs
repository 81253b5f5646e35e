//! Reservations: the pre-flight check's holds on budget windows (ADR 028). The usage record
//! with a reservation's id reconciles it inside [`super::SpendStore::ingest_usage`].

use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use spendguard_domain::authorize::{Hold, Verdict};

/// A request to hold `holds` until `expires_at`, decided once per `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRequest {
    /// The id the usage record will carry (as counted: `senders::usage_marker_id`).
    pub id: String,
    pub holds: Vec<Hold>,
    pub expires_at: DateTime<Utc>,
    /// What [`ReservationStore::outstanding`] answered for the holds just before: the
    /// headroom an adapter reports when its write cannot return the totals it checked.
    pub outstanding_seen: Vec<Decimal>,
}

/// What the store decided, and whether it had already decided this id (then nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub verdict: Verdict,
    pub replayed: bool,
}

#[async_trait]
pub trait ReservationStore: Send + Sync {
    /// The total of each window's holds (keys as `authorize::window_key`) that are neither
    /// reconciled nor expired at `now`, in the order asked. An adapter that expires holds
    /// lazily may still count an expired one here (never the other way round).
    async fn outstanding(
        &self,
        windows: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Decimal>>;

    /// Decides `request` atomically against every other reservation: allowed when each hold
    /// fits its window (outstanding + amount <= cap, holds expired at `now` not counted), and
    /// then held until it expires or its usage record reconciles it. Denied requests hold
    /// nothing. Either decision is remembered (`authorize::DECISION_MEMORY`): the same id
    /// again answers the recorded verdict, `replayed`, and holds nothing more.
    async fn reserve(
        &self,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Reserved>;
}
