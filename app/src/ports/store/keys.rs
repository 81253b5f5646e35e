//! The key registry with each key's status, and the kill switches, both versioned
//! (compare-and-set).

use super::StoreResult;
use async_trait::async_trait;
use spendguard_domain::keys::{KeyRecord, KeyStatus};
use spendguard_domain::records::{AuditEntry, KillSwitch, Versioned};
use spendguard_domain::scope::Scope;

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key in the registry, with its status and the status's version.
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>>;

    /// One key of the registry.
    async fn key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>>;

    /// Writes a key's status if its version is still `expected` (a registered key starts at
    /// 0); returns the new version, or `Conflict` when someone else wrote first. The spec
    /// comes from the budgets file via `put_policy`; a key not in the registry is `Corrupt`.
    async fn put_key_status(
        &self,
        key_id: &str,
        status: &KeyStatus,
        expected: u64,
    ) -> StoreResult<u64>;

    async fn kill_switch(&self, scope: &Scope) -> StoreResult<Option<Versioned<KillSwitch>>>;

    /// Every switch that is not open (engaged or restoring), in one read.
    async fn active_kill_switches(&self) -> StoreResult<Vec<Versioned<KillSwitch>>>;

    /// The switches of several scopes in one read (absent ones are left out).
    async fn kill_switches(&self, scopes: &[Scope]) -> StoreResult<Vec<Versioned<KillSwitch>>>;

    /// Writes the switch if its stored version is still `expected` (`None`: must not exist),
    /// with `audit` in the same transaction: every transition of a switch is in the audit log.
    /// Returns the new version, or `Conflict` when someone else wrote first (nothing written).
    async fn put_kill_switch(
        &self,
        switch: &KillSwitch,
        expected: Option<u64>,
        audit: &AuditEntry,
    ) -> StoreResult<u64>;
}
