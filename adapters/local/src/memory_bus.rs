//! An alert bus that keeps what it is given (local runs and tests).

use async_trait::async_trait;
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::bus::BusError;
use spendguard_domain::alert::AlertEvent;
use std::sync::Mutex;

/// Keeps published events in memory (local runs print them; tests inspect them).
#[derive(Default)]
pub struct MemoryBus(Mutex<Vec<AlertEvent>>);

impl MemoryBus {
    pub fn events(&self) -> Vec<AlertEvent> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl AlertBus for MemoryBus {
    async fn publish(&self, event: &AlertEvent) -> Result<(), BusError> {
        self.0
            .lock()
            .map_err(|_| BusError("memory bus poisoned".into()))?
            .push(event.clone());
        Ok(())
    }
}
