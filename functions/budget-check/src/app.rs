//! Builds the checker from configuration: clients once per cold start, secrets read once.

use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::Duration;
use spendguard_app::backends::Backends;
use spendguard_app::env::SourcesConfig;
use spendguard_app::flows::check::Checker;
use spendguard_app::flows::check::PendingAgeMetric;
use spendguard_app::flows::nightly::StdoutMetrics;
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::secrets::SecretError;
use spendguard_app::signing::AlertSigning;
use spendguard_aws::sns::SnsBus;
use spendguard_http::keys::cap_targets;

use crate::config::Config;

/// Everything `main` needs to serve invocations.
pub async fn checker(config: &Config, sdk: &SdkConfig) -> Result<Checker, SecretError> {
    let backends = spendguard_aws::backends::deployed(sdk, &config.table);
    let bus = alerts_bus(config, sdk, &backends);
    checker_with(config, sdk, backends, Arc::new(bus)).await
}

/// The alerts topic, each alert signed with the deployment's key.
pub fn alerts_bus(config: &Config, sdk: &SdkConfig, backends: &Backends) -> SnsBus {
    SnsBus::new(aws_sdk_sns::Client::new(sdk), &config.alerts_topic_arn).signed(
        AlertSigning::configured(&backends.vault, config.alert_signing_key_arn.as_deref()),
    )
}

/// The checker on any backends and bus (the CLI runs it on the embedded store).
pub async fn checker_with(
    config: &Config,
    sdk: &SdkConfig,
    backends: Backends,
    bus: Arc<dyn AlertBus>,
) -> Result<Checker, SecretError> {
    // `provider_cap` windows keep the providers' own spend limits, with the admin keys the
    // costs are read with (read when a cap is first kept: most deployments keep none)
    let provider_caps = cap_targets(&config.sources, &backends.vault);
    Ok(Checker {
        sources: all_sources(&config.sources, sdk, &backends).await?,
        key_usage: spendguard_http::sources::key_usage_sources(
            &config.sources,
            backends.vault.as_ref(),
        )
        .await?,
        store: backends.store,
        bus,
        clock: backends.clock,
        claim_lease: Duration::seconds(config.claim_lease_seconds),
        provider_caps,
        pending_age: None,
    })
}

/// The deployed check's `PendingUsageAge`: EMF lines on stdout (CloudWatch reads them from
/// the function's log), by the function's name (`AWS_LAMBDA_FUNCTION_NAME`, which Lambda
/// sets).
pub fn pending_age_metric(function_name: Option<String>) -> PendingAgeMetric {
    PendingAgeMetric {
        sink: Arc::new(StdoutMetrics),
        function: function_name.unwrap_or_else(|| "budget-check".into()),
    }
}

/// Every spend source this deployment enables: spendguard's own, AWS's, the providers' (the
/// webhook evaluates with the same ones).
pub async fn all_sources(
    sources: &SourcesConfig,
    sdk: &SdkConfig,
    backends: &Backends,
) -> Result<Vec<Arc<dyn spendguard_app::ports::sources::SpendSource>>, SecretError> {
    let mut all = backends.own_sources();
    all.extend(spendguard_aws::sources::spend_sources(
        sources,
        sdk,
        &backends.store,
    ));
    all.extend(spendguard_http::sources::spend_sources(sources, backends.vault.as_ref()).await?);
    Ok(all)
}
