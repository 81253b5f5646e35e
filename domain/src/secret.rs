//! A secret value that cannot be logged by accident, and where secrets come from.

use std::fmt;

/// Holds a secret (admin key, webhook URL). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Read from a document (a key file) straight into a `Secret`.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret may come from, as budgets files name it: a Secrets Manager ARN, a local
/// file (`file:<path>`), or a named secret of `spendguard serve` (`local:<name>`: its secrets
/// file, then the environment). Never the secret itself.
pub fn is_reference(text: &str) -> bool {
    ["arn:", "file:", "local:"]
        .iter()
        .any(|prefix| text.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format() {
        let s = Secret::new("sk-admin-very-secret");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "sk-admin-very-secret");
    }

    #[test]
    fn references_name_where_a_secret_is_never_the_secret() {
        for ok in [
            "arn:aws:secretsmanager:us-east-1:1:secret:x",
            "file:/s/x",
            "local:slack",
        ] {
            assert!(is_reference(ok), "{ok}");
        }
        for bad in [
            "https://hooks.slack.com/services/x",
            "sk-ant-admin01-x",
            "local",
            "",
        ] {
            assert!(!is_reference(bad), "{bad}");
        }
    }
}
