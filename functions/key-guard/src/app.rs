//! Builds key-guard from configuration: clients once per cold start, admin keys and the key
//! registry read once, concurrently, in a task begun at start that the first event awaits.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_app::backends::Backends;
use spendguard_app::flows::guard::KeyGuard;
use spendguard_app::flows::rotation::Rotator;
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::keys::KeyProvider;
use spendguard_app::ports::rate_limits::ProviderRateLimits;
use spendguard_app::ports::secret_versions::SecretVersions;
use spendguard_app::ports::secrets::{SecretError, SecretVault};
use spendguard_app::ports::shutdown::ShutdownTarget;
use spendguard_app::refreshing::OnFirstUse;
use spendguard_app::signing::AlertSigning;
use spendguard_aws::iam::IamKeys;
use spendguard_aws::secret_versions::SecretsManager;
use spendguard_aws::shutdown::AwsShutdown;
use spendguard_aws::sns::SnsBus;
use spendguard_domain::secret::Secret;
use spendguard_http::gcp::{GcpShutdown, ServiceAccountKey};
use spendguard_http::keys::anthropic::{AnthropicAdmin, AnthropicRateLimits, AnthropicSpendLimits};
use spendguard_http::keys::openai::{OpenAiAdmin, OpenAiRateLimits, OpenAiSpendLimits};

use crate::config::Config;
use crate::handler::Handler;

/// key-guard as deployed, begun: its secrets and key registry are read in a task of their own
/// while the runtime waits for the first event, which awaits them
/// ([`crate::handler::handle_started`]); a start that failed is made again by a later event, at
/// most every 30 s.
pub fn start(config: &Config, sdk: &SdkConfig) -> OnFirstUse<Handler> {
    start_with(
        config,
        sdk,
        spendguard_aws::backends::deployed(sdk, &config.table),
    )
}

/// [`start`] on any backends (its clock times the retries).
pub fn start_with(config: &Config, sdk: &SdkConfig, backends: Backends) -> OnFirstUse<Handler> {
    let clock = backends.clock.clone();
    let (config, sdk) = (config.clone(), sdk.clone());
    OnFirstUse::prefetch(
        move || {
            let (config, sdk, backends) = (config.clone(), sdk.clone(), backends.clone());
            Box::pin(async move { deployed(&config, &sdk, backends).await })
        },
        clock,
    )
}

/// key-guard as deployed, once started: AWS IAM keys, the store in DynamoDB, admin keys in
/// Secrets Manager.
pub async fn handler(config: &Config, sdk: &SdkConfig) -> Result<Handler, SecretError> {
    deployed(
        config,
        sdk,
        spendguard_aws::backends::deployed(sdk, &config.table),
    )
    .await
}

async fn deployed(
    config: &Config,
    sdk: &SdkConfig,
    backends: Backends,
) -> Result<Handler, SecretError> {
    let mut handler = handler_with(config, sdk, backends, AwsKeys::Managed).await?;
    // the drill's alerts, signed like every other
    handler.alerts = config.alerts_topic_arn.as_ref().map(|arn| {
        Arc::new(SnsBus::new(aws_sdk_sns::Client::new(sdk), arn).signed(handler.signing.clone()))
            as Arc<dyn AlertBus>
    });
    Ok(handler)
}

/// Whether key-guard administers AWS itself: IAM access keys, the secrets it withholds and the
/// resources a shutdown stops.
/// The CLI's embedded runs leave AWS alone unless asked (`--aws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsKeys {
    Managed,
    Untouched,
}

/// key-guard on any backends.
pub async fn handler_with(
    config: &Config,
    sdk: &SdkConfig,
    backends: Backends,
    aws: AwsKeys,
) -> Result<Handler, SecretError> {
    let Backends {
        store,
        vault,
        clock,
    } = backends;
    let signing = AlertSigning::configured(&vault, config.alert_signing_key_arn.as_deref());
    let secrets = aws_sdk_secretsmanager::Client::new(sdk);
    let http = spendguard_http::https::client();
    // the configured secrets and the key registry, read at once rather than one round trip
    // after another
    let (configured, registry) = tokio::join!(
        async {
            tokio::try_join!(
                read_configured(vault.as_ref(), config.gcp_credential_arn.as_deref()),
                read_configured(vault.as_ref(), config.anthropic_admin_key_arn.as_deref()),
                read_configured(vault.as_ref(), config.openai_admin_key_arn.as_deref()),
            )
        },
        store.keys(),
    );
    let (gcp_key, anthropic_admin_key, openai_admin_key) = configured?;
    let gcp_credential = match gcp_key {
        Some((arn, secret)) => {
            Some(ServiceAccountKey::parse(&secret).map_err(|e| SecretError {
                reference: arn.into(),
                message: e.to_string(),
            })?)
        }
        None => None,
    };
    let mut shutdown_targets: Vec<Arc<dyn ShutdownTarget>> = vec![Arc::new(GcpShutdown::new(
        http.clone(),
        gcp_credential,
        config.gcp_token_url.clone(),
        config.gcp_billing_api_url.clone(),
        config.gcp_iam_api_url.clone(),
    ))];
    if aws == AwsKeys::Managed {
        shutdown_targets.push(Arc::new(AwsShutdown::new(
            sdk,
            http.clone(),
            config.own_function_name.as_deref(),
        )));
    }
    let mut providers: Vec<Arc<dyn KeyProvider>> = Vec::new();
    let mut rate_limits: Vec<Arc<dyn ProviderRateLimits>> = Vec::new();
    if aws == AwsKeys::Managed {
        providers.push(Arc::new(IamKeys {
            iam: aws_sdk_iam::Client::new(sdk),
            sdk: sdk.clone(),
        }));
    }
    if let Some((_, admin_key)) = anthropic_admin_key {
        if config.anthropic_spend_limits {
            // opted in: a stop sets the workspace (organisation) spend limits it covers
            shutdown_targets.push(Arc::new(AnthropicSpendLimits {
                http: http.clone(),
                base_url: config.anthropic_api_url.clone(),
                admin_key: admin_key.clone(),
            }));
        }
        // a `reduce_limits` lowers each covered workspace's rate limits at Anthropic too
        rate_limits.push(Arc::new(AnthropicRateLimits {
            http: http.clone(),
            base_url: config.anthropic_api_url.clone(),
            admin_key: admin_key.clone(),
        }));
        providers.push(Arc::new(AnthropicAdmin {
            http: http.clone(),
            base_url: config.anthropic_api_url.clone(),
            admin_key,
        }));
    }
    if let Some((_, admin_key)) = openai_admin_key {
        // a stop at OpenAI itself: the spend limit of each project the scope covers
        shutdown_targets.push(Arc::new(OpenAiSpendLimits {
            http: http.clone(),
            base_url: config.openai_api_url.clone(),
            admin_key: admin_key.clone(),
        }));
        // a `reduce_limits` lowers each covered project's rate limits at OpenAI too
        rate_limits.push(Arc::new(OpenAiRateLimits {
            http: http.clone(),
            base_url: config.openai_api_url.clone(),
            admin_key: admin_key.clone(),
        }));
        providers.push(Arc::new(OpenAiAdmin {
            http,
            base_url: config.openai_api_url.clone(),
            admin_key,
        }));
    }
    let withholding: Option<Arc<dyn SecretVersions>> = (aws == AwsKeys::Managed).then(|| {
        Arc::new(SecretsManager {
            client: secrets.clone(),
        }) as Arc<dyn SecretVersions>
    });
    let mut guard = KeyGuard::new(
        store.clone(),
        providers.clone(),
        withholding,
        clock.clone(),
        shutdown_targets,
    );
    guard = guard.with_rate_limits(rate_limits);
    // the registry as key-guard starts: what it stops should the store be down later
    guard.warm_from(registry);
    Ok(Handler {
        guard,
        rotator: Rotator {
            secrets: Arc::new(SecretsManager { client: secrets }),
            store,
            providers,
            clock,
        },
        alerts: None,
        signing,
    })
}

/// The secret at `reference` with it, if one is configured.
async fn read_configured<'a>(
    vault: &dyn SecretVault,
    reference: Option<&'a str>,
) -> Result<Option<(&'a str, Secret)>, SecretError> {
    match reference {
        Some(reference) => Ok(Some((reference, vault.read(reference).await?))),
        None => Ok(None),
    }
}
