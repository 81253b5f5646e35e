//! The state store port, split by capability: policy, spend (usage counters, summaries,
//! observations), reservations (the pre-flight check), claims, alerts, keys and switches, the
//! audit log, markers and cache. Its two adapters (DynamoDB single table in spendguard-aws;
//! embedded SQLite in spendguard-local) implement every capability and pass one conformance suite, organised the same way
//! (`tests/src/conformance.rs`).

mod alerts;
mod audit;
mod claims;
mod keys;
mod markers;
mod policy;
mod reservations;
mod spend;

pub use alerts::{AckOutcome, AlertStore};
pub use audit::AuditLog;
pub use claims::ClaimStore;
pub use keys::KeyStore;
pub use markers::MarkerStore;
pub use policy::PolicyStore;
pub use reservations::{ReservationRequest, ReservationStore, Reserved};
pub use spend::{FreshCounters, LateMark, LateSpend, PendingLeaves, SpendStore};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or refused the request for now: retry later.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// A concurrent writer changed the item first (optimistic concurrency).
    #[error("conflicting concurrent update of {0}")]
    Conflict(String),
    /// Stored data could not be read back: a bug or a hand-edited item.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Corrupt(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything spendguard keeps, as one store: the sum of the capabilities above. Every write is
/// idempotent or guarded by a condition, so handlers can be retried and run concurrently. A
/// flow that needs only some of it takes the capability it uses (`&dyn ClaimStore`, ...).
pub trait StateStore:
    PolicyStore
    + SpendStore
    + ReservationStore
    + ClaimStore
    + AlertStore
    + KeyStore
    + AuditLog
    + MarkerStore
{
}

impl<
    T: PolicyStore
        + SpendStore
        + ReservationStore
        + ClaimStore
        + AlertStore
        + KeyStore
        + AuditLog
        + MarkerStore,
> StateStore for T
{
}

/// JSON helpers shared by the adapters (documents are stored as JSON text).
pub fn to_doc<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn from_doc<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> StoreResult<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
