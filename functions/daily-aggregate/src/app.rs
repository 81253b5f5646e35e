//! Builds the nightly run from configuration: clients once per cold start.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_app::flows::nightly::{MetricsSink, Nightly, StdoutMetrics};
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::clock::{Clock, SystemClock};
use spendguard_app::ports::store::StateStore;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_aws::sns::SnsBus;

use crate::config::Config;

/// Everything `main` needs to serve invocations: DynamoDB, the alerts topic, the system clock,
/// metrics as CloudWatch embedded-metric lines on stdout.
pub fn nightly(config: &Config, sdk: &SdkConfig) -> Nightly {
    nightly_with(
        Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            &config.table,
        )),
        Arc::new(SnsBus::new(
            aws_sdk_sns::Client::new(sdk),
            &config.alerts_topic_arn,
        )),
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
