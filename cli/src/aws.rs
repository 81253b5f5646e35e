//! The operator's AWS access: `--profile` and `--region` on top of the SDK's usual chain, and
//! the credential and region problems everyone meets said in one line with the fix, as the AWS
//! CLI does (the SDK's own error chain is logged at `SPENDGUARD_LOG=debug`).

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;

use crate::Failure;

/// Which AWS identity and region an operator command uses (the SDK's defaults when unset:
/// `AWS_PROFILE`, `AWS_REGION`, the profile's `region`, …). Flattened into `operate::On`,
/// whose `--store` they conflict with: an embedded store reaches no AWS.
#[derive(clap::Args, Clone, Default)]
pub struct Access {
    /// The AWS profile to use (from ~/.aws/config), instead of AWS_PROFILE or the default.
    #[arg(long, value_name = "NAME", conflicts_with = "store")]
    pub profile: Option<String>,
    /// The AWS region of the deployment, instead of AWS_REGION or the profile's region.
    #[arg(long, value_name = "REGION", conflicts_with = "store")]
    pub region: Option<String>,
}

impl Access {
    /// The SDK configuration, with its region and credentials checked now: a command stops
    /// here with the fix instead of after a dispatch failure on its first request.
    pub async fn sdk_config(&self) -> Result<SdkConfig, Failure> {
        let mut loader = spendguard_aws::sdk::loader();
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Failure::Run(
                "no AWS region: pass --region REGION or set AWS_REGION (or `region` in your AWS profile)".into(),
            ));
        }
        let Some(provider) = sdk.credentials_provider() else {
            return Err(self.no_credentials());
        };
        if let Err(e) = provider.provide_credentials().await {
            tracing::debug!(error = %chain(&e), "loading AWS credentials failed");
            return Err(self.credentials_failure(&e));
        }
        Ok(sdk)
    }

    fn profile_hint(&self) -> String {
        match &self.profile {
            Some(p) => format!(" --profile {p}"),
            None => String::new(),
        }
    }

    fn no_credentials(&self) -> Failure {
        Failure::Run(match &self.profile {
            Some(p) => format!(
                "no AWS credentials for profile `{p}`: is it in ~/.aws/config (`aws configure list-profiles`)? Run `aws configure --profile {p}` or `aws sso login --profile {p}`"
            ),
            None => "no AWS credentials found: run `aws configure` or `aws sso login`, or choose a profile (--profile NAME or AWS_PROFILE)".into(),
        })
    }

    fn credentials_failure(&self, e: &CredentialsError) -> Failure {
        let chain = chain(e);
        match e {
            CredentialsError::CredentialsNotLoaded(_) => self.no_credentials(),
            _ if chain.to_ascii_lowercase().contains("expired") => expired(&self.profile_hint()),
            _ => Failure::Run(format!(
                "cannot load AWS credentials{}: {chain}",
                match &self.profile {
                    Some(p) => format!(" for profile `{p}`"),
                    None => String::new(),
                }
            )),
        }
    }
}

fn expired(profile_hint: &str) -> Failure {
    Failure::Run(format!(
        "your AWS session expired: run `aws sso login{profile_hint}` (or put fresh credentials in the environment)"
    ))
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// The one-line fix for an AWS answer that refused the credentials themselves (an expired
/// session, keys AWS does not know), recognised by the error codes AWS's APIs answer with;
/// None for any other failure.
pub fn rejected_credentials(message: &str) -> Option<Failure> {
    if message.contains("ExpiredToken") {
        return Some(expired(""));
    }
    ["InvalidClientTokenId", "UnrecognizedClientException"]
        .iter()
        .find(|code| message.contains(*code))
        .map(|code| {
            Failure::Run(format!(
                "AWS does not accept these credentials ({code}): check the access key in your environment or profile, or sign in again (`aws sso login`)"
            ))
        })
}
