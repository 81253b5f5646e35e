//! The audit log: every action spendguard took, by month.

use super::StoreResult;
use async_trait::async_trait;
use spendguard_domain::period::YearMonth;
use spendguard_domain::records::AuditEntry;

#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// The newest `limit` entries of a month, newest first.
    async fn audit_log(&self, month: YearMonth, limit: usize) -> StoreResult<Vec<AuditEntry>>;
}
