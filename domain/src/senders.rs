//! Who may report usage for what (issue 23 part 5, review finding #15): the usage secret holds
//! either one shared list of Standard Webhooks secrets (every sender, every scope — the form
//! spendguard started with) or senders, each with its own secrets and the scope prefixes it may
//! report for, selected by the `spendguard-sender` header:
//!
//! ```json
//! {"senders": [{"id": "search-app", "secrets": ["whsec_..."], "scopes": ["openai/search"]}]}
//! ```
//!
//! A record for a scope outside its sender's prefixes refuses the whole batch (403).

use serde::Deserialize;

use crate::scope::Scope;
use crate::standard_webhooks::WebhookSecret;

/// The header that names the sender.
pub const SENDER_HEADER: &str = "spendguard-sender";
const MAX_SENDERS: usize = 1000;
const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone)]
pub struct Sender {
    pub id: String,
    pub secrets: Vec<WebhookSecret>,
    /// The scopes it may report for, and everything under them.
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone)]
pub enum UsageSenders {
    /// One list of secrets for every sender and scope.
    Shared(Vec<WebhookSecret>),
    PerSender(Vec<Sender>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSenders {
    senders: Vec<RawSender>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSender {
    id: String,
    secrets: Vec<String>,
    scopes: Vec<String>,
}

/// The id a record is remembered by (idempotency marker): a sender's record ids are its own,
/// so one sender cannot use up another's and have its usage dropped as duplicates. Sender ids
/// are `[A-Za-z0-9_-]` and record ids printable, so the unit separator (0x1F) between them is
/// unambiguous; records under the shared secrets keep their ids as they are.
pub fn usage_marker_id(sender: Option<&str>, record_id: &str) -> String {
    match sender {
        Some(sender) => format!("{sender}\u{1f}{record_id}"),
        None => record_id.to_string(),
    }
}

/// Why a request's sender is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    #[error("{SENDER_HEADER}: required (this deployment gives each sender its own secrets)")]
    Missing,
    #[error("{SENDER_HEADER}: no such sender")]
    Unknown,
}

impl UsageSenders {
    /// The secret's text: a JSON object with `senders`, or whitespace-separated secrets.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.starts_with('{') {
            return WebhookSecret::parse_list(text).map(UsageSenders::Shared);
        }
        let raw: RawSenders =
            serde_json::from_str(text).map_err(|e| format!("usage senders: {e}"))?;
        if raw.senders.is_empty() || raw.senders.len() > MAX_SENDERS {
            return Err(format!("senders: give 1 to {MAX_SENDERS} senders"));
        }
        let mut senders: Vec<Sender> = Vec::new();
        for (i, s) in raw.senders.into_iter().enumerate() {
            let at = format!("senders[{i}]");
            if s.id.is_empty()
                || s.id.len() > MAX_ID_LEN
                || !s
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{at}.id: 1 to {MAX_ID_LEN} letters, digits, `-` or `_`"
                ));
            }
            if senders.iter().any(|o| o.id == s.id) {
                return Err(format!("{at}.id: `{}` is given twice", s.id));
            }
            let secrets = WebhookSecret::parse_list(&s.secrets.join(" "))
                .map_err(|e| format!("{at}.secrets: {e}"))?;
            if s.scopes.is_empty() {
                return Err(format!(
                    "{at}.scopes: name at least one scope (`*` for all)"
                ));
            }
            let scopes = s
                .scopes
                .iter()
                .map(|t| Scope::parse(t).map_err(|e| format!("{at}.scopes: {e}")))
                .collect::<Result<_, _>>()?;
            senders.push(Sender {
                id: s.id,
                secrets,
                scopes,
            });
        }
        Ok(UsageSenders::PerSender(senders))
    }

    /// The sender a request names (`None` for shared secrets) and the secrets to verify with.
    pub fn select(
        &self,
        header: Option<&str>,
    ) -> Result<(Option<&Sender>, &[WebhookSecret]), SenderError> {
        match self {
            UsageSenders::Shared(secrets) => Ok((None, secrets)),
            UsageSenders::PerSender(senders) => {
                let id = header.ok_or(SenderError::Missing)?;
                let sender = senders
                    .iter()
                    .find(|s| s.id == id)
                    .ok_or(SenderError::Unknown)?;
                Ok((Some(sender), &sender.secrets))
            }
        }
    }
}

impl Sender {
    /// Whether it may report usage for `scope`.
    pub fn allows(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s.contains(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const B: &str = "whsec_C2FTBj9Z2v5nDPGlMj8ApVcq0dU4q8Pa";

    #[test]
    fn a_shared_list_lets_anyone_report_anything_as_before() {
        let senders = UsageSenders::parse(&format!("{A} {B}")).unwrap();
        let (sender, secrets) = senders.select(Some("whoever")).unwrap();
        assert!(sender.is_none());
        assert_eq!(secrets.len(), 2);
    }

    #[test]
    fn each_sender_has_its_secrets_and_its_scopes() {
        let text = format!(
            r#"{{"senders": [{{"id": "search", "secrets": ["{A}"], "scopes": ["openai/search", "anthropic/search"]}},
                            {{"id": "ops", "secrets": ["{B}"], "scopes": ["*"]}}]}}"#
        );
        let senders = UsageSenders::parse(&text).unwrap();
        let (search, secrets) = senders.select(Some("search")).unwrap();
        let search = search.unwrap();
        assert_eq!(secrets.len(), 1);
        assert!(search.allows(&Scope::parse("openai/search/key-1").unwrap()));
        assert!(search.allows(&Scope::parse("anthropic/search").unwrap()));
        assert!(!search.allows(&Scope::parse("openai").unwrap()));
        assert!(!search.allows(&Scope::parse("openai/searching").unwrap()));
        let (ops, _) = senders.select(Some("ops")).unwrap();
        assert!(
            ops.unwrap()
                .allows(&Scope::parse("anything/at/all").unwrap())
        );
        assert_eq!(senders.select(None).unwrap_err(), SenderError::Missing);
        assert_eq!(
            senders.select(Some("marketing")).unwrap_err(),
            SenderError::Unknown
        );
    }

    #[test]
    fn a_bad_senders_file_is_refused_naming_the_field() {
        for (text, field) in [
            (r#"{"senders": []}"#.to_string(), "senders"),
            (
                format!(r#"{{"senders": [{{"id": "a b", "secrets": ["{A}"], "scopes": ["x"]}}]}}"#),
                "senders[0].id",
            ),
            (
                format!(
                    r#"{{"senders": [{{"id": "a", "secrets": ["{A}"], "scopes": ["x"]}}, {{"id": "a", "secrets": ["{B}"], "scopes": ["y"]}}]}}"#
                ),
                "senders[1].id",
            ),
            (
                r#"{"senders": [{"id": "a", "secrets": ["nope"], "scopes": ["x"]}]}"#.to_string(),
                "senders[0].secrets",
            ),
            (
                format!(r#"{{"senders": [{{"id": "a", "secrets": ["{A}"], "scopes": []}}]}}"#),
                "senders[0].scopes",
            ),
            (
                format!(
                    r#"{{"senders": [{{"id": "a", "secrets": ["{A}"], "scopes": ["a//b"]}}]}}"#
                ),
                "senders[0].scopes",
            ),
            (
                format!(
                    r#"{{"senders": [{{"id": "a", "secrets": ["{A}"], "scopes": ["x"], "admin": true}}]}}"#
                ),
                "admin",
            ),
        ] {
            let e = UsageSenders::parse(&text).unwrap_err();
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
