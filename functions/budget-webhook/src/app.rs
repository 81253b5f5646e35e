//! Builds the webhook from configuration: clients once per cold start, the usage secret's read
//! begun at start (the first `/usage` awaits it), the status token read on first use.

use std::sync::Arc;

use aws_config::SdkConfig;
use spendguard_app::backends::Backends;
use spendguard_app::env::SourcesConfig;
use spendguard_app::flows::check::{Checker, DEFAULT_CLAIM_LEASE};
use spendguard_app::policy_cache::PolicyCache;
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::secrets::SecretError;
use spendguard_app::refreshing::{OnFirstUse, secret_reader};
use spendguard_app::signing::AlertSigning;
use spendguard_aws::sns::SnsBus;
use spendguard_domain::secret::Secret;
use spendguard_domain::senders::UsageSenders;
use spendguard_http::verify::gcp_oidc::{GoogleOidcVerifier, OidcPolicy};
use spendguard_http::verify::sns::{CertificateSource, HttpsCertificates, SnsVerifier};

use crate::config::Config;
use crate::handler::{SnsApiConfirmer, SnsIntake, Webhook};

/// The webhook on any backends and bus. `certificates` is where SNS signing certificates come
/// from: `HttpsCertificates` in production (see [`webhook`]).
pub async fn webhook_with(
    config: &Config,
    sdk: &SdkConfig,
    backends: Backends,
    bus: Arc<dyn AlertBus>,
    certificates: Box<dyn CertificateSource>,
) -> Result<Webhook, SecretError> {
    let store = backends.store.clone();
    // the start waits on no read: the usage secret's (every `/usage` needs it) runs while the
    // runtime waits for the first event, which awaits it; the status token's is made by the
    // first `/status` request. Both are read again within minutes of a rotation.
    let usage_senders = OnFirstUse::prefetch(
        secret_reader(
            backends.vault.clone(),
            &config.usage_secret_arn,
            UsageSenders::parse,
            backends.clock.clone(),
        ),
        backends.clock.clone(),
    );
    let status_token = OnFirstUse::new(
        secret_reader(
            backends.vault.clone(),
            &config.status_token_arn,
            status_token,
            backends.clock.clone(),
        ),
        backends.clock.clone(),
    );
    let http = spendguard_http::https::client();
    let checker = Checker {
        // only what its own signals touch — app-reported usage, GCP notifications, AWS Budgets:
        // the internet-facing function never reads the providers' admin keys nor Cost
        // Explorer (review finding #7); budget-check evaluates the rest
        sources: budget_check::app::all_sources(
            &SourcesConfig {
                aws_account_id: config.sources.aws_account_id.clone(),
                ..SourcesConfig::default()
            },
            sdk,
            &backends,
        )
        .await?,
        // the webhook evaluates only the budgets a signal touched: no theft scan here
        key_usage: Vec::new(),
        store: store.clone(),
        bus,
        clock: backends.clock.clone(),
        claim_lease: DEFAULT_CLAIM_LEASE,
        provider_caps: Vec::new(),
        pending_age: None,
    };
    Ok(Webhook {
        policy: PolicyCache::new(store.clone(), backends.clock.clone()),
        store,
        checker,
        known_raised: Arc::default(),
        usage_senders,
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
        gcp_subscription: config.gcp.as_ref().and_then(|g| g.subscription.clone()),
        sns: (!config.sns_topic_arns.is_empty()).then(|| SnsIntake {
            verifier: SnsVerifier::new(config.sns_topic_arns.clone(), certificates)
                .with_min_version(config.sns_signature_version),
            confirmer: Box::new(SnsApiConfirmer(aws_sdk_sns::Client::new(sdk))),
            verify_trigger_signatures: true,
        }),
        clock: backends.clock,
        reservation_ttl: config.reservation_ttl,
    })
}

/// The webhook as deployed: SNS certificates fetched over HTTPS from the validated URL.
pub async fn webhook(
    config: &Config,
    sdk: &SdkConfig,
) -> Result<Webhook, Box<dyn std::error::Error + Send + Sync>> {
    let backends = spendguard_aws::backends::deployed(sdk, &config.table);
    let bus = SnsBus::new(aws_sdk_sns::Client::new(sdk), &config.alerts_topic_arn).signed(
        AlertSigning::configured(&backends.vault, config.alert_signing_key_arn.as_deref()),
    );
    webhook_with(
        config,
        sdk,
        backends,
        Arc::new(bus),
        Box::new(HttpsCertificates::new()?),
    )
    .await
    .map_err(Into::into)
}

/// The `/status` token: at least 32 bytes, so that it cannot be guessed, and never empty (an
/// empty token would let a request without one through).
pub const MIN_STATUS_TOKEN_BYTES: usize = 32;

fn status_token(text: &str) -> Result<Secret, String> {
    if text.len() < MIN_STATUS_TOKEN_BYTES {
        return Err(format!(
            "the status token must hold at least {MIN_STATUS_TOKEN_BYTES} bytes (has {}): generate one with `openssl rand -hex 32`",
            text.len()
        ));
    }
    Ok(Secret::new(text))
}
