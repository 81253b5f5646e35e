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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env(move |k: &str| map.get(k).cloned())
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
