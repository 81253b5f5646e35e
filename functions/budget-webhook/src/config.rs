//! budget-webhook configuration, read once at start-up. Secrets are referenced by ARN only.

use spendguard_app::env::{Env, EnvError};
use spendguard_app::env::{SourcesConfig, check_api_url};
use spendguard_domain::authorize::bounds;
use spendguard_http::verify::gcp_oidc::GOOGLE_JWKS_URL;

/// The GCP Pub/Sub push route, enabled when both values are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpPushConfig {
    /// The OIDC audience the push subscription sets (default: the push URL) (`SPENDGUARD_GCP_PUSH_AUDIENCE`).
    pub audience: String,
    /// The push subscription's service account (`SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT`).
    pub service_account: String,
    /// Google's JWKS (`SPENDGUARD_GCP_JWKS_URL`, default Google's).
    pub jwks_url: String,
    /// The one push subscription accepted (`projects/<p>/subscriptions/<s>`,
    /// `SPENDGUARD_GCP_PUSH_SUBSCRIPTION`): catches a second subscription pushing here by
    /// mistake. Not a security boundary (the token does not cover the body): the dedicated
    /// push service account is.
    pub subscription: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub table: String,
    pub alerts_topic_arn: String,
    /// Standard Webhooks secrets for `/usage` (`SPENDGUARD_USAGE_SECRET_ARN`).
    pub usage_secret_arn: String,
    /// Bearer token applications present to `/status` (`SPENDGUARD_STATUS_TOKEN_ARN`).
    pub status_token_arn: String,
    pub gcp: Option<GcpPushConfig>,
    /// SNS topics accepted on `/sns` and as Lambda triggers (`SPENDGUARD_SNS_TOPIC_ARNS`, comma-separated).
    pub sns_topic_arns: Vec<String>,
    /// The oldest SNS signature version taken (`SPENDGUARD_SNS_SIGNATURE_VERSION`, 1 or 2,
    /// default 1): 2 where the topics are set to sign with SHA256, as the deployment's is.
    pub sns_signature_version: u8,
    pub sources: SourcesConfig,
    /// The alert-signing key (`SPENDGUARD_ALERT_SIGNING_KEY_ARN`): alerts published are signed
    /// with it and alerts received must verify under it (none: unsigned, for local runs).
    pub alert_signing_key_arn: Option<String>,
    /// How long an `/authorize` hold counts unless its usage record reconciles it
    /// (`SPENDGUARD_RESERVATION_TTL_MINUTES`, 1 to 60, default 15).
    pub reservation_ttl: chrono::Duration,
}

impl Config {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let gcp = match (
            env.optional("SPENDGUARD_GCP_PUSH_AUDIENCE"),
            env.optional("SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT"),
        ) {
            (Some(audience), Some(service_account)) => {
                let jwks_url =
                    env.parsed("SPENDGUARD_GCP_JWKS_URL", GOOGLE_JWKS_URL.to_string())?;
                check_api_url("SPENDGUARD_GCP_JWKS_URL", &jwks_url)?;
                let subscription = env.optional("SPENDGUARD_GCP_PUSH_SUBSCRIPTION");
                if let Some(s) = &subscription
                    && !s
                        .strip_prefix("projects/")
                        .and_then(|rest| rest.split_once("/subscriptions/"))
                        .is_some_and(|(p, n)| !p.is_empty() && !n.is_empty() && !n.contains('/'))
                {
                    return Err(EnvError {
                        variable: "SPENDGUARD_GCP_PUSH_SUBSCRIPTION".into(),
                        message: format!("`{s}` is not projects/<project>/subscriptions/<name>"),
                    });
                }
                Some(GcpPushConfig {
                    audience,
                    service_account,
                    jwks_url,
                    subscription,
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(EnvError {
                    variable: "SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT".into(),
                    message: "required with SPENDGUARD_GCP_PUSH_AUDIENCE (the push subscription's service account)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(EnvError {
                    variable: "SPENDGUARD_GCP_PUSH_AUDIENCE".into(),
                    message: "required with SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT (the push subscription's audience)".into(),
                });
            }
        };
        let sns_topic_arns: Vec<String> = env
            .optional("SPENDGUARD_SNS_TOPIC_ARNS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = sns_topic_arns
            .iter()
            .find(|a| !a.starts_with("arn:") || a.split(':').count() != 6)
        {
            return Err(EnvError {
                variable: "SPENDGUARD_SNS_TOPIC_ARNS".into(),
                message: format!("`{bad}` is not an SNS topic ARN"),
            });
        }
        let sns_signature_version: u8 = env.parsed("SPENDGUARD_SNS_SIGNATURE_VERSION", 1)?;
        if !(1..=2).contains(&sns_signature_version) {
            return Err(EnvError {
                variable: "SPENDGUARD_SNS_SIGNATURE_VERSION".into(),
                message: format!("{sns_signature_version}: SNS signs with version 1 or 2"),
            });
        }
        let ttl_minutes: i64 = env.parsed(
            "SPENDGUARD_RESERVATION_TTL_MINUTES",
            bounds::DEFAULT_RESERVATION_TTL.num_minutes(),
        )?;
        let reservation_ttl = chrono::Duration::minutes(ttl_minutes);
        if !(bounds::MIN_RESERVATION_TTL..=bounds::MAX_RESERVATION_TTL).contains(&reservation_ttl) {
            return Err(EnvError {
                variable: "SPENDGUARD_RESERVATION_TTL_MINUTES".into(),
                message: format!(
                    "{ttl_minutes}: holds expire after {} to {} minutes",
                    bounds::MIN_RESERVATION_TTL.num_minutes(),
                    bounds::MAX_RESERVATION_TTL.num_minutes()
                ),
            });
        }
        Ok(Config {
            table: env.required("SPENDGUARD_TABLE", "the DynamoDB table name")?,
            alerts_topic_arn: env.required(
                "SPENDGUARD_ALERTS_TOPIC_ARN",
                "the ARN of the alerts SNS topic",
            )?,
            usage_secret_arn: env.required(
                "SPENDGUARD_USAGE_SECRET_ARN",
                "the Secrets Manager ARN of the usage-report signing secrets (whsec_...)",
            )?,
            status_token_arn: env.required(
                "SPENDGUARD_STATUS_TOKEN_ARN",
                "the Secrets Manager ARN of the token applications use to read /status",
            )?,
            gcp,
            sns_topic_arns,
            sns_signature_version,
            sources: SourcesConfig::from_env(env)?,
            alert_signing_key_arn: env.optional(spendguard_app::env::ALERT_SIGNING_KEY),
            reservation_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spendguard_app::env::env_of;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, EnvError> {
        Config::from_env(&env_of(pairs))
    }

    const BASE: [(&str, &str); 4] = [
        ("SPENDGUARD_TABLE", "t"),
        (
            "SPENDGUARD_ALERTS_TOPIC_ARN",
            "arn:aws:sns:eu-west-1:123456789012:alerts",
        ),
        (
            "SPENDGUARD_USAGE_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:usage",
        ),
        (
            "SPENDGUARD_STATUS_TOKEN_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:status",
        ),
    ];

    #[test]
    fn optional_routes_are_off_unless_configured() {
        let c = config(&BASE).unwrap();
        assert!(c.gcp.is_none() && c.sns_topic_arns.is_empty());
        let mut with = BASE.to_vec();
        with.extend([
            ("SPENDGUARD_GCP_PUSH_AUDIENCE", "https://x.lambda-url.eu-west-1.on.aws/gcp/pubsub"),
            ("SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT", "push@p.iam.gserviceaccount.com"),
            ("SPENDGUARD_SNS_TOPIC_ARNS", "arn:aws:sns:eu-west-1:123456789012:budgets, arn:aws:sns:eu-west-1:123456789012:other"),
        ]);
        let c = config(&with).unwrap();
        assert_eq!(c.gcp.unwrap().jwks_url, GOOGLE_JWKS_URL);
        assert_eq!(c.sns_topic_arns.len(), 2);
    }

    #[test]
    fn half_configured_or_malformed_values_are_named() {
        let mut half = BASE.to_vec();
        half.push(("SPENDGUARD_GCP_PUSH_AUDIENCE", "aud"));
        assert_eq!(
            config(&half).unwrap_err().variable,
            "SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT"
        );
        let mut topics = BASE.to_vec();
        topics.push(("SPENDGUARD_SNS_TOPIC_ARNS", "budgets"));
        assert_eq!(
            config(&topics).unwrap_err().variable,
            "SPENDGUARD_SNS_TOPIC_ARNS"
        );
        assert_eq!(
            config(&BASE[..3]).unwrap_err().variable,
            "SPENDGUARD_STATUS_TOKEN_ARN"
        );
    }

    #[test]
    fn reservation_ttl_is_bounded() {
        assert_eq!(
            config(&BASE).unwrap().reservation_ttl,
            chrono::Duration::minutes(15)
        );
        for (minutes, ok) in [
            ("1", true),
            ("60", true),
            ("0", false),
            ("61", false),
            ("x", false),
        ] {
            let mut with = BASE.to_vec();
            with.push(("SPENDGUARD_RESERVATION_TTL_MINUTES", minutes));
            match config(&with) {
                Ok(c) => {
                    assert!(ok, "{minutes} accepted");
                    assert_eq!(c.reservation_ttl.num_minutes().to_string(), minutes);
                }
                Err(e) => {
                    assert!(!ok, "{minutes} refused: {}", e.message);
                    assert_eq!(e.variable, "SPENDGUARD_RESERVATION_TTL_MINUTES");
                }
            }
        }
    }
}
