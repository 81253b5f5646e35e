//! Builds key-guard from configuration: clients once per cold start, admin keys read once.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_core::clock::SystemClock;
use spendguard_core::guard::KeyGuard;
use spendguard_core::keys::KeyProvider;
use spendguard_core::keys::anthropic::AnthropicAdmin;
use spendguard_core::keys::iam::IamKeys;
use spendguard_core::keys::openai::OpenAiAdmin;
use spendguard_core::keys::rotation::Rotator;
use spendguard_core::keys::vault::SecretsAdmin;
use spendguard_core::secret::{SecretError, SecretVault, SecretsManagerVault};
use spendguard_core::store::{DynamoStore, StateStore};

use crate::config::Config;
use crate::handler::Handler;

pub async fn handler(config: &Config, sdk: &SdkConfig) -> Result<Handler, SecretError> {
    let store: Arc<dyn StateStore> = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &config.table,
    ));
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    let vault = SecretsManagerVault::new(secrets.clone());
    let http = reqwest::Client::new();
    let mut providers: Vec<Arc<dyn KeyProvider>> = vec![Arc::new(IamKeys {
        iam: aws_sdk_iam::Client::new(sdk),
        sdk: sdk.clone(),
    })];
    if let Some(arn) = &config.anthropic_admin_key_arn {
        providers.push(Arc::new(AnthropicAdmin {
            http: http.clone(),
            base_url: config.anthropic_api_url.clone(),
            admin_key: vault.read(arn).await?,
        }));
    }
    if let Some(arn) = &config.openai_admin_key_arn {
        providers.push(Arc::new(OpenAiAdmin {
            http,
            base_url: config.openai_api_url.clone(),
            admin_key: vault.read(arn).await?,
        }));
    }
    let clock = Arc::new(SystemClock);
    Ok(Handler {
        guard: KeyGuard {
            store: store.clone(),
            providers: providers.clone(),
            secrets: Some(Arc::new(SecretsAdmin {
                client: secrets.clone(),
            })),
            clock: clock.clone(),
        },
        rotator: Rotator {
            client: secrets,
            store,
            providers,
            clock,
        },
    })
}
