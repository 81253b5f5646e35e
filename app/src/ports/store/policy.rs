//! The budgets, keys and settings of the budgets file, as loaded into the store.

use super::StoreResult;
use async_trait::async_trait;
use spendguard_domain::budget::Budget;
use spendguard_domain::settings::{PolicySet, Settings};

#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Replaces all budgets, keys and the settings with `set` (those not in `set` are deleted;
    /// the status of keys that stay is kept).
    async fn put_policy(&self, set: &PolicySet) -> StoreResult<()>;

    /// All budgets and the settings.
    async fn load_policy(&self) -> StoreResult<PolicySet>;

    /// A stamp of what `load_policy` returns: it changes after every write of budgets, keys or
    /// settings (moved after the write), so a holder of the policy knows when to read it again.
    async fn policy_version(&self) -> StoreResult<String>;

    async fn put_budget(&self, budget: &Budget) -> StoreResult<()>;

    async fn get_budget(&self, id: &str) -> StoreResult<Option<Budget>>;

    /// Returns whether the budget existed.
    async fn delete_budget(&self, id: &str) -> StoreResult<bool>;

    async fn put_settings(&self, settings: &Settings) -> StoreResult<()>;

    /// The settings alone (channels, escalation, prices), without the budgets.
    async fn settings(&self) -> StoreResult<Settings>;
}
