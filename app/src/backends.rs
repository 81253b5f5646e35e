//! What every function is built on, once per cold start: where it keeps state, reads secrets
//! and tells the time ([`Backends`]). Deployed: DynamoDB, Secrets Manager and the system clock
//! (`spendguard_aws::backends::deployed`); the `spendguard` CLI runs the same handlers on the
//! embedded store with `file:` secrets and, in its demo, a simulated clock.

use std::sync::Arc;

use crate::ports::clock::Clock;
use crate::ports::secrets::SecretVault;
use crate::ports::sources::SpendSource;
use crate::ports::store::StateStore;
use crate::sources::counters::UsageCounters;
use crate::sources::gcp::GcpBudgetObservations;

#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn StateStore>,
    pub vault: Arc<dyn SecretVault>,
    pub clock: Arc<dyn Clock>,
}

impl Backends {
    /// The spend sources every deployment has: usage counted by spendguard (`usage`) and the
    /// figures Google notified (`gcp_budget`); the AWS and provider sources are added by the
    /// adapters that read them.
    pub fn own_sources(&self) -> Vec<Arc<dyn SpendSource>> {
        vec![
            Arc::new(UsageCounters::new(self.store.clone())),
            Arc::new(GcpBudgetObservations::new(self.store.clone())),
        ]
    }
}
