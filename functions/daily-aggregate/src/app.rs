//! Builds the nightly run from configuration: clients once per cold start.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_app::flows::nightly::{MetricsSink, Nightly, StdoutMetrics};
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::clock::{Clock, SystemClock};
use spendguard_app::ports::store::StateStore;
use spendguard_app::signing::AlertSigning;
use spendguard_aws::sns::SnsBus;

use crate::config::Config;

/// Everything `main` needs to serve invocations: DynamoDB, the alerts topic, the system clock,
/// metrics as CloudWatch embedded-metric lines on stdout.
pub fn nightly(config: &Config, sdk: &SdkConfig) -> Nightly {
    let backends = spendguard_aws::backends::deployed(sdk, &config.table);
    nightly_with(
        backends.store,
        Arc::new(
            SnsBus::new(aws_sdk_sns::Client::new(sdk), &config.alerts_topic_arn).signed(
                AlertSigning::configured(&backends.vault, config.alert_signing_key_arn.as_deref()),
            ),
        ),
        Arc::new(SystemClock),
        Arc::new(StdoutMetrics),
    )
}

/// The nightly run on any store, bus, clock and metrics sink (the CLI runs it on the embedded
/// store, with the demo's clock).
pub fn nightly_with(
    store: Arc<dyn StateStore>,
    bus: Arc<dyn AlertBus>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn MetricsSink>,
) -> Nightly {
    Nightly {
        store,
        bus,
        clock,
        metrics,
    }
}
