//! Builds the fan-out from configuration: clients once per cold start.

use aws_config::SdkConfig;
use spendguard_app::backends::Backends;
use spendguard_http::poster::Poster;

use crate::config::Config;
use crate::handler::{ChannelRegistry, Fanout};

pub fn fanout(config: &Config, sdk: &SdkConfig) -> Fanout {
    fanout_with(
        config,
        sdk,
        spendguard_aws::backends::deployed(sdk, &config.table),
    )
}

/// The fan-out on any backends (the CLI runs it on the embedded store with `file:` secrets).
pub fn fanout_with(config: &Config, sdk: &SdkConfig, backends: Backends) -> Fanout {
    Fanout {
        store: backends.store,
        registry: ChannelRegistry::new(
            backends.vault,
            Poster {
                http: reqwest::Client::new(),
                policy: config.retry,
            },
            aws_sdk_sesv2::Client::new(sdk),
        ),
        clock: backends.clock,
    }
}
