//! Typed configuration from the environment: a missing or malformed variable is reported by
//! name at start-up, never papered over with a default.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {variable}: {message}")]
pub struct EnvError {
    pub variable: String,
    pub message: String,
}

/// Reads variables through a lookup function (the process environment, or a map in tests).
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

/// The process environment.
pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env(|name: &str| std::env::var(name).ok())
}

/// An environment of these variables only (tests, and configurations built in code).
pub fn env_of(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String> + use<>> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Env(move |name: &str| map.get(name).cloned())
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// A variable that must be set and not empty; `what` says what it is for.
    pub fn required(&self, name: &str, what: &str) -> Result<String, EnvError> {
        self.optional(name).ok_or_else(|| EnvError {
            variable: name.to_string(),
            message: format!("required ({what})"),
        })
    }

    /// A variable that may be absent (an empty value counts as absent).
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// An optional variable parsed as `T`, or `default` when absent.
    pub fn parsed<T>(&self, name: &str, default: T) -> Result<T, EnvError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| EnvError {
                variable: name.to_string(),
                message: format!("`{v}` is not valid: {e}"),
            }),
        }
    }

    /// An optional on/off switch: `true`/`false`, `1`/`0`, `enabled`/`disabled`.
    pub fn flag(&self, name: &str) -> Result<bool, EnvError> {
        match self.optional(name).as_deref() {
            None => Ok(false),
            Some("true" | "1" | "enabled" | "on") => Ok(true),
            Some("false" | "0" | "disabled" | "off") => Ok(false),
            Some(other) => Err(EnvError {
                variable: name.to_string(),
                message: format!("`{other}` is not a switch: use enabled or disabled"),
            }),
        }
    }
}

/// Which spend sources this deployment reads (`usage` and `gcp_budget` always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesConfig {
    /// Enables the `aws_budgets` source (`SPENDGUARD_AWS_ACCOUNT_ID`).
    pub aws_account_id: Option<String>,
    /// Enables the `cost_explorer` source: $0.01 per request (`SPENDGUARD_COST_EXPLORER=enabled`).
    pub cost_explorer: bool,
    /// How long a Cost Explorer answer is reused (`SPENDGUARD_COST_EXPLORER_CACHE_HOURS`, default 6).
    pub cost_explorer_cache_hours: i64,
    /// Enables the `openai` source (`SPENDGUARD_OPENAI_ADMIN_KEY_ARN`).
    pub openai_admin_key_arn: Option<String>,
    pub openai_api_url: String,
    /// Enables the `anthropic` source (`SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN`).
    pub anthropic_admin_key_arn: Option<String>,
    pub anthropic_api_url: String,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            aws_account_id: None,
            cost_explorer: false,
            cost_explorer_cache_hours: 6,
            openai_admin_key_arn: None,
            openai_api_url: "https://api.openai.com".into(),
            anthropic_admin_key_arn: None,
            anthropic_api_url: "https://api.anthropic.com".into(),
        }
    }
}

/// The variable naming the alert-signing key's secret (issue 23): every function that
/// publishes or receives alerts reads it.
pub const ALERT_SIGNING_KEY: &str = "SPENDGUARD_ALERT_SIGNING_KEY_ARN";

/// An https URL, or plain http to a loopback stand-in (tests, local runs).
pub fn check_api_url(variable: &str, url: &str) -> Result<(), EnvError> {
    if url.starts_with("https://")
        || url.starts_with("http://127.0.0.1")
        || url.starts_with("http://localhost")
    {
        Ok(())
    } else {
        Err(EnvError {
            variable: variable.into(),
            message: format!("`{url}` must be an https URL (plain http only for a local stand-in)"),
        })
    }
}

impl SourcesConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let defaults = SourcesConfig::default();
        let config = SourcesConfig {
            aws_account_id: env.optional("SPENDGUARD_AWS_ACCOUNT_ID"),
            cost_explorer: env.flag("SPENDGUARD_COST_EXPLORER")?,
            cost_explorer_cache_hours: env.parsed(
                "SPENDGUARD_COST_EXPLORER_CACHE_HOURS",
                defaults.cost_explorer_cache_hours,
            )?,
            openai_admin_key_arn: env.optional("SPENDGUARD_OPENAI_ADMIN_KEY_ARN"),
            openai_api_url: env.parsed("SPENDGUARD_OPENAI_API_URL", defaults.openai_api_url)?,
            anthropic_admin_key_arn: env.optional("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN"),
            anthropic_api_url: env
                .parsed("SPENDGUARD_ANTHROPIC_API_URL", defaults.anthropic_api_url)?,
        };
        if let Some(id) = &config.aws_account_id
            && (id.len() != 12 || !id.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(EnvError {
                variable: "SPENDGUARD_AWS_ACCOUNT_ID".into(),
                message: format!("`{id}` is not a 12-digit AWS account id"),
            });
        }
        check_api_url("SPENDGUARD_OPENAI_API_URL", &config.openai_api_url)?;
        check_api_url("SPENDGUARD_ANTHROPIC_API_URL", &config.anthropic_api_url)?;
        if !(1..=48).contains(&config.cost_explorer_cache_hours) {
            return Err(EnvError {
                variable: "SPENDGUARD_COST_EXPLORER_CACHE_HOURS".into(),
                message: "must be between 1 and 48".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        env_of(pairs)
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        let e = env(&[("EMPTY", "  "), ("N", "x")]);
        let err = e.required("EMPTY", "the table").unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: EMPTY: required (the table)"
        );
        let err = e.parsed::<u64>("N", 3).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("configuration: N: `x` is not valid")
        );
        assert_eq!(e.parsed::<u64>("ABSENT", 3).unwrap(), 3);
        assert!(e.flag("N").is_err());
        assert!(!e.flag("ABSENT").unwrap());
    }
}
