//! Builds the checker from configuration: clients once per cold start, secrets read once.

use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::Duration;
use spendguard_core::bus::SnsBus;
use spendguard_core::check::Checker;
use spendguard_core::clock::SystemClock;
use spendguard_core::runtime::spend_sources;
use spendguard_core::secret::SecretError;
use spendguard_core::store::{DynamoStore, StateStore};

use crate::config::Config;

/// Everything `main` needs to serve invocations.
pub async fn checker(config: &Config, sdk: &SdkConfig) -> Result<Checker, SecretError> {
    let store: Arc<dyn StateStore> = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &config.table,
    ));
    Ok(Checker {
        sources: spend_sources(&config.sources, sdk, store.clone()).await?,
        store,
        bus: Arc::new(SnsBus::new(
            aws_sdk_sns::Client::new(sdk),
            &config.alerts_topic_arn,
        )),
        clock: Arc::new(SystemClock),
        claim_lease: Duration::seconds(config.claim_lease_seconds),
    })
}
