//! The alert bus port: the SNS alerts topic when deployed, in-process for local runs.

use async_trait::async_trait;

use spendguard_domain::alert::AlertEvent;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alert bus: {0}")]
pub struct BusError(pub String);

#[async_trait]
pub trait AlertBus: Send + Sync {
    async fn publish(&self, event: &AlertEvent) -> Result<(), BusError>;
}
