//! Withholding a key's secret: AWSCURRENT moves to a marker version, so applications that read
//! the secret get no key; restore moves it back, unless an operator changed it meanwhile.

use crate::ports::keys::ProviderError;
use crate::ports::secret_versions::SecretVersions;
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::keys::{is_marker, marker};

const KIND: ProviderKind = ProviderKind::SecretOnly;

fn err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable {
        provider: KIND,
        message: e.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    Restored,
    /// Already back (a repeated restore).
    AlreadyRestored,
    /// AWSCURRENT is neither a spendguard marker nor the withheld version: left as the
    /// operator set it.
    ChangedByOperator,
}

/// Withholds the secret for `incident`; returns the version that holds the key. When a
/// marker is current already (a retry, or a stop that a crash interrupted), the key's version
/// is `recorded` if spendguard noted it, else AWSPREVIOUS — never the marker itself.
pub async fn withhold(
    secrets: &dyn SecretVersions,
    arn: &str,
    incident: &str,
    recorded: Option<&str>,
) -> Result<String, ProviderError> {
    let (current, value) = secrets.current(arn).await?;
    if is_marker(&value) {
        if let Some(version) = recorded {
            return Ok(version.to_string());
        }
        return secrets
            .previous(arn)
            .await?
            .ok_or_else(|| err("withheld, but no AWSPREVIOUS version holds the key"));
    }
    // a token of its own for every withholding: Secrets Manager answers a token it has seen
    // with that version, without making it current again (a key restored, then withheld again,
    // would stay readable). A retry after a lost answer finds the marker current (above).
    let token = uuid::Uuid::new_v4().simple().to_string();
    secrets.put_current(arn, &token, &marker(incident)).await?;
    Ok(current)
}

/// Gives the key back by moving AWSCURRENT to `previous_version` — when a spendguard marker
/// is current; anything else an operator set is left alone.
pub async fn restore(
    secrets: &dyn SecretVersions,
    arn: &str,
    previous_version: &str,
) -> Result<RestoreOutcome, ProviderError> {
    let (current, value) = secrets.current(arn).await?;
    if current == previous_version {
        return Ok(RestoreOutcome::AlreadyRestored);
    }
    if !is_marker(&value) {
        return Ok(RestoreOutcome::ChangedByOperator);
    }
    secrets
        .move_current(arn, previous_version, &current)
        .await?;
    Ok(RestoreOutcome::Restored)
}
