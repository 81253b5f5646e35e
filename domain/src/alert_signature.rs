//! Signed alerts (issue 23): every AlertEvent spendguard publishes carries an HMAC-SHA256 of
//! its exact message under a key only spendguard's functions can read, as the SNS message
//! attribute [`SIGNATURE_ATTRIBUTE`] (`v1,<base64>`). key-guard and fan-out act only on a
//! message whose signature verifies, so a principal that can publish to the alerts topic still
//! cannot order a kill or page anyone. Several keys may be configured, separated by whitespace:
//! the first signs, any verifies (a rotation).

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The SNS message attribute that carries the signature.
pub const SIGNATURE_ATTRIBUTE: &str = "spendguard_signature";
/// The shortest key accepted, in bytes: a generated 64-character key has 64.
pub const MIN_KEY_BYTES: usize = 32;
const VERSION: &str = "v1,";
/// Domain separation: a tag made for something else never verifies as an alert's.
const CONTEXT: &[u8] = b"spendguard-alert.v1.";

/// The alert-signing keys. Never printed.
#[derive(Clone)]
pub struct AlertKey(Vec<hmac::Key>);

impl fmt::Debug for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AlertKey(***)")
    }
}

/// Why a message's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{SIGNATURE_ATTRIBUTE}: missing (the message was not published by spendguard)")]
    Missing,
    #[error("{SIGNATURE_ATTRIBUTE}: not `v1,<base64 HMAC-SHA256>`")]
    Malformed,
    #[error("{SIGNATURE_ATTRIBUTE}: does not match the message (forged or altered)")]
    Mismatch,
}

impl AlertKey {
    /// The keys in a secret: whitespace-separated, each at least [`MIN_KEY_BYTES`] long.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let keys: Vec<hmac::Key> = secret
            .split_whitespace()
            .map(|k| {
                if k.len() < MIN_KEY_BYTES {
                    Err(format!(
                        "an alert-signing key must hold at least {MIN_KEY_BYTES} bytes (one has {})",
                        k.len()
                    ))
                } else {
                    Ok(hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes()))
                }
            })
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err("the alert-signing secret holds no key".into());
        }
        Ok(AlertKey(keys))
    }

    fn content(message: &str) -> Vec<u8> {
        let mut content = CONTEXT.to_vec();
        content.extend_from_slice(message.as_bytes());
        content
    }

    /// The signature of `message` under the first key.
    pub fn sign(&self, message: &str) -> String {
        let tag = hmac::sign(&self.0[0], &Self::content(message));
        format!("{VERSION}{}", STANDARD.encode(tag.as_ref()))
    }

    /// Whether `signature` is `message`'s under any of the keys (constant-time comparison).
    pub fn verify(&self, message: &str, signature: Option<&str>) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing)?;
        let tag = signature
            .strip_prefix(VERSION)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or(SignatureError::Malformed)?;
        let content = Self::content(message);
        if self
            .0
            .iter()
            .any(|key| hmac::verify(key, &content, &tag).is_ok())
        {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "k3y-0123456789abcdef0123456789abcdef";
    const OLD: &str = "old-0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_message_verifies_and_nothing_else_does() {
        let key = AlertKey::parse(KEY).unwrap();
        let message = r#"{"kind":"budget","scope":"openai/prod","actions":["disable_keys"]}"#;
        let signature = key.sign(message);
        assert!(signature.starts_with("v1,"));
        assert_eq!(key.verify(message, Some(&signature)), Ok(()));
        assert_eq!(key.verify(message, None), Err(SignatureError::Missing));
        assert_eq!(
            key.verify(message, Some("v1,not base64!")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            key.verify(message, Some(&signature.replace("v1,", "v2,"))),
            Err(SignatureError::Malformed)
        );
        let altered = message.replace("openai/prod", "*");
        assert_eq!(
            key.verify(&altered, Some(&signature)),
            Err(SignatureError::Mismatch)
        );
        let other = AlertKey::parse(&KEY.replace('k', "K")).unwrap();
        assert_eq!(
            other.verify(message, Some(&signature)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn during_a_rotation_the_new_key_signs_and_both_verify() {
        let old = AlertKey::parse(OLD).unwrap();
        let rotating = AlertKey::parse(&format!("{KEY}\n{OLD}")).unwrap();
        let message = "{}";
        assert_eq!(rotating.verify(message, Some(&old.sign(message))), Ok(()));
        assert_eq!(
            old.verify(message, Some(&rotating.sign(message))),
            Err(SignatureError::Mismatch),
            "the first key signs"
        );
    }

    #[test]
    fn short_or_empty_keys_are_refused_and_never_printed() {
        assert!(
            AlertKey::parse("short")
                .unwrap_err()
                .contains("at least 32 bytes")
        );
        assert!(AlertKey::parse(" \n").unwrap_err().contains("no key"));
        assert_eq!(
            format!("{:?}", AlertKey::parse(KEY).unwrap()),
            "AlertKey(***)"
        );
    }

    proptest! {
        /// Any change to a signed message, or to its signature, is refused.
        #[test]
        fn every_one_byte_change_is_refused(message in "[ -~]{1,200}", at in any::<prop::sample::Index>(), byte in 32u8..127) {
            let key = AlertKey::parse(KEY).unwrap();
            let signature = key.sign(&message);
            let mut bytes = message.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let altered = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(key.verify(&altered, Some(&signature)), Err(SignatureError::Mismatch));
        }
    }
}
