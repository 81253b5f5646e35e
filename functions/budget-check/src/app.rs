//! Builds the checker from configuration: clients once per cold start, secrets read once.

use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::Duration;
use spendguard_core::bus::{AlertBus, SnsBus};
use spendguard_core::check::Checker;
use spendguard_core::runtime::{Backends, key_usage_sources, spend_sources};
use spendguard_core::secret::SecretError;

use crate::config::Config;

/// Everything `main` needs to serve invocations.
pub async fn checker(config: &Config, sdk: &SdkConfig) -> Result<Checker, SecretError> {
    let bus = SnsBus::new(aws_sdk_sns::Client::new(sdk), &config.alerts_topic_arn);
    checker_with(
        config,
        sdk,
        Backends::aws(sdk, &config.table),
        Arc::new(bus),
    )
    .await
}

/// The checker on any backends and bus (the CLI runs it on the embedded store).
pub async fn checker_with(
    config: &Config,
    sdk: &SdkConfig,
    backends: Backends,
    bus: Arc<dyn AlertBus>,
) -> Result<Checker, SecretError> {
    Ok(Checker {
        sources: spend_sources(&config.sources, sdk, &backends).await?,
        key_usage: key_usage_sources(&config.sources, &backends).await?,
        store: backends.store,
        bus,
        clock: backends.clock,
        claim_lease: Duration::seconds(config.claim_lease_seconds),
    })
}
