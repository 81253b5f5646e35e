//! AWS SDK configuration shared by every function: explicit timeouts (the SDK has none by
//! default) and standard retries. `AWS_ENDPOINT_URL` is honoured (tests point it at moto).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};

/// Loads the SDK configuration once per cold start.
pub async fn sdk_config() -> SdkConfig {
    loader().load().await
}

/// The loader `sdk_config` uses, for callers that choose a profile or region first (the CLI).
pub fn loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(4))
}

/// For runs that must not reach AWS (the CLI's embedded store): no credentials, no endpoint
/// discovery. A client built from it fails on first use, naming the missing credentials.
pub fn offline_sdk_config() -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_config::Region::new("local"))
        .build()
}
