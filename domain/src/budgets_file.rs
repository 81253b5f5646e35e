//! The budgets file (TOML, `version = 1`): parsed with positions, validated with precise errors.
//!
//! Every error names the file, the line and column, and the field. The format is described in
//! `docs/budgets.md`; `examples/budgets.toml` is a complete example.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::Path;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use crate::budget::{Action, Basis, Budget, Severity, SourceSpec, Threshold, Tier, Window};
use crate::keys::{KeySpec, ProviderKind, RotationStrategy};
use crate::money::{Currency, FxRates, ISO_4217, parse_decimal};
use crate::period::{WindowKind, Zone};
use crate::pricing::{LongContext, Price, PriceBook};
use crate::scope::Scope;
use crate::settings::AnomalyPolicy;
use crate::settings::{
    ChannelKind, ChannelSpec, EscalationLevel, EscalationPolicy, ForecastPolicy, MAX_COUNTER_ZONES,
    PolicySet, RestorePolicy, Settings,
};
use crate::settings::{Detector, PlannedWindow, SecurityPolicy, ThreatLevel};
use crate::settings::{GcpProject, MAX_SHUTDOWN_REGIONS, ShutdownPolicy};
use chrono::{DateTime, Utc};
use chrono_tz::TZ_VARIANTS;

pub const SUPPORTED_VERSION: i64 = 1;
/// Largest limit or tier amount a budget may have: a quadrillion in its currency.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0);
/// Largest price per million tokens: a million.
pub const MAX_PRICE: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);
/// Largest prompt a long-context price may start above: far beyond any model's context.
pub const MAX_PROMPT_TOKENS: i64 = 100_000_000;
/// Largest exchange rate (and the smallest is its inverse).
pub const MAX_RATE: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// One problem in a budgets file, with its position: data for the CLI to render (one line for
/// a pipe, a snippet with a caret on a terminal, JSON for `validate --json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The bytes of the file the problem is about (empty when it is about a whole table).
    pub span: Range<usize>,
    pub field: String,
    pub message: String,
    /// A suggestion such as "did you mean `limit`?", given when a known name is close.
    pub help: Option<String>,
}

impl fmt::Display for ConfigError {
    /// `file:line:col: field: message` on one line, as editors and grep read it; the help, if
    /// any, ends the same line so that each problem stays one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "; help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in a budgets file (at least one), in the order they appear in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why a budgets file could not be loaded: unreadable (no position to give), or invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Reads and validates a budgets file.
pub fn load_budgets_file(path: &Path) -> Result<PolicySet, LoadError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Unreadable {
        file: name.clone(),
        reason: e.to_string(),
    })?;
    parse_budgets(&name, &text).map_err(LoadError::Invalid)
}

/// Parses and validates the text of a budgets file named `file` (for messages).
pub fn parse_budgets(file: &str, text: &str) -> Result<PolicySet, ConfigErrors> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let field = field_of_parse_error(&message, text, span.start);
        let help = suggestion_for_parse_error(&message);
        ConfigErrors(vec![locate(file, text, span, field, message, help)])
    })?;
    let mut v = Validator {
        file,
        text,
        errors: Vec::new(),
        capped: BTreeMap::new(),
        written_channels: BTreeSet::new(),
    };
    let set = v.policy(raw);
    if v.errors.is_empty() {
        Ok(set)
    } else {
        // found table by table; read top to bottom
        v.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(v.errors))
    }
}

fn locate(
    file: &str,
    text: &str,
    span: Range<usize>,
    field: String,
    message: String,
    help: Option<String>,
) -> ConfigError {
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError {
        file: file.to_string(),
        line,
        column,
        span: start..span.end.clamp(start, text.len()),
        field,
        message,
        help,
    }
}

/// The known name closest to what was written, if it is close enough to be a typo: cargo's
/// rule, a Damerau-Levenshtein distance (case ignored) of at most a third of the length, and
/// at least 1. The first of equally close names wins.
fn closest<'a>(written: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let written_lower = written.to_lowercase();
    let limit = (written.chars().count() / 3).max(1);
    known
        .into_iter()
        .filter(|k| *k != written)
        .map(|k| {
            (
                strsim::damerau_levenshtein(&written_lower, &k.to_lowercase()),
                k,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn did_you_mean<'a>(written: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(written, known).map(|k| format!("did you mean `{k}`?"))
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a` or `b`"): the
/// expected name closest to `x`.
fn suggestion_for_parse_error(message: &str) -> Option<String> {
    let rest = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))?;
    let (written, expected) = rest.split_once('`')?;
    let (_, names) = expected.split_once("expected")?;
    did_you_mean(written, names.split('`').skip(1).step_by(2))
}

/// The field a serde error is about: the backticked name of an unknown or missing field,
/// otherwise the key being assigned at the error's position.
fn field_of_parse_error(message: &str, text: &str, offset: usize) -> String {
    for prefix in [
        "unknown field `",
        "missing field `",
        "duplicate key `",
        "duplicate field `",
    ] {
        if let Some(rest) = message.split(prefix).nth(1)
            && let Some(name) = rest.split('`').next()
        {
            return name.to_string();
        }
    }
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let upto = &text[line_start..offset];
    if let Some(eq) = upto.rfind('=') {
        let key: String = upto[..eq]
            .trim_end()
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '.'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !key.is_empty() {
            return key.trim_matches('"').to_string();
        }
    }
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return line.trim_matches(|c| c == '[' || c == ']').to_string();
    }
    "file".to_string()
}

// ---------------------------------------------------------------------------------------------
// Raw shapes, as written in the file, with positions.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Spanned<i64>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    forecast: Option<RawForecast>,
    #[serde(default)]
    currency_rates: BTreeMap<Spanned<String>, Spanned<Amount>>,
    #[serde(default)]
    channels: BTreeMap<Spanned<String>, RawChannel>,
    #[serde(default)]
    routing: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    prices: BTreeMap<Spanned<String>, RawPrice>,
    #[serde(default)]
    escalation: Option<RawEscalation>,
    #[serde(default)]
    restore: Option<RawRestore>,
    #[serde(default)]
    anomaly: Option<RawAnomaly>,
    #[serde(default)]
    security: Option<RawSecurity>,
    #[serde(default)]
    shutdown: Option<RawShutdown>,
    #[serde(default)]
    budget: Vec<Spanned<RawBudget>>,
    #[serde(default)]
    key: Vec<Spanned<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnomaly {
    cost_factor: Option<Spanned<Number>>,
    requests_factor: Option<Spanned<Number>>,
    tokens_factor: Option<Spanned<Number>>,
    min_history_days: Option<Spanned<i64>>,
    min_daily_cost: Option<Spanned<Amount>>,
    min_daily_requests: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    enabled: Option<bool>,
    spike_factor: Option<Spanned<Number>>,
    burst_per_minute: Option<Spanned<i64>>,
    min_history_days: Option<Spanned<i64>>,
    baseline_days: Option<Spanned<i64>>,
    dormant_days: Option<Spanned<i64>>,
    min_hourly_cost: Option<Spanned<Amount>>,
    min_hourly_requests: Option<Spanned<i64>>,
    min_hourly_tokens: Option<Spanned<i64>>,
    provider_lateness_hours: Option<Spanned<i64>>,
    unreported_ratio: Option<Spanned<Number>>,
    min_unreported_cost: Option<Spanned<Amount>>,
    price_book_drift_ratio: Option<Spanned<Number>>,
    currency: Option<Spanned<String>>,
    #[serde(default)]
    levels: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    actions: BTreeMap<Spanned<String>, Vec<Spanned<RawAction>>>,
    #[serde(default)]
    planned: Vec<Spanned<RawPlanned>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlanned {
    key: Spanned<String>,
    from: Spanned<String>,
    to: Spanned<String>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    #[serde(default)]
    regions: Vec<Spanned<String>>,
    #[serde(default)]
    deny_roles: Vec<Spanned<String>>,
    #[serde(default)]
    gcp: Vec<Spanned<RawGcpProject>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGcpProject {
    project: Spanned<String>,
    scope: Spanned<String>,
    #[serde(default)]
    unlink_billing: bool,
    #[serde(default)]
    service_accounts: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    steps: Spanned<Vec<Number>>,
    step_minutes: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: Spanned<String>,
    provider: Spanned<String>,
    scope: Spanned<String>,
    secret: Option<Spanned<String>>,
    key_id: Option<Spanned<String>>,
    project_id: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    rotation: Option<Spanned<String>>,
    #[serde(default)]
    allow_delete: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    levels: Vec<Spanned<RawEscalationLevel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalationLevel {
    after_minutes: Spanned<i64>,
    channels: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    currency: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    runbook_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForecast {
    min_elapsed_percent: Option<Spanned<Number>>,
    max_multiple_of_limit: Option<Spanned<Number>>,
    recent_weight: Option<Spanned<Number>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    kind: Spanned<String>,
    secret: Option<Spanned<String>>,
    digest_minutes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    currency: Option<Spanned<String>>,
    input: Spanned<Amount>,
    output: Spanned<Amount>,
    cached_input: Option<Spanned<Amount>>,
    cache_write: Option<Spanned<Amount>>,
    batch_percent: Option<Spanned<Number>>,
    long_context: Option<RawLongContext>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLongContext {
    above_input_tokens: Spanned<i64>,
    input: Spanned<Amount>,
    output: Spanned<Amount>,
    cached_input: Option<Spanned<Amount>>,
    cache_write: Option<Spanned<Amount>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    id: Spanned<String>,
    description: Option<String>,
    scope: Spanned<String>,
    currency: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    source: Option<Spanned<RawSource>>,
    routing: Option<BTreeMap<Spanned<String>, Vec<Spanned<String>>>>,
    #[serde(default)]
    window: Vec<Spanned<RawWindow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Spanned<String>,
    budget_name: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    project_id: Option<Spanned<String>>,
    workspace_id: Option<Spanned<String>>,
    budget_id: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    period: Spanned<String>,
    /// The length of a `rolling` window.
    minutes: Option<Spanned<i64>>,
    limit: Spanned<Amount>,
    #[serde(default)]
    tiers: Vec<Spanned<RawTier>>,
    provider_cap: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: Spanned<String>,
    percent: Option<Spanned<Number>>,
    amount: Option<Spanned<Amount>>,
    basis: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    actions: Option<Vec<Spanned<RawAction>>>,
}

/// Money in the file: a decimal string or an integer. Floats are refused: binary floats
/// cannot hold most cent amounts exactly.
struct Amount(Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an amount as a string (\"12.50\") or an integer (2000)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Amount, E> {
                parse_decimal(s)
                    .map(Amount)
                    .map_err(|_| E::custom(format!("`{s}` is not a decimal amount")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "write fractional money as a string (\"{v}\"), not a float: floats are inexact"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A plain number (percent, factor): string, integer or float, read from its shortest text.
struct Number(Decimal);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Number, E> {
                parse_decimal(s)
                    .map(Number)
                    .map_err(|_| E::custom(format!("`{s}` is not a number")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(Decimal::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(Decimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                if !v.is_finite() {
                    return Err(E::custom("must be a finite number"));
                }
                parse_decimal(&v.to_string())
                    .map(Number)
                    .map_err(|_| E::custom(format!("`{v}` is out of range")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"notify"`, `"disable_keys"`, `"shutdown"` or `{ reduce_limits = 0.1 }`.
enum RawAction {
    Named(String),
    ReduceLimits(Decimal),
}

impl<'de> Deserialize<'de> for RawAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAction;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an action: \"notify\", \"disable_keys\", \"shutdown\" or { reduce_limits = <factor> }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawAction, E> {
                Ok(RawAction::Named(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawAction, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("an empty table is not an action"));
                };
                if key != "reduce_limits" {
                    return Err(de::Error::custom(format!(
                        "unknown action `{key}`: the only action with a value is {{ reduce_limits = <factor> }}"
                    )));
                }
                let factor: Number = map.next_value()?;
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "unexpected `{extra}` beside reduce_limits"
                    )));
                }
                Ok(RawAction::ReduceLimits(factor.0))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: raw shapes -> domain, collecting every error with its position.

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<ConfigError>,
    /// Provider limits kept by a budget so far (`provider_cap`): limit id -> budget id.
    capped: BTreeMap<String, String>,
    /// Every channel name the file defines, valid or not: a name used elsewhere that is here
    /// but failed has its own error, and is not reported again where it is used.
    written_channels: BTreeSet<String>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        self.error_with_help(span, field, message, None);
    }

    fn error_with_help(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.errors.push(locate(
            self.file,
            self.text,
            span,
            field.into(),
            message.into(),
            help,
        ));
    }

    fn policy(&mut self, raw: RawFile) -> PolicySet {
        if *raw.version.get_ref() != SUPPORTED_VERSION {
            self.error(
                raw.version.span(),
                "version",
                format!(
                    "unsupported version {}: this spendguard reads version {SUPPORTED_VERSION}",
                    raw.version.get_ref()
                ),
            );
        }
        let default_currency = match raw.defaults.currency {
            Some(c) => self
                .currency(&c, "defaults.currency")
                .unwrap_or(Currency::USD),
            None => Currency::USD,
        };
        let default_zone = match raw.defaults.timezone {
            Some(z) => self.zone(&z, "defaults.timezone").unwrap_or(Zone::UTC),
            None => Zone::UTC,
        };
        let forecast = raw.forecast.map(|f| self.forecast(f)).unwrap_or_default();
        let rates = self.rates(raw.currency_rates);
        self.written_channels = raw.channels.keys().map(|k| k.get_ref().clone()).collect();
        let channels = self.channels(raw.channels);
        let default_routing = self.routing(raw.routing, &channels, "routing");
        let prices = self.prices(raw.prices, default_currency);
        let escalation = raw
            .escalation
            .map(|e| self.escalation(e, &channels))
            .unwrap_or_default();
        let runbook_url = raw.defaults.runbook_url.and_then(|u| {
            if u.get_ref().starts_with("https://") {
                Some(u.into_inner())
            } else {
                self.error(u.span(), "defaults.runbook_url", "must be an https URL");
                None
            }
        });

        let mut ids = BTreeSet::new();
        let mut budgets: Vec<Budget> = Vec::new();
        let mut zones = BTreeSet::from([Zone::UTC]);
        for rb in raw.budget {
            let span = rb.span();
            let rb = rb.into_inner();
            if !ids.insert(rb.id.get_ref().clone()) {
                self.error(
                    rb.id.span(),
                    "budget.id",
                    format!("budget id `{}` is used twice", rb.id.get_ref()),
                );
            }
            if let Some(b) = self.budget(
                rb,
                span.clone(),
                default_currency,
                default_zone,
                &default_routing,
                &channels,
            ) {
                if zones.insert(b.zone) && zones.len() > MAX_COUNTER_ZONES {
                    self.error(
                        span,
                        format!("budget[{}].timezone", b.id),
                        format!(
                            "`{}` would be time zone number {} across the budgets (UTC included); at most {MAX_COUNTER_ZONES}: each usage record updates its counters once per zone, and one record's counters must fit one transaction",
                            b.zone,
                            zones.len()
                        ),
                    );
                }
                budgets.push(b);
            }
        }
        let restore = raw.restore.map(|r| self.restore(r)).unwrap_or_default();
        let shutdown = raw.shutdown.map(|r| self.shutdown(r)).unwrap_or_default();
        let anomaly = raw.anomaly.map(|a| self.anomaly(a)).unwrap_or_default();
        let mut key_ids = BTreeSet::new();
        let mut keys = Vec::new();
        for rk in raw.key {
            if !key_ids.insert(rk.get_ref().id.get_ref().clone()) {
                self.error(
                    rk.get_ref().id.span(),
                    "key.id",
                    format!("key id `{}` is used twice", rk.get_ref().id.get_ref()),
                );
                continue;
            }
            if let Some(k) = self.key(rk.into_inner()) {
                keys.push(k);
            }
        }
        let security = raw
            .security
            .map(|r| self.security(r, &keys, &key_ids))
            .unwrap_or_default();

        PolicySet {
            settings: Settings {
                channels,
                prices,
                rates,
                forecast,
                escalation,
                runbook_url,
                restore,
                routing: default_routing.clone(),
                anomaly,
                security,
                shutdown,
            },
            budgets,
            keys,
        }
    }

    fn currency(&mut self, c: &Spanned<String>, field: &str) -> Option<Currency> {
        match Currency::parse(c.get_ref()) {
            Ok(c) => Some(c),
            Err(e) => {
                let help = did_you_mean(c.get_ref(), ISO_4217.iter().copied());
                self.error_with_help(c.span(), field, e.to_string(), help);
                None
            }
        }
    }

    fn zone(&mut self, z: &Spanned<String>, field: &str) -> Option<Zone> {
        match Zone::parse(z.get_ref()) {
            Ok(z) => Some(z),
            Err(e) => {
                let help = did_you_mean(z.get_ref(), TZ_VARIANTS.iter().map(|tz| tz.name()));
                self.error_with_help(z.span(), field, e, help);
                None
            }
        }
    }

    fn forecast(&mut self, raw: RawForecast) -> ForecastPolicy {
        let mut p = ForecastPolicy::default();
        if let Some(v) = raw.min_elapsed_percent {
            if v.get_ref().0 < Decimal::ZERO || v.get_ref().0 >= Decimal::ONE_HUNDRED {
                self.error(
                    v.span(),
                    "forecast.min_elapsed_percent",
                    "must be at least 0 and below 100",
                );
            }
            p.min_elapsed_percent = v.get_ref().0;
        }
        if let Some(v) = raw.max_multiple_of_limit {
            if v.get_ref().0 < Decimal::ONE {
                self.error(
                    v.span(),
                    "forecast.max_multiple_of_limit",
                    "must be at least 1",
                );
            }
            p.max_multiple_of_limit = v.get_ref().0;
        }
        if let Some(v) = raw.recent_weight {
            if v.get_ref().0 < Decimal::ZERO || v.get_ref().0 > Decimal::ONE {
                self.error(
                    v.span(),
                    "forecast.recent_weight",
                    "must be between 0 and 1",
                );
            }
            p.recent_weight = v.get_ref().0;
        }
        p
    }

    fn rates(&mut self, raw: BTreeMap<Spanned<String>, Spanned<Amount>>) -> FxRates {
        let mut rates = FxRates::default();
        for (pair, rate) in raw {
            let field = format!("currency_rates.\"{}\"", pair.get_ref());
            let Some((from, to)) = pair.get_ref().split_once('/') else {
                self.error(
                    pair.span(),
                    field,
                    "a rate key is FROM/TO, for example \"EUR/USD\"",
                );
                continue;
            };
            let (from, to) = match (Currency::parse(from), Currency::parse(to)) {
                (Ok(f), Ok(t)) => (f, t),
                (Err(e), _) | (_, Err(e)) => {
                    self.error(pair.span(), field, e.to_string());
                    continue;
                }
            };
            let r = rate.get_ref().0;
            if r <= Decimal::ZERO || r > MAX_RATE || r < Decimal::ONE / MAX_RATE {
                self.error(
                    rate.span(),
                    field,
                    format!(
                        "a rate must be between {} and {MAX_RATE} (got {r})",
                        Decimal::ONE / MAX_RATE
                    ),
                );
                continue;
            }
            rates.insert(from, to, rate.get_ref().0);
        }
        rates
    }

    fn channels(
        &mut self,
        raw: BTreeMap<Spanned<String>, RawChannel>,
    ) -> BTreeMap<String, ChannelSpec> {
        let mut out = BTreeMap::new();
        for (name, ch) in raw {
            let field = format!("channels.{}", name.get_ref());
            let Some(kind) = ChannelKind::parse(ch.kind.get_ref()) else {
                let help = did_you_mean(ch.kind.get_ref(), ChannelKind::NAMES.split(", "));
                self.error_with_help(
                    ch.kind.span(),
                    format!("{field}.kind"),
                    format!(
                        "unknown channel kind `{}`: use one of {}",
                        ch.kind.get_ref(),
                        ChannelKind::NAMES
                    ),
                    help,
                );
                continue;
            };
            let secret = ch.secret.map(|s| (s.get_ref().clone(), s.span()));
            match (&secret, kind) {
                (None, k) if k != ChannelKind::Log => {
                    self.error(
                        name.span(),
                        format!("{field}.secret"),
                        "a channel needs `secret`: a Secrets Manager ARN or file:<path> holding its endpoint",
                    );
                    continue;
                }
                (Some((s, span)), _) if !crate::secret::is_reference(s) => {
                    self.error(
                        span.clone(),
                        format!("{field}.secret"),
                        "must be a Secrets Manager ARN (arn:aws:secretsmanager:...), file:<path> or local:<name> (spendguard serve); never the secret itself",
                    );
                    continue;
                }
                _ => {}
            }
            let digest_minutes = match ch.digest_minutes {
                Some(m) if !(1..=1440).contains(m.get_ref()) => {
                    self.error(
                        m.span(),
                        format!("{field}.digest_minutes"),
                        "must be between 1 and 1440 minutes",
                    );
                    continue;
                }
                Some(m) if kind == ChannelKind::Pagerduty || kind == ChannelKind::Log => {
                    self.error(
                        m.span(),
                        format!("{field}.digest_minutes"),
                        "a pagerduty or log channel takes each alert as it comes: no digest",
                    );
                    continue;
                }
                Some(m) => Some(*m.get_ref() as u32),
                None => None,
            };
            out.insert(
                name.into_inner(),
                ChannelSpec {
                    kind,
                    secret: secret.map(|(s, _)| s),
                    digest_minutes,
                },
            );
        }
        out
    }

    fn anomaly(&mut self, raw: RawAnomaly) -> AnomalyPolicy {
        let mut p = AnomalyPolicy::default();
        for (name, value, target) in [
            ("cost_factor", raw.cost_factor, &mut p.cost_factor),
            (
                "requests_factor",
                raw.requests_factor,
                &mut p.requests_factor,
            ),
            ("tokens_factor", raw.tokens_factor, &mut p.tokens_factor),
        ] {
            if let Some(v) = value {
                if v.get_ref().0 <= Decimal::ONE {
                    self.error(
                        v.span(),
                        format!("anomaly.{name}"),
                        "a factor must be above 1",
                    );
                } else {
                    *target = v.get_ref().0;
                }
            }
        }
        if let Some(v) = raw.min_history_days {
            if !(1..=365).contains(v.get_ref()) {
                self.error(
                    v.span(),
                    "anomaly.min_history_days",
                    "must be between 1 and 365",
                );
            } else {
                p.min_history_days = *v.get_ref() as u32;
                p.baseline_days = p.baseline_days.max(p.min_history_days);
            }
        }
        if let Some(v) = raw.min_daily_cost {
            p.min_daily_cost = v.get_ref().0;
        }
        if let Some(v) = raw.min_daily_requests {
            match u64::try_from(*v.get_ref()) {
                Ok(n) => p.min_daily_requests = n,
                Err(_) => self.error(
                    v.span(),
                    "anomaly.min_daily_requests",
                    "must be zero or more",
                ),
            }
        }
        p
    }

    fn action(&mut self, ra: Spanned<RawAction>, field: &str) -> Option<Action> {
        let span = ra.span();
        let action = match ra.into_inner() {
            RawAction::Named(n) => match n.as_str() {
                "notify" => Action::Notify,
                "disable_keys" => Action::DisableKeys,
                "rotate_keys" => Action::RotateKeys,
                "shutdown" => Action::Shutdown,
                "reduce_limits" => {
                    self.error(
                        span,
                        field,
                        "reduce_limits needs a factor: { reduce_limits = 0.1 }",
                    );
                    return None;
                }
                other => {
                    self.error(
                        span,
                        field,
                        format!("unknown action `{other}`: use notify, reduce_limits, rotate_keys, disable_keys or shutdown"),
                    );
                    return None;
                }
            },
            RawAction::ReduceLimits(factor) => {
                if factor <= Decimal::ZERO || factor >= Decimal::ONE {
                    self.error(
                        span,
                        field,
                        format!("reduce_limits factor must be above 0 and below 1 (got {factor})"),
                    );
                    return None;
                }
                Action::ReduceLimits { factor }
            }
        };
        Some(action)
    }

    /// A whole number in `range`, or an error naming `field`.
    fn count(&mut self, v: &Spanned<i64>, field: &str, range: RangeInclusive<i64>) -> Option<i64> {
        if range.contains(v.get_ref()) {
            Some(*v.get_ref())
        } else {
            self.error(
                v.span(),
                field,
                format!("must be between {} and {}", range.start(), range.end()),
            );
            None
        }
    }

    fn security(
        &mut self,
        raw: RawSecurity,
        keys: &[KeySpec],
        written_keys: &BTreeSet<String>,
    ) -> SecurityPolicy {
        let mut p = SecurityPolicy::default();
        if let Some(enabled) = raw.enabled {
            p.enabled = enabled;
        }
        for (value, name, target) in [
            (raw.spike_factor, "spike_factor", &mut p.spike_factor),
            (
                raw.unreported_ratio,
                "unreported_ratio",
                &mut p.unreported_ratio,
            ),
            (
                raw.price_book_drift_ratio,
                "price_book_drift_ratio",
                &mut p.price_book_drift_ratio,
            ),
        ] {
            let Some(v) = value else { continue };
            if v.get_ref().0 <= Decimal::ONE {
                self.error(
                    v.span(),
                    format!("security.{name}"),
                    "a factor must be above 1",
                );
            } else {
                *target = v.get_ref().0;
            }
        }
        let mut count = |v: Option<Spanned<i64>>, name: &str, range: RangeInclusive<i64>| {
            v.and_then(|v| self.count(&v, &format!("security.{name}"), range))
        };
        if let Some(n) = count(raw.burst_per_minute, "burst_per_minute", 1..=1_000_000) {
            p.burst_per_minute = n as u64;
        }
        if let Some(n) = count(raw.min_history_days, "min_history_days", 1..=56) {
            p.min_history_days = n as u32;
        }
        if let Some(n) = count(raw.baseline_days, "baseline_days", 1..=56) {
            p.baseline_days = n as u32;
        }
        if let Some(n) = count(raw.dormant_days, "dormant_days", 1..=56) {
            p.dormant_days = n as u32;
        }
        if let Some(n) = count(
            raw.min_hourly_requests,
            "min_hourly_requests",
            0..=1_000_000_000,
        ) {
            p.min_hourly_requests = n as u64;
        }
        if let Some(n) = count(
            raw.min_hourly_tokens,
            "min_hourly_tokens",
            0..=1_000_000_000_000,
        ) {
            p.min_hourly_tokens = n as u64;
        }
        if let Some(n) = count(
            raw.provider_lateness_hours,
            "provider_lateness_hours",
            1..=48,
        ) {
            p.provider_lateness_hours = n as u32;
        }
        if p.baseline_days < p.min_history_days {
            p.baseline_days = p.min_history_days;
        }
        if let Some(v) = raw.min_hourly_cost {
            p.min_hourly_cost = v.get_ref().0;
        }
        if let Some(v) = raw.min_unreported_cost {
            p.min_unreported_cost = v.get_ref().0;
        }
        if let Some(c) = raw.currency
            && let Some(c) = self.currency(&c, "security.currency")
        {
            p.currency = c;
        }
        for (name, level) in raw.levels {
            let detector = Detector::parse(name.get_ref());
            let threat = ThreatLevel::parse(level.get_ref());
            match (detector, threat) {
                (Some(d), Some(l)) => {
                    p.levels.insert(d, l);
                }
                (None, _) => self.error(
                    name.span(),
                    "security.levels",
                    format!(
                        "unknown detector `{}`: use {}",
                        name.get_ref(),
                        Detector::NAMES
                    ),
                ),
                (_, None) => self.error(
                    level.span(),
                    format!("security.levels.{}", name.get_ref()),
                    format!(
                        "unknown level `{}`: use {}",
                        level.get_ref(),
                        ThreatLevel::NAMES
                    ),
                ),
            }
        }
        for (name, list) in raw.actions {
            let Some(level) = ThreatLevel::parse(name.get_ref()) else {
                self.error(
                    name.span(),
                    "security.actions",
                    format!(
                        "unknown level `{}`: use {}",
                        name.get_ref(),
                        ThreatLevel::NAMES
                    ),
                );
                continue;
            };
            let field = format!("security.actions.{}", level.as_str());
            let mut actions = Vec::new();
            for ra in list {
                if let Some(a) = self.action(ra, &field)
                    && !actions.contains(&a)
                {
                    actions.push(a);
                }
            }
            p.actions.insert(level, actions);
        }
        for rp in raw.planned {
            let span = rp.span();
            let rp = rp.into_inner();
            if !keys.iter().any(|k| &k.id == rp.key.get_ref()) {
                // a key written but invalid has its own error
                if !written_keys.contains(rp.key.get_ref()) {
                    let help =
                        did_you_mean(rp.key.get_ref(), written_keys.iter().map(String::as_str));
                    self.error_with_help(
                        rp.key.span(),
                        "security.planned.key",
                        format!("no [[key]] with id `{}`", rp.key.get_ref()),
                        help,
                    );
                }
                continue;
            }
            let mut time = |v: &Spanned<String>, field: &str| match DateTime::parse_from_rfc3339(
                v.get_ref(),
            ) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    self.error(v.span(), field, format!("not an RFC 3339 time: {e}"));
                    None
                }
            };
            let (Some(from), Some(to)) = (
                time(&rp.from, "security.planned.from"),
                time(&rp.to, "security.planned.to"),
            ) else {
                continue;
            };
            if to <= from {
                self.error(span, "security.planned", "`to` must be after `from`");
                continue;
            }
            p.planned.push(PlannedWindow {
                key: rp.key.into_inner(),
                from,
                to,
                reason: rp.reason,
            });
        }
        p
    }

    fn shutdown(&mut self, raw: RawShutdown) -> ShutdownPolicy {
        let mut regions: Vec<String> = Vec::new();
        for region in &raw.regions {
            let name = region.get_ref();
            let problem = ShutdownPolicy::region_problem(name).or_else(|| {
                regions
                    .contains(name)
                    .then(|| format!("`{name}` is named twice"))
            });
            match problem {
                Some(p) => self.error(region.span(), "shutdown.regions", p),
                None => regions.push(name.clone()),
            }
        }
        if raw.regions.len() > MAX_SHUTDOWN_REGIONS {
            self.error(
                raw.regions[MAX_SHUTDOWN_REGIONS].span(),
                "shutdown.regions",
                format!("at most {MAX_SHUTDOWN_REGIONS} regions"),
            );
        }
        let mut deny_roles = Vec::new();
        for role in raw.deny_roles {
            // IAM's own rule for role names
            let name = role.get_ref();
            let valid = (1..=64).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
            if !valid {
                self.error(
                    role.span(),
                    "shutdown.deny_roles",
                    format!(
                        "`{name}` is not an IAM role name (1-64 of letters, digits and +=,.@_-)"
                    ),
                );
            } else if deny_roles.contains(name) {
                self.error(
                    role.span(),
                    "shutdown.deny_roles",
                    format!("`{name}` is named twice"),
                );
            } else {
                deny_roles.push(name.clone());
            }
        }
        let mut gcp: Vec<GcpProject> = Vec::new();
        for raw_project in raw.gcp {
            let span = raw_project.span();
            let rp = raw_project.into_inner();
            let id = rp.project.get_ref();
            // Google's rule for project ids
            let valid_id = (6..=30).contains(&id.len())
                && id.starts_with(|c: char| c.is_ascii_lowercase())
                && !id.ends_with('-')
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid_id {
                self.error(
                    rp.project.span(),
                    "shutdown.gcp.project",
                    format!("`{id}` is not a GCP project id (6-30 of a-z, 0-9 and -, starting with a letter)"),
                );
                continue;
            }
            if gcp.iter().any(|p| &p.project == id) {
                self.error(
                    rp.project.span(),
                    "shutdown.gcp.project",
                    format!("`{id}` is named twice"),
                );
                continue;
            }
            let scope = match Scope::parse(rp.scope.get_ref()) {
                Ok(s) => s,
                Err(e) => {
                    self.error(rp.scope.span(), "shutdown.gcp.scope", e.to_string());
                    continue;
                }
            };
            let mut accounts = Vec::new();
            for account in rp.service_accounts {
                let email = account.get_ref();
                if !email.ends_with(".gserviceaccount.com") || !email.contains('@') {
                    self.error(
                        account.span(),
                        "shutdown.gcp.service_accounts",
                        format!(
                            "`{email}` is not a service account e-mail (…@….gserviceaccount.com)"
                        ),
                    );
                } else {
                    accounts.push(email.clone());
                }
            }
            if !rp.unlink_billing && accounts.is_empty() {
                self.error(
                    span,
                    "shutdown.gcp",
                    format!("`{id}`: set unlink_billing = true or name service_accounts, or a shutdown does nothing to it"),
                );
                continue;
            }
            gcp.push(GcpProject {
                project: id.clone(),
                scope,
                unlink_billing: rp.unlink_billing,
                service_accounts: accounts,
            });
        }
        ShutdownPolicy {
            regions,
            deny_roles,
            gcp,
        }
    }

    fn restore(&mut self, raw: RawRestore) -> RestorePolicy {
        let steps: Vec<Decimal> = raw.steps.get_ref().iter().map(|n| n.0).collect();
        let rising = steps.windows(2).all(|w| w[0] < w[1]);
        let in_range = steps
            .iter()
            .all(|s| *s > Decimal::ZERO && *s <= Decimal::ONE);
        if steps.is_empty() || !rising || !in_range || steps.last() != Some(&Decimal::ONE) {
            self.error(
                raw.steps.span(),
                "restore.steps",
                "steps rise above 0 and end at 1, for example [\"0.1\", \"0.5\", \"1\"]",
            );
            return RestorePolicy::default();
        }
        let minutes = *raw.step_minutes.get_ref();
        if !(1..=1440).contains(&minutes) {
            self.error(
                raw.step_minutes.span(),
                "restore.step_minutes",
                "must be between 1 and 1440",
            );
            return RestorePolicy::default();
        }
        RestorePolicy {
            steps,
            step_minutes: minutes as u32,
        }
    }

    fn key(&mut self, raw: RawKey) -> Option<KeySpec> {
        let id = raw.id.get_ref().clone();
        let at = format!("key[{id}]");
        let before = self.errors.len();
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.error(
                raw.id.span(),
                format!("{at}.id"),
                "a key id is 1 to 64 letters, digits, `-`, `_` or `.`",
            );
        }
        let Some(provider) = ProviderKind::parse(raw.provider.get_ref()) else {
            self.error(
                raw.provider.span(),
                format!("{at}.provider"),
                format!(
                    "unknown provider `{}`: use {}",
                    raw.provider.get_ref(),
                    ProviderKind::NAMES
                ),
            );
            return None;
        };
        let scope = match Scope::parse(raw.scope.get_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(raw.scope.span(), format!("{at}.scope"), e.to_string());
                None
            }
        };
        if let Some(secret) = &raw.secret
            && !crate::secret::is_reference(secret.get_ref())
        {
            self.error(
                secret.span(),
                format!("{at}.secret"),
                "must be a Secrets Manager ARN, file:<path> or local:<name> (spendguard serve); never the key itself",
            );
        }
        let (needed, unused): (&[&str], &[&str]) = match provider {
            ProviderKind::Anthropic => (&["key_id"], &["project_id", "user"]),
            ProviderKind::Openai => (&["project_id", "key_id"], &["user"]),
            ProviderKind::AwsIam => (&["user", "key_id"], &["project_id"]),
            ProviderKind::SecretOnly => (&["secret"], &["project_id", "user", "key_id"]),
        };
        let fields = [
            ("secret", &raw.secret),
            ("key_id", &raw.key_id),
            ("project_id", &raw.project_id),
            ("user", &raw.user),
        ];
        for (name, value) in fields {
            if needed.contains(&name) && value.is_none() {
                self.error(
                    raw.provider.span(),
                    format!("{at}.{name}"),
                    format!(
                        "{} {provider} key needs `{name}`",
                        if provider == ProviderKind::AwsIam || provider == ProviderKind::Anthropic {
                            "an"
                        } else {
                            "a"
                        }
                    ),
                );
            }
            if let Some(v) = value
                && unused.contains(&name)
            {
                self.error(
                    v.span(),
                    format!("{at}.{name}"),
                    format!("a {provider} key has no `{name}`"),
                );
            }
        }
        if provider == ProviderKind::Openai && raw.secret.is_none() && !raw.allow_delete {
            self.error(
                raw.provider.span(),
                format!("{at}.secret"),
                "an OpenAI key cannot be disabled: give `secret` (it is withheld in an emergency) or allow_delete = true (permanent)",
            );
        }
        if raw.allow_delete && provider != ProviderKind::Openai {
            self.error(
                raw.id.span(),
                format!("{at}.allow_delete"),
                "only OpenAI keys are deleted; other providers disable reversibly",
            );
        }
        let rotation = match raw
            .rotation
            .as_ref()
            .map(|r| (r.get_ref().as_str(), r.span()))
        {
            None => None,
            Some(("generated", _)) => Some(RotationStrategy::Generated),
            Some(("staged", _)) => Some(RotationStrategy::Staged),
            Some((other, span)) => {
                self.error(
                    span,
                    format!("{at}.rotation"),
                    format!("`{other}` is not a rotation: use generated or staged"),
                );
                None
            }
        };
        if rotation.is_some() && raw.secret.is_none() {
            self.error(
                raw.id.span(),
                format!("{at}.rotation"),
                "a rotated key needs `secret`",
            );
        }
        if self.errors.len() > before {
            return None;
        }
        Some(KeySpec {
            id,
            provider,
            scope: scope?,
            secret_arn: raw.secret.map(|s| s.into_inner()),
            key_id: raw.key_id.map(|s| s.into_inner()),
            project_id: raw.project_id.map(|s| s.into_inner()),
            user: raw.user.map(|s| s.into_inner()),
            rotation,
            allow_delete: raw.allow_delete,
        })
    }

    /// Whether a channel named in routing or escalation can be used: `log`, or defined and
    /// valid. An undefined one is reported (with the nearest defined name); one that is
    /// defined but invalid was reported where it is defined, and is not reported again here.
    fn channel_defined(
        &mut self,
        name: &Spanned<String>,
        channels: &BTreeMap<String, ChannelSpec>,
        field: String,
    ) -> bool {
        let n = name.get_ref();
        if n == "log" || channels.contains_key(n) {
            return true;
        }
        if !self.written_channels.contains(n) {
            let known = self.written_channels.iter().map(String::as_str);
            let help = did_you_mean(n, known.chain(["log"]));
            self.error_with_help(
                name.span(),
                field,
                format!("channel `{n}` is not defined in [channels]"),
                help,
            );
        }
        false
    }

    fn escalation(
        &mut self,
        raw: RawEscalation,
        channels: &BTreeMap<String, ChannelSpec>,
    ) -> EscalationPolicy {
        let mut levels: Vec<EscalationLevel> = Vec::new();
        for (i, level) in raw.levels.into_iter().enumerate() {
            let field = format!("escalation.levels[{i}]");
            let level = level.into_inner();
            let after = *level.after_minutes.get_ref();
            if !(1..=10_080).contains(&after) {
                self.error(
                    level.after_minutes.span(),
                    format!("{field}.after_minutes"),
                    "must be between 1 and 10080 (a week)",
                );
                continue;
            }
            if levels
                .last()
                .is_some_and(|prev| i64::from(prev.after_minutes) >= after)
            {
                self.error(
                    level.after_minutes.span(),
                    format!("{field}.after_minutes"),
                    "escalation levels must come later one after the other",
                );
                continue;
            }
            let mut names = Vec::new();
            for c in level.channels {
                if self.channel_defined(&c, channels, format!("{field}.channels")) {
                    names.push(c.into_inner());
                }
            }
            levels.push(EscalationLevel {
                after_minutes: after as u32,
                channels: names,
            });
        }
        EscalationPolicy { levels }
    }

    fn routing(
        &mut self,
        raw: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
        channels: &BTreeMap<String, ChannelSpec>,
        field: &str,
    ) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (tier, names) in raw {
            let mut list = Vec::new();
            for n in names {
                if !self.channel_defined(&n, channels, format!("{field}.{}", tier.get_ref())) {
                    continue;
                }
                if tier.get_ref() == "report"
                    && channels.get(n.get_ref()).map(|c| c.kind) == Some(ChannelKind::Pagerduty)
                {
                    // a report would open an incident nothing ever resolves
                    self.error(
                        n.span(),
                        format!("{field}.report"),
                        "the daily report is not an incident: route it to chat, e-mail or a webhook, not PagerDuty",
                    );
                } else if !list.contains(n.get_ref()) {
                    list.push(n.into_inner());
                }
            }
            out.insert(tier.into_inner(), list);
        }
        out
    }

    fn prices(
        &mut self,
        raw: BTreeMap<Spanned<String>, RawPrice>,
        default_currency: Currency,
    ) -> PriceBook {
        let mut book = BTreeMap::new();
        for (key, p) in raw {
            let field = format!("prices.\"{}\"", key.get_ref());
            if key.get_ref().split('/').count() != 2 || key.get_ref().split('/').any(str::is_empty)
            {
                self.error(
                    key.span(),
                    field.clone(),
                    "a price key is provider/model, for example \"openai/gpt-4o\"",
                );
            }
            let currency = match &p.currency {
                Some(c) => self
                    .currency(c, &format!("{field}.currency"))
                    .unwrap_or(default_currency),
                None => default_currency,
            };
            let long = p.long_context.as_ref();
            for (name, v) in [
                ("input", Some(&p.input)),
                ("output", Some(&p.output)),
                ("cached_input", p.cached_input.as_ref()),
                ("cache_write", p.cache_write.as_ref()),
                ("long_context.input", long.map(|l| &l.input)),
                ("long_context.output", long.map(|l| &l.output)),
                (
                    "long_context.cached_input",
                    long.and_then(|l| l.cached_input.as_ref()),
                ),
                (
                    "long_context.cache_write",
                    long.and_then(|l| l.cache_write.as_ref()),
                ),
            ] {
                if let Some(v) = v
                    && (v.get_ref().0 < Decimal::ZERO || v.get_ref().0 > MAX_PRICE)
                {
                    self.error(
                        v.span(),
                        format!("{field}.{name}"),
                        format!("a price per million tokens must be 0 to {MAX_PRICE}"),
                    );
                }
            }
            if let Some(b) = &p.batch_percent
                && !(b.get_ref().0 > Decimal::ZERO && b.get_ref().0 <= Decimal::ONE_HUNDRED)
            {
                self.error(
                    b.span(),
                    format!("{field}.batch_percent"),
                    format!(
                        "the percent of the price a batch call costs must be above 0 and at most 100 (got {})",
                        b.get_ref().0
                    ),
                );
            }
            if let Some(l) = long
                && !(1..=MAX_PROMPT_TOKENS).contains(l.above_input_tokens.get_ref())
            {
                self.error(
                    l.above_input_tokens.span(),
                    format!("{field}.long_context.above_input_tokens"),
                    format!(
                        "the prompt size the long-context prices start above must be 1 to {MAX_PROMPT_TOKENS} tokens (got {})",
                        l.above_input_tokens.get_ref()
                    ),
                );
            }
            book.insert(
                key.into_inner(),
                Price {
                    currency,
                    input: p.input.get_ref().0,
                    output: p.output.get_ref().0,
                    cached_input: p.cached_input.map(|c| c.get_ref().0),
                    cache_write: p.cache_write.map(|c| c.get_ref().0),
                    batch_percent: p.batch_percent.map(|b| b.get_ref().0),
                    long_context: p.long_context.map(|l| LongContext {
                        above_input_tokens: u64::try_from(*l.above_input_tokens.get_ref())
                            .unwrap_or_default(),
                        input: l.input.get_ref().0,
                        output: l.output.get_ref().0,
                        cached_input: l.cached_input.map(|c| c.get_ref().0),
                        cache_write: l.cache_write.map(|c| c.get_ref().0),
                    }),
                },
            );
        }
        PriceBook(book)
    }

    fn budget(
        &mut self,
        rb: RawBudget,
        span: Range<usize>,
        default_currency: Currency,
        default_zone: Zone,
        default_routing: &BTreeMap<String, Vec<String>>,
        channels: &BTreeMap<String, ChannelSpec>,
    ) -> Option<Budget> {
        let id = rb.id.get_ref().clone();
        let at = format!("budget[{id}]");
        let errors_before = self.errors.len();
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.error(
                rb.id.span(),
                format!("{at}.id"),
                "an id is 1 to 64 letters, digits, `-`, `_` or `.`",
            );
        }
        let scope = match Scope::parse(rb.scope.get_ref()) {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(rb.scope.span(), format!("{at}.scope"), e.to_string());
                None
            }
        };
        let currency = match &rb.currency {
            Some(c) => self.currency(c, &format!("{at}.currency")),
            None => Some(default_currency),
        };
        let zone = match &rb.timezone {
            Some(z) => self.zone(z, &format!("{at}.timezone")),
            None => Some(default_zone),
        };
        let source = match rb.source {
            Some(s) => self.source(s.into_inner(), &at),
            None => Some(SourceSpec::Usage),
        };

        if rb.window.is_empty() {
            self.error(
                span.clone(),
                format!("{at}.window"),
                "a budget needs at least one [[budget.window]]",
            );
        }
        // the tiers written, valid or not: routing to a tier of a window that failed is not
        // an error of its own
        let written_tiers: BTreeSet<String> = rb
            .window
            .iter()
            .flat_map(|w| w.get_ref().tiers.iter())
            .map(|t| t.get_ref().name.get_ref().clone())
            .collect();
        let mut windows: Vec<Window> = Vec::new();
        for rw in rb.window {
            let cap = rw.get_ref().provider_cap.clone();
            if let Some(w) = self.window(rw, &at) {
                if let Some(cap) = cap.filter(|c| *c.get_ref()) {
                    self.provider_cap(&w, cap.span(), &id, source.as_ref(), currency, &at);
                }
                if w.kind.is_sub_daily()
                    && let Some(s) = source.as_ref().filter(|s| **s != SourceSpec::Usage)
                {
                    self.error(
                        span.clone(),
                        format!("{at}.window[{}].period", w.kind),
                        format!(
                            "source kind `{}` reports whole days: {} windows need `usage` records (minute counters)",
                            s.kind(),
                            w.kind.as_str()
                        ),
                    );
                    continue;
                }
                if windows.iter().any(|x| x.kind == w.kind) {
                    self.error(
                        span.clone(),
                        format!("{at}.window"),
                        format!("two {} windows: keep one", w.kind),
                    );
                    continue;
                }
                windows.push(w);
            }
        }
        if let Some(s @ (SourceSpec::AwsBudgets { .. } | SourceSpec::GcpBudget { .. })) = &source
            && windows.len() > 1
        {
            self.error(
                span.clone(),
                format!("{at}.window"),
                format!(
                    "source kind `{}` reports one period: give this budget exactly one window",
                    s.kind()
                ),
            );
        }
        let mut routing = default_routing.clone();
        if let Some(r) = rb.routing {
            for tier in r.keys() {
                if !written_tiers.contains(tier.get_ref()) {
                    let help =
                        did_you_mean(tier.get_ref(), written_tiers.iter().map(String::as_str));
                    self.error_with_help(
                        tier.span(),
                        format!("{at}.routing.{}", tier.get_ref()),
                        format!("this budget has no tier named `{}`", tier.get_ref()),
                        help,
                    );
                }
            }
            routing.extend(self.routing(r, channels, &format!("{at}.routing")));
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Budget {
            id,
            description: rb.description,
            scope: scope?,
            currency: currency?,
            zone: zone?,
            windows,
            source: source?,
            routing,
        })
    }

    fn source(&mut self, raw: RawSource, at: &str) -> Option<SourceSpec> {
        let field = format!("{at}.source");
        let kind = raw.kind.get_ref().as_str();
        let fields: [(&str, &Option<Spanned<String>>); 5] = [
            ("budget_name", &raw.budget_name),
            ("service", &raw.service),
            ("project_id", &raw.project_id),
            ("workspace_id", &raw.workspace_id),
            ("budget_id", &raw.budget_id),
        ];
        let allowed: &[&str] = match kind {
            "usage" => &[],
            "aws_budgets" => &["budget_name"],
            "cost_explorer" => &["service"],
            "openai" => &["project_id"],
            "anthropic" => &["workspace_id"],
            "gcp_budget" => &["budget_id"],
            other => {
                self.error(
                    raw.kind.span(),
                    format!("{field}.kind"),
                    format!(
                        "unknown source `{other}`: use usage, aws_budgets, cost_explorer, openai, anthropic or gcp_budget"
                    ),
                );
                return None;
            }
        };
        let mut ok = true;
        for (name, value) in fields {
            if let Some(v) = value {
                if !allowed.contains(&name) {
                    self.error(
                        v.span(),
                        format!("{field}.{name}"),
                        format!("source kind `{kind}` has no field `{name}`"),
                    );
                    ok = false;
                } else if v.get_ref().trim().is_empty() {
                    self.error(v.span(), format!("{field}.{name}"), "must not be empty");
                    ok = false;
                }
            }
        }
        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
        let required = |me: &mut Self, name: &str, v: &Option<Spanned<String>>| -> Option<String> {
            let value = text(v);
            if value.is_none() {
                me.error(
                    raw.kind.span(),
                    format!("{field}.{name}"),
                    format!("source kind `{kind}` needs `{name}`"),
                );
            }
            value
        };
        let spec = match kind {
            "usage" => SourceSpec::Usage,
            "aws_budgets" => SourceSpec::AwsBudgets {
                budget_name: required(self, "budget_name", &raw.budget_name)?,
            },
            "cost_explorer" => SourceSpec::CostExplorer {
                service: text(&raw.service),
            },
            "openai" => SourceSpec::Openai {
                project_id: text(&raw.project_id),
            },
            "anthropic" => SourceSpec::Anthropic {
                workspace_id: text(&raw.workspace_id),
            },
            _ => SourceSpec::GcpBudget {
                budget_id: required(self, "budget_id", &raw.budget_id)?,
            },
        };
        ok.then_some(spec)
    }

    /// A window that keeps the provider's limit: one the provider has (monthly, OpenAI or
    /// Anthropic, USD, whole cents), and no other budget keeps the same limit.
    fn provider_cap(
        &mut self,
        w: &Window,
        span: Range<usize>,
        budget_id: &str,
        source: Option<&SourceSpec>,
        currency: Option<Currency>,
        at: &str,
    ) {
        let field = format!("{at}.window[{}].provider_cap", w.kind);
        if let Some(why) = crate::caps::cap_refusal(w, source, currency) {
            self.error(span, field, why);
            return;
        }
        if let Some((_, id)) = source.and_then(crate::caps::capped_limit) {
            if let Some(other) = self.capped.get(&id) {
                let why =
                    format!("budget `{other}` keeps the limit {id} already: keep it in one budget");
                self.error(span, field, why);
            } else {
                self.capped.insert(id, budget_id.to_string());
            }
        }
    }

    /// A window; its limit and tiers are checked even when its period is invalid, so that one
    /// error does not hide the others.
    fn window(&mut self, rw: Spanned<RawWindow>, at: &str) -> Option<Window> {
        let rw = rw.into_inner();
        let minutes = rw.minutes.as_ref().map(|m| *m.get_ref());
        let kind: Option<WindowKind> = match WindowKind::parse(rw.period.get_ref(), minutes) {
            Ok(k) => Some(k),
            Err(e) => {
                let named = WindowKind::NAMES.contains(&rw.period.get_ref().as_str());
                let (span, field) = match &rw.minutes {
                    Some(m) if named => (m.span(), "minutes"),
                    _ => (rw.period.span(), "period"),
                };
                let help = (!named)
                    .then(|| did_you_mean(rw.period.get_ref(), WindowKind::NAMES))
                    .flatten();
                self.error_with_help(span, format!("{at}.window.{field}"), e, help);
                None
            }
        };
        let at = match kind {
            Some(k) => format!("{at}.window[{k}]"),
            None => format!("{at}.window[{}]", rw.period.get_ref()),
        };
        let limit = rw.limit.get_ref().0;
        let limit_valid = limit > Decimal::ZERO && limit <= MAX_AMOUNT;
        if !limit_valid {
            self.error(
                rw.limit.span(),
                format!("{at}.limit"),
                format!("a limit must be above 0 and at most {MAX_AMOUNT} (got {limit})"),
            );
        }
        if rw.tiers.is_empty() {
            self.error(
                rw.period.span(),
                format!("{at}.tiers"),
                "a window needs at least one tier",
            );
            return None;
        }
        let errors_before = self.errors.len();
        let mut tiers: Vec<(Tier, Range<usize>)> = Vec::new();
        for rt in rw.tiers {
            let span = rt.span();
            if let Some(t) = self.tier(rt.into_inner(), &at) {
                tiers.push((t, span));
            }
        }
        // names unique; thresholds rising (and severities not falling) in the order written;
        // amounts are only comparable under a valid limit
        let (Some(kind), true) = (kind, limit_valid) else {
            return None;
        };
        for i in 0..tiers.len() {
            let (t, span) = &tiers[i];
            if tiers[..i].iter().any(|(o, _)| o.name == t.name) {
                self.error(
                    span.clone(),
                    format!("{at}.tier[{}]", t.name),
                    "tier name used twice in this window",
                );
                continue;
            }
            if let Some((prev, _)) = tiers[..i].iter().rev().find(|(o, _)| o.basis == t.basis) {
                let (a, b) = (prev.threshold_amount(limit), t.threshold_amount(limit));
                if b <= a {
                    self.error(
                        span.clone(),
                        format!("{at}.tier[{}]", t.name),
                        format!(
                            "tiers out of order: `{}` (at {}) is listed after `{}` (at {}) but is not higher; list {} tiers from lowest to highest threshold",
                            t.name, b.normalize(), prev.name, a.normalize(), t.basis
                        ),
                    );
                } else if t.severity < prev.severity {
                    self.error(
                        span.clone(),
                        format!("{at}.tier[{}].severity", t.name),
                        format!(
                            "tiers out of order: `{}` ({}) has a higher threshold than `{}` ({}) but a lower severity",
                            t.name, t.severity, prev.name, prev.severity
                        ),
                    );
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Window {
            kind,
            limit,
            tiers: tiers.into_iter().map(|(t, _)| t).collect(),
            provider_cap: rw.provider_cap.is_some_and(|c| *c.get_ref()),
        })
    }

    fn tier(&mut self, rt: RawTier, at: &str) -> Option<Tier> {
        let name = rt.name.get_ref().clone();
        let at = format!("{at}.tier[{name}]");
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            self.error(
                rt.name.span(),
                format!("{at}.name"),
                "a tier name is 1 to 32 letters, digits, `-` or `_`",
            );
            return None;
        }
        let threshold = match (&rt.percent, &rt.amount) {
            (Some(p), None) => {
                let v = p.get_ref().0;
                if v <= Decimal::ZERO || v > Decimal::from(1000) {
                    self.error(
                        p.span(),
                        format!("{at}.percent"),
                        format!("must be above 0 and at most 1000 (got {v})"),
                    );
                    return None;
                }
                Threshold::Percent(v)
            }
            (None, Some(a)) => {
                let v = a.get_ref().0;
                if v <= Decimal::ZERO || v > MAX_AMOUNT {
                    self.error(
                        a.span(),
                        format!("{at}.amount"),
                        format!("must be above 0 and at most {MAX_AMOUNT} (got {v})"),
                    );
                    return None;
                }
                Threshold::Amount(v)
            }
            (Some(_), Some(a)) => {
                self.error(
                    a.span(),
                    format!("{at}.amount"),
                    "give `percent` or `amount`, not both",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    rt.name.span(),
                    format!("{at}.percent"),
                    "a tier needs `percent` (of the limit) or `amount`",
                );
                return None;
            }
        };
        let basis = match rt.basis.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("actual") => Basis::Actual,
            Some("forecast") => Basis::Forecast,
            Some(other) => {
                let span = rt.basis.as_ref().map(|b| b.span()).unwrap_or_default();
                self.error(
                    span,
                    format!("{at}.basis"),
                    format!("`{other}` is not a basis: use actual or forecast"),
                );
                return None;
            }
        };
        let severity = match &rt.severity {
            Some(s) => match Severity::for_tier_name(s.get_ref()) {
                Some(sev) => sev,
                None => {
                    self.error(
                        s.span(),
                        format!("{at}.severity"),
                        format!(
                            "`{}` is not a severity: use info, warning, critical or emergency",
                            s.get_ref()
                        ),
                    );
                    return None;
                }
            },
            None => Severity::for_tier_name(&name).unwrap_or(Severity::Warning),
        };
        let mut actions = Vec::new();
        for ra in rt
            .actions
            .unwrap_or_else(|| vec![Spanned::new(0..0, RawAction::Named("notify".into()))])
        {
            let action = self.action(ra, &format!("{at}.actions"))?;
            if !actions.contains(&action) {
                actions.push(action);
            }
        }
        Some(Tier {
            name,
            threshold,
            basis,
            severity,
            actions,
        })
    }
}
