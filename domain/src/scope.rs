//! Scopes: where spend belongs, as a path (`openai/prod/key-7f3a`). Usage rolls up the path.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated scope path. `*` is the root that every scope rolls up to.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is empty")]
    Empty,
    #[error("scope `{0}` is longer than 200 characters")]
    TooLong(String),
    #[error(
        "scope `{0}` has an empty segment (segments are separated by a single `/`, no leading or trailing `/`)"
    )]
    EmptySegment(String),
    #[error(
        "scope `{scope}` contains `{ch}`: segments may use letters, digits, `.`, `_`, `-`, `:` and `=`"
    )]
    BadCharacter { scope: String, ch: char },
}

const MAX_LEN: usize = 200;

impl Scope {
    pub const ROOT: &'static str = "*";

    pub fn root() -> Self {
        Scope(Self::ROOT.to_string())
    }

    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        if text.is_empty() {
            return Err(ScopeError::Empty);
        }
        if text == Self::ROOT {
            return Ok(Self::root());
        }
        if text.len() > MAX_LEN {
            return Err(ScopeError::TooLong(text.to_string()));
        }
        for segment in text.split('/') {
            if segment.is_empty() {
                return Err(ScopeError::EmptySegment(text.to_string()));
            }
            if let Some(ch) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '=')))
            {
                return Err(ScopeError::BadCharacter {
                    scope: text.to_string(),
                    ch,
                });
            }
        }
        Ok(Scope(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == Self::ROOT
    }

    /// The first segment: the provider for `openai/prod/key`, `*` for the root.
    pub fn provider(&self) -> &str {
        self.0.split('/').next().unwrap_or(Self::ROOT)
    }

    /// A dimension scope (`_model/openai:gpt-4o`, `_user/u-42`): spend by model, user,
    /// feature or endpoint across all scopes. It rolls up to nothing (it would count twice).
    pub fn is_dimension(&self) -> bool {
        self.0.starts_with('_')
    }

    /// The dimension scope `_<dimension>/<value>`, with the value made a valid segment
    /// (other characters become `-`, at most 64 characters). `None` for an empty value.
    pub fn dimension(dimension: &str, value: &str) -> Option<Scope> {
        let clean: String = value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '=') {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        let clean = clean.trim_matches('-');
        (!clean.is_empty()).then(|| Scope(format!("_{dimension}/{clean}")))
    }

    /// This scope and every scope it rolls up to, most specific first, ending with `*`.
    pub fn rollup(&self) -> Vec<Scope> {
        if self.is_root() {
            return vec![Self::root()];
        }
        if self.is_dimension() {
            return vec![self.clone()];
        }
        let mut out = Vec::new();
        let mut path = self.0.as_str();
        loop {
            out.push(Scope(path.to_string()));
            match path.rfind('/') {
                Some(i) => path = &path[..i],
                None => break,
            }
        }
        out.push(Self::root());
        out
    }

    /// True when spend in `other` counts toward this scope.
    pub fn contains(&self, other: &Scope) -> bool {
        self.is_root()
            || other.0 == self.0
            || (other.0.starts_with(&self.0) && other.0.as_bytes().get(self.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({})", self.0)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Scope {
        Scope::parse(text).unwrap()
    }

    #[test]
    fn rollup_goes_key_project_provider_root() {
        let names: Vec<String> = s("openai/prod/key-7f3a")
            .rollup()
            .iter()
            .map(|x| x.to_string())
            .collect();
        assert_eq!(
            names,
            ["openai/prod/key-7f3a", "openai/prod", "openai", "*"]
        );
        assert_eq!(s("*").rollup(), vec![Scope::root()]);
    }

    #[test]
    fn containment_respects_segment_boundaries() {
        assert!(s("openai/prod").contains(&s("openai/prod/key-1")));
        assert!(s("openai/prod").contains(&s("openai/prod")));
        assert!(!s("openai/prod").contains(&s("openai/production")));
        assert!(!s("openai/prod/key-1").contains(&s("openai/prod")));
        assert!(s("*").contains(&s("aws/123456789012")));
    }

    #[test]
    fn invalid_scopes_are_refused_with_the_reason() {
        assert_eq!(Scope::parse(""), Err(ScopeError::Empty));
        assert!(matches!(
            Scope::parse("openai//x"),
            Err(ScopeError::EmptySegment(_))
        ));
        assert!(matches!(
            Scope::parse("/openai"),
            Err(ScopeError::EmptySegment(_))
        ));
        assert!(matches!(
            Scope::parse("openai/pr od"),
            Err(ScopeError::BadCharacter { ch: ' ', .. })
        ));
        assert!(matches!(
            Scope::parse("SPEND#x"),
            Err(ScopeError::BadCharacter { ch: '#', .. })
        ));
        assert!(matches!(
            Scope::parse(&"a".repeat(201)),
            Err(ScopeError::TooLong(_))
        ));
    }

    #[test]
    fn dimension_scopes_are_clean_and_do_not_roll_up() {
        let m = Scope::dimension("model", "openai:gpt-4o-2024-08-06").unwrap();
        assert_eq!(m.as_str(), "_model/openai:gpt-4o-2024-08-06");
        assert_eq!(m.rollup(), vec![m.clone()]);
        assert_eq!(
            Scope::dimension("user", "ana@example.com")
                .unwrap()
                .as_str(),
            "_user/ana-example.com"
        );
        assert_eq!(
            Scope::dimension("endpoint", "/v1/chat").unwrap().as_str(),
            "_endpoint/v1-chat"
        );
        assert_eq!(Scope::dimension("user", "///"), None);
        assert!(
            Scope::parse(m.as_str()).is_ok(),
            "a dimension scope is a valid scope"
        );
    }

    #[test]
    fn provider_is_the_first_segment() {
        assert_eq!(s("anthropic/ws-1/key").provider(), "anthropic");
        assert_eq!(s("*").provider(), "*");
    }
}
