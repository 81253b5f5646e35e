//! Builds the webhook from configuration: clients once per cold start, secrets read once.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_core::bus::SnsBus;
use spendguard_core::check::{Checker, DEFAULT_CLAIM_LEASE};
use spendguard_core::clock::SystemClock;
use spendguard_core::runtime::spend_sources;
use spendguard_core::secret::{SecretError, SecretVault, SecretsManagerVault};
use spendguard_core::store::{DynamoStore, StateStore};
use spendguard_core::verify::gcp_oidc::{GoogleOidcVerifier, OidcPolicy};
use spendguard_core::verify::sns::{CertificateSource, HttpsCertificates, SnsVerifier};
use spendguard_core::verify::standard_webhooks::WebhookSecret;

use crate::config::Config;
use crate::handler::{SnsApiConfirmer, SnsIntake, Webhook};

/// The webhook as deployed. `certificates` is where SNS signing certificates come from:
/// `HttpsCertificates` in production (see [`webhook`]).
pub async fn webhook_with(
    config: &Config,
    sdk: &SdkConfig,
    certificates: Box<dyn CertificateSource>,
) -> Result<Webhook, SecretError> {
    let store: Arc<dyn StateStore> = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &config.table,
    ));
    let vault = SecretsManagerVault::new(aws_sdk_secretsmanager::Client::new(sdk));
    let usage = vault.read(&config.usage_secret_arn).await?;
    let usage_secrets =
        WebhookSecret::parse_list(usage.expose()).map_err(|message| SecretError {
            reference: config.usage_secret_arn.clone(),
            message,
        })?;
    let status_token = vault.read(&config.status_token_arn).await?;
    let http = reqwest::Client::new();
    let sns_client = aws_sdk_sns::Client::new(sdk);
    let checker = Checker {
        sources: spend_sources(&config.sources, sdk, store.clone()).await?,
        store: store.clone(),
        bus: Arc::new(SnsBus::new(sns_client.clone(), &config.alerts_topic_arn)),
        clock: Arc::new(SystemClock),
        claim_lease: DEFAULT_CLAIM_LEASE,
    };
    Ok(Webhook {
        store,
        checker,
        usage_secrets,
        status_token,
        gcp: config.gcp.as_ref().map(|g| {
            GoogleOidcVerifier::new(
                OidcPolicy {
                    audience: g.audience.clone(),
                    service_account_email: g.service_account.clone(),
                    jwks_url: g.jwks_url.clone(),
                },
                http.clone(),
            )
        }),
        sns: (!config.sns_topic_arns.is_empty()).then(|| SnsIntake {
            verifier: SnsVerifier::new(config.sns_topic_arns.clone(), certificates),
            confirmer: Box::new(SnsApiConfirmer(sns_client)),
        }),
        clock: Arc::new(SystemClock),
    })
}

/// The webhook as deployed: SNS certificates fetched over HTTPS from the validated URL.
pub async fn webhook(config: &Config, sdk: &SdkConfig) -> Result<Webhook, SecretError> {
    webhook_with(
        config,
        sdk,
        Box::new(HttpsCertificates(reqwest::Client::new())),
    )
    .await
}
