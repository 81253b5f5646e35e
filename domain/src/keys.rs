//! The keys that cost money: the registry (what each key is and where it lives), the provider
//! adapters that disable and re-enable them, and withholding a key's secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::scope::Scope;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Anthropic admin API: status `inactive` / `active` (reversible).
    Anthropic,
    /// OpenAI admin API: keys can only be deleted (permanent, opt-in); the secret is withheld.
    Openai,
    /// AWS IAM access keys: `Inactive` / `Active` (reversible).
    AwsIam,
    /// No provider call: the secret is withheld from applications.
    SecretOnly,
}

impl ProviderKind {
    pub const NAMES: &'static str = "anthropic, openai, aws_iam, secret_only";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "anthropic" => ProviderKind::Anthropic,
            "openai" => ProviderKind::Openai,
            "aws_iam" => ProviderKind::AwsIam,
            "secret_only" => ProviderKind::SecretOnly,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
            ProviderKind::AwsIam => "aws_iam",
            ProviderKind::SecretOnly => "secret_only",
        }
    }

    /// Whether the provider itself can disable the key and enable it again.
    pub fn reversible_at_provider(&self) -> bool {
        matches!(self, ProviderKind::Anthropic | ProviderKind::AwsIam)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a key's secret is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationStrategy {
    /// A secret spendguard owns (a `whsec_` signing secret): generated, tested by a signed round trip.
    Generated,
    /// A provider key an operator staged (version stage `SPENDGUARD_STAGED`): tested with a cheap
    /// authenticated call; the previous key is disabled at the provider afterwards.
    Staged,
}

/// A key as the budgets file declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    pub id: String,
    pub provider: ProviderKind,
    pub scope: Scope,
    /// The Secrets Manager secret applications read the key from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// The provider's id of the key (Anthropic key id, OpenAI key id, IAM access key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// OpenAI project of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// IAM user owning the access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStrategy>,
    /// OpenAI only: delete the key in an emergency (permanent: it cannot be restored).
    #[serde(default)]
    pub allow_delete: bool,
}

/// Something spendguard did to stop a key, so that restore undoes exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "measure")]
pub enum Measure {
    /// Disabled at the provider.
    ProviderDisabled,
    /// AWSCURRENT moved to a marker version; `previous_version` held the key.
    SecretWithheld { previous_version: String },
    /// Deleted at the provider (OpenAI, opt-in): permanent.
    ProviderDeleted,
    /// The key was off at its provider before the stop (a person switched it off): the stop
    /// took the other measures only, and the restore leaves the key off.
    ProviderAlreadyOff,
    /// The IAM user's service-specific credentials (Amazon Bedrock API keys) that were active,
    /// set Inactive. Recorded before they are changed, so a restore turns back exactly these.
    ServiceCredentialsDisabled { ids: Vec<String> },
    /// The IAM user's requests signed with a token issued before `before` (sessions made from
    /// the key before it was stopped) denied by the inline policy `policy`.
    SessionsRevoked {
        policy: String,
        before: DateTime<Utc>,
    },
}

/// The inline policy that denies an IAM user's sessions older than the stop of `access_key_id`:
/// one per key, so that restoring one of a user's keys leaves another key's stop in force.
pub fn session_deny_policy(access_key_id: &str) -> String {
    format!("spendguard-revoke-sessions-{access_key_id}")
}

/// What spendguard knows of a key. Every change is a compare-and-set on its version; an
/// intent (`Disabling`, `Enabling`) is written before each provider call, so a retry after a
/// crash knows what may have happened at the provider. Transitions: `docs/keys.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum KeyStatus {
    Active,
    /// Intent: spendguard is stopping the key for `incidents`; `measures` are done so far.
    Disabling {
        incidents: Vec<String>,
        at: DateTime<Utc>,
        #[serde(default)]
        measures: Vec<Measure>,
    },
    /// Stopped by spendguard and held by `incidents` (one per engaged switch that covers
    /// it): the last restore to release it undoes the measures.
    DisabledBySpendguard {
        #[serde(alias = "incident", deserialize_with = "one_or_many")]
        incidents: Vec<String>,
        at: DateTime<Utc>,
        measures: Vec<Measure>,
    },
    /// Intent: spendguard is re-enabling the key (undoing `measures`).
    Enabling {
        at: DateTime<Utc>,
        measures: Vec<Measure>,
    },
    /// Already disabled by someone else when spendguard looked: never re-enabled by spendguard.
    DisabledElsewhere {
        seen_at: DateTime<Utc>,
    },
}

/// What releasing some incidents leaves of a key's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Not spendguard's to re-enable (active, or disabled by someone else).
    NotHeld,
    /// Other incidents still hold it: the status with only those.
    StillHeld(KeyStatus),
    /// No incident holds it any more: undo `measures`. `unfinished`: a stop that never
    /// recorded its end, so measures not recorded may have been taken too.
    Last {
        measures: Vec<Measure>,
        unfinished: bool,
    },
}

impl KeyStatus {
    /// The status once `released` no longer hold the key, at `now`.
    pub fn release(&self, released: &[String], now: DateTime<Utc>) -> Release {
        let (incidents, measures, unfinished) = match self {
            KeyStatus::Active | KeyStatus::DisabledElsewhere { .. } => return Release::NotHeld,
            KeyStatus::Enabling { measures, .. } => {
                return Release::Last {
                    measures: measures.clone(),
                    unfinished: false,
                };
            }
            KeyStatus::DisabledBySpendguard {
                incidents,
                measures,
                ..
            } => (incidents, measures, false),
            KeyStatus::Disabling {
                incidents,
                measures,
                ..
            } => (incidents, measures, true),
        };
        let remaining: Vec<String> = incidents
            .iter()
            .filter(|i| !released.contains(i))
            .cloned()
            .collect();
        let measures = measures.clone();
        match (remaining.is_empty(), unfinished) {
            (true, _) => Release::Last {
                measures,
                unfinished,
            },
            // a stop still under way is finished by the incidents that remain
            (false, true) => Release::StillHeld(KeyStatus::Disabling {
                incidents: remaining,
                at: now,
                measures,
            }),
            (false, false) => Release::StillHeld(KeyStatus::DisabledBySpendguard {
                incidents: remaining,
                at: now,
                measures,
            }),
        }
    }

    /// The incidents that hold the key (stopping it or stopped).
    pub fn holders(&self) -> &[String] {
        match self {
            KeyStatus::Disabling { incidents, .. }
            | KeyStatus::DisabledBySpendguard { incidents, .. } => incidents,
            _ => &[],
        }
    }
}

/// An incident list written by this version, or the single `incident` older ones wrote.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A registered key and what spendguard knows of its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub spec: KeySpec,
    pub status: KeyStatus,
    /// The status's version, for compare-and-set (`StateStore::put_key_status`).
    #[serde(default)]
    pub version: u64,
}

/// A candidate credential a rotation tests: the new key's value.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The provider's id of the new key, when the secret names it.
    pub key_id: Option<String>,
    pub secret: Secret,
    /// AWS: the secret access key that goes with `key_id` (the access key id).
    pub aws_secret: Option<Secret>,
}

impl Credential {
    /// Reads a key secret: JSON `{"key_id", "api_key"}` / `{"access_key_id", "secret_access_key"}`,
    /// or the bare key.
    pub fn parse(value: &Secret) -> Credential {
        let json: Option<serde_json::Value> = serde_json::from_str(value.expose()).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        if let (Some(id), Some(secret)) = (field("access_key_id"), field("secret_access_key")) {
            return Credential {
                key_id: Some(id.clone()),
                secret: Secret::new(id),
                aws_secret: Some(Secret::new(secret)),
            };
        }
        match field("api_key") {
            Some(key) => Credential {
                key_id: field("key_id"),
                secret: Secret::new(key),
                aws_secret: None,
            },
            None => Credential {
                key_id: None,
                secret: value.clone(),
                aws_secret: None,
            },
        }
    }
}

const MARKER_PREFIX: &str = "SPENDGUARD-WITHHELD";

/// The value applications see while a key is withheld.
pub fn marker(incident: &str) -> String {
    format!("{MARKER_PREFIX} incident={incident}")
}

/// Whether `value` is a marker spendguard wrote (for any incident): never a key.
pub fn is_marker(value: &str) -> bool {
    value.starts_with(MARKER_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_last_release_frees_a_key() {
        let stopped = KeyStatus::DisabledBySpendguard {
            incidents: ids(&["org", "team"]),
            at: at(),
            measures: vec![Measure::ProviderDisabled],
        };
        assert_eq!(
            stopped.release(&ids(&["team"]), at()),
            Release::StillHeld(KeyStatus::DisabledBySpendguard {
                incidents: ids(&["org"]),
                at: at(),
                measures: vec![Measure::ProviderDisabled],
            })
        );
        assert_eq!(
            stopped.release(&ids(&["team", "org"]), at()),
            Release::Last {
                measures: vec![Measure::ProviderDisabled],
                unfinished: false
            }
        );
        // a stop that never finished keeps its intent for the incidents left
        let stopping = KeyStatus::Disabling {
            incidents: ids(&["org", "team"]),
            at: at(),
            measures: Vec::new(),
        };
        assert!(matches!(
            stopping.release(&ids(&["org"]), at()),
            Release::StillHeld(KeyStatus::Disabling { incidents, .. }) if incidents == ids(&["team"])
        ));
        assert_eq!(
            stopping.release(&ids(&["org", "team"]), at()),
            Release::Last {
                measures: Vec::new(),
                unfinished: true
            }
        );
        for not_ours in [
            KeyStatus::Active,
            KeyStatus::DisabledElsewhere { seen_at: at() },
        ] {
            assert_eq!(not_ours.release(&ids(&["org"]), at()), Release::NotHeld);
        }
    }

    #[test]
    fn statuses_written_before_holder_sets_are_read() {
        let old = r#"{"status":"disabled_by_spendguard","incident":"i1","at":"2026-11-20T10:00:00Z","measures":[{"measure":"provider_disabled"}]}"#;
        let status: KeyStatus = serde_json::from_str(old).unwrap();
        assert_eq!(status.holders(), ["i1"]);
    }
}
