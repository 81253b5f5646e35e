//! Builds the fan-out from configuration: clients once per cold start.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_app::backends::Backends;
use spendguard_app::flows::fanout::{ChannelRegistry, Fanout};
use spendguard_app::signing::AlertSigning;
use spendguard_http::poster::Poster;

use crate::channels::Channels;
use crate::config::Config;
use crate::handler::Handler;

pub fn fanout(config: &Config, sdk: &SdkConfig) -> Handler {
    fanout_with(
        config,
        sdk,
        spendguard_aws::backends::deployed(sdk, &config.table),
    )
}

/// The fan-out on any backends (the CLI runs it on the embedded store with `file:` secrets).
pub fn fanout_with(config: &Config, sdk: &SdkConfig, backends: Backends) -> Handler {
    let channels = Channels {
        poster: Poster {
            http: spendguard_http::https::client(),
            policy: config.retry,
        },
        ses: aws_sdk_sesv2::Client::new(sdk),
    };
    Handler {
        signing: AlertSigning::configured(&backends.vault, config.alert_signing_key_arn.as_deref()),
        operator: config.operator.clone(),
        fanout: Fanout {
            store: backends.store,
            registry: ChannelRegistry::new(backends.vault, Arc::new(channels)),
            clock: backends.clock,
        },
    }
}
