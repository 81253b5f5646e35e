//! AWS SDK configuration shared by every function: explicit timeouts (the SDK has none by
//! default) and standard retries. `AWS_ENDPOINT_URL` is honoured (tests point it at moto).
//!
//! A function's configuration is also cheap to start (ADR 032): credentials come straight from
//! the environment when Lambda put them there (the default chain would also build the
//! web-identity provider's STS client), and the HTTPS connector, with the system's root
//! certificates, is built on the first request rather than by every `Client::new`.

use std::time::Duration;

use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;

/// Loads a function's SDK configuration once per cold start, from its environment.
pub async fn sdk_config() -> SdkConfig {
    let mut loader = loader().http_client(connect_on_first_request());
    if credentials_in_environment(|name| std::env::var(name).ok()) {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    loader.load().await
}

/// Whether the credentials are in the environment, as Lambda gives them: then no other
/// provider of the default chain (web identity, SSO, IMDS) is built.
fn credentials_in_environment(var: impl Fn(&str) -> Option<String>) -> bool {
    var("AWS_ACCESS_KEY_ID").is_some_and(|key| !key.is_empty())
}

/// The SDK's HTTPS client (rustls on aws-lc, the system's root certificates), which builds its
/// connector — and loads the certificates, once per process — on the first request instead of
/// when each service client is created (the SDK's default does it in `Client::new`).
fn connect_on_first_request() -> SharedHttpClient {
    ConnectOnFirstRequest(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https(),
    )
    .into_shared()
}

#[derive(Debug)]
struct ConnectOnFirstRequest(SharedHttpClient);

impl HttpClient for ConnectOnFirstRequest {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    // `validate_base_client_config` keeps its default (nothing to check): the inner client's
    // builds the connector there, eagerly
    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The loader `sdk_config` starts from, for callers that choose a profile or region first (the
/// CLI: its default credential chain honours `--profile`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_from_the_environment_only_when_a_key_is_there() {
        let env = |key: &'static str| {
            move |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| key.to_string())
        };
        assert!(credentials_in_environment(env("AKIAEXAMPLE")));
        assert!(!credentials_in_environment(env("")));
        assert!(!credentials_in_environment(|_| None));
    }
}
