//! Builds the fan-out from configuration: clients once per cold start.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_core::channels::Poster;
use spendguard_core::clock::SystemClock;
use spendguard_core::secret::SecretsManagerVault;
use spendguard_core::store::DynamoStore;

use crate::config::Config;
use crate::handler::{ChannelRegistry, Fanout};

pub fn fanout(config: &Config, sdk: &SdkConfig) -> Fanout {
    Fanout {
        store: Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            &config.table,
        )),
        registry: ChannelRegistry::new(
            Arc::new(SecretsManagerVault::new(
                aws_sdk_secretsmanager::Client::new(sdk),
            )),
            Poster {
                http: reqwest::Client::new(),
                policy: config.retry,
            },
            aws_sdk_sesv2::Client::new(sdk),
        ),
        clock: Arc::new(SystemClock),
    }
}
