//! The deployed backends: DynamoDB, Secrets Manager, the system clock.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_app::backends::Backends;
use spendguard_app::ports::clock::SystemClock;

use crate::dynamo::DynamoStore;
use crate::secrets::SecretsManagerVault;

/// DynamoDB (`table`), Secrets Manager and the system clock.
pub fn deployed(sdk: &SdkConfig, table: &str) -> Backends {
    Backends {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table)),
        vault: Arc::new(SecretsManagerVault::new(
            aws_sdk_secretsmanager::Client::new(sdk),
        )),
        clock: Arc::new(SystemClock),
    }
}
