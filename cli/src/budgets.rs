//! Budgets files as the operator meets them: read with cargo-like diagnostics (`validate`,
//! `check`), and the `budgets` commands against a deployment: `plan`, `apply`, `export`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::OnceLock;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spendguard_app::flows::caps::{CapOutcome, admin_key_setting};
use spendguard_domain::budgets_export::to_budgets_file;
use spendguard_domain::budgets_file::{ConfigError, ConfigErrors, parse_budgets};
use spendguard_domain::records::AuditEntry;
use spendguard_domain::settings::PolicySet;

use crate::Failure;
use crate::local::Local;
use crate::operate::{On, actor, confirm, run_err};
use crate::output::{errln, json_document, outln};

/// How problems in a budgets file are written on stderr.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum MessageFormat {
    /// One line per problem, `file:line:col: field: message; help: …`, as editors read it.
    Short,
    /// Like cargo: `error:`, the source line with a caret under the problem, `help:`, a count.
    Human,
}

static MESSAGE_FORMAT: OnceLock<MessageFormat> = OnceLock::new();

/// `--message-format`, when given; otherwise human on a terminal and short in a pipe.
pub fn set_message_format(format: Option<MessageFormat>) {
    if let Some(format) = format {
        let _ = MESSAGE_FORMAT.set(format);
    }
}

fn message_format() -> MessageFormat {
    *MESSAGE_FORMAT.get_or_init(|| {
        if std::io::stderr().is_terminal() {
            MessageFormat::Human
        } else {
            MessageFormat::Short
        }
    })
}

/// Colour only for a person: stderr a terminal, and `NO_COLOR` not set (no-color.org).
fn renderer() -> Renderer {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    if std::io::stderr().is_terminal() && !no_color {
        Renderer::styled()
    } else {
        Renderer::plain()
    }
}

/// A budgets file that could not be used, said the way it should be printed.
pub enum Unusable {
    /// The file cannot be read: `cannot read FILE: reason`.
    Unreadable(String),
    /// Its problems, in line order, and the text they point into.
    Invalid { text: String, errors: ConfigErrors },
}

impl Unusable {
    /// The text for stderr, in the message format in force.
    pub fn render(&self, path: &Path) -> String {
        match self {
            Unusable::Unreadable(reason) => format!("error: {reason}"),
            Unusable::Invalid { text, errors } => match message_format() {
                MessageFormat::Short => errors.to_string(),
                MessageFormat::Human => render_human(path, text, &errors.0),
            },
        }
    }

    /// The problems as `validate --json` prints them.
    fn to_json(&self, path: &Path) -> Value {
        let errors: Vec<Value> = match self {
            Unusable::Unreadable(reason) => vec![json!({
                "file": path.display().to_string(),
                "line": null,
                "column": null,
                "field": null,
                "message": reason,
                "help": null,
            })],
            Unusable::Invalid { errors, .. } => errors
                .0
                .iter()
                .map(|e| {
                    json!({
                        "file": e.file,
                        "line": e.line,
                        "column": e.column,
                        "field": e.field,
                        "message": e.message,
                        "help": e.help,
                    })
                })
                .collect(),
        };
        json!({ "valid": false, "errors": errors })
    }

    fn count(&self) -> usize {
        match self {
            Unusable::Unreadable(_) => 1,
            Unusable::Invalid { errors, .. } => errors.0.len(),
        }
    }
}

/// A budgets file read and validated, with its text (for the audit log's hash).
pub struct BudgetsFile {
    pub text: String,
    pub policy: PolicySet,
}

pub fn read(path: &Path) -> Result<BudgetsFile, Unusable> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Unusable::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    match parse_budgets(&path.display().to_string(), &text) {
        Ok(policy) => Ok(BudgetsFile { text, policy }),
        Err(errors) => Err(Unusable::Invalid { text, errors }),
    }
}

/// Reads a budgets file; a problem is invalid input (exit 2), rendered for stderr.
pub fn load(path: &Path) -> Result<BudgetsFile, Failure> {
    read(path).map_err(|u| Failure::Invalid(u.render(path)))
}

fn closing_count(path: &Path, count: usize) -> String {
    let noun = if count == 1 { "error" } else { "errors" };
    format!(
        "could not validate `{}` due to {count} previous {noun}",
        path.display()
    )
}

/// Each problem as cargo shows one, a blank line between them, then the count.
fn render_human(path: &Path, text: &str, errors: &[ConfigError]) -> String {
    let renderer = renderer();
    let mut blocks: Vec<String> = errors
        .iter()
        .map(|e| {
            let mut group = Level::ERROR.primary_title(e.message.as_str()).element(
                Snippet::source(text).path(e.file.as_str()).annotation(
                    AnnotationKind::Primary
                        .span(e.span.clone())
                        .label(e.field.as_str()),
                ),
            );
            if let Some(help) = &e.help {
                group = group.element(Level::HELP.message(help.as_str()));
            }
            renderer.render(&[group])
        })
        .collect();
    let count = closing_count(path, errors.len());
    blocks.push(renderer.render(&[Group::with_title(
        Level::ERROR.primary_title(count.as_str()),
    )]));
    blocks.join("\n\n")
}

/// `spendguard validate`: a summary (or JSON), warnings, and every problem with its position.
pub fn validate(path: &Path, as_json: bool) -> Result<(), Failure> {
    let file = match read(path) {
        Ok(file) => file,
        Err(unusable) if as_json => {
            outln!("{}", json_document(&unusable.to_json(path)));
            return Err(Failure::Invalid(format!(
                "error: {}",
                closing_count(path, unusable.count())
            )));
        }
        Err(unusable) => return Err(Failure::Invalid(unusable.render(path))),
    };
    let policy = &file.policy;
    let warnings = policy.currency_warnings();
    for warning in &warnings {
        errln!("warning: {}: {warning}", path.display());
    }
    let windows: usize = policy.budgets.iter().map(|b| b.windows.len()).sum();
    let tiers: usize = policy
        .budgets
        .iter()
        .flat_map(|b| &b.windows)
        .map(|w| w.tiers.len())
        .sum();
    if as_json {
        let body = json!({
            "valid": true,
            "file": path.display().to_string(),
            "summary": {
                "budgets": policy.budgets.len(),
                "windows": windows,
                "tiers": tiers,
                "channels": policy.settings.channels.len(),
                "prices": policy.settings.prices.0.len(),
                "keys": policy.keys.len(),
            },
            "warnings": warnings,
            "policy": policy,
        });
        outln!("{}", json_document(&body));
        return Ok(());
    }
    outln!(
        "{}: valid — {} budgets, {windows} windows, {} channels, {} prices, {} keys",
        path.display(),
        policy.budgets.len(),
        policy.settings.channels.len(),
        policy.settings.prices.0.len(),
        policy.keys.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `budgets plan`, `apply`, `export`: against the target `operate::On` names.

/// Differences between two JSON documents, one line per changed leaf.
fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                diff(
                    &p,
                    a.get(name).unwrap_or(&Value::Null),
                    b.get(name).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if old == new => {}
        (Value::Null, _) => out.push(format!("+ {path}: {new}")),
        (_, Value::Null) => out.push(format!("- {path}: {old}")),
        _ => out.push(format!("~ {path}: {old} -> {new}")),
    }
}

/// The policy as a document keyed by ids, so that a diff names budgets and keys.
fn by_id(policy: &PolicySet) -> Value {
    let budgets: serde_json::Map<String, Value> = policy
        .budgets
        .iter()
        .map(|b| (b.id.clone(), serde_json::to_value(b).unwrap_or_default()))
        .collect();
    let keys: serde_json::Map<String, Value> = policy
        .keys
        .iter()
        .map(|k| (k.id.clone(), serde_json::to_value(k).unwrap_or_default()))
        .collect();
    json!({
        "settings": serde_json::to_value(&policy.settings).unwrap_or_default(),
        "budget": budgets,
        "key": keys,
    })
}

/// A cap the provider does not offer this organisation: said, not failed.
fn not_enabled(resource: &str, budget: &str) -> String {
    format!(
        "note: provider limit {resource} (budget {budget}) is not kept: the provider does not offer spend limits to this organisation (Anthropic's are an early-access preview; budget-check reports it once)"
    )
}

fn dollars(cents: u64) -> String {
    format!("{}.{:02} USD", cents / 100, cents % 100)
}

/// Every change applying `policy` would make on the target: the stored policy's changed
/// fields and the providers' limits the budgets keep (`provider_cap`), read now.
async fn changes(local: &Local, file: &Path, policy: &PolicySet) -> Result<Vec<String>, Failure> {
    let current = local.store().load_policy().await.map_err(run_err)?;
    let mut changes = Vec::new();
    diff("", &by_id(&current), &by_id(policy), &mut changes);
    let keeper = local.cap_keeper()?;
    let caps = spendguard_domain::caps::provider_caps(&policy.budgets).unwrap_or_default();
    if let Some(cap) = caps.iter().find(|c| keeper.target(c).is_err()) {
        return Err(Failure::Invalid(format!(
            "{}: provider_cap of budget {} needs {} to show and set the cap (nothing written)",
            file.display(),
            cap.budget_id,
            admin_key_setting(cap.resource.kind)
        )));
    }
    for c in keeper.plan(policy).await {
        match &c.outcome {
            CapOutcome::WouldSet { from } => changes.push(format!(
                "provider limit {} (budget {}): {} -> {}",
                c.resource,
                c.budget,
                from.map_or("none".to_string(), dollars),
                dollars(c.cents)
            )),
            CapOutcome::NotEnabled => outln!("{}", not_enabled(&c.resource, &c.budget)),
            CapOutcome::Failed { error } => {
                return Err(Failure::Run(format!(
                    "provider limit {} cannot be read, nothing written: {error}",
                    c.resource
                )));
            }
            _ => {}
        }
    }
    Ok(changes)
}

fn print_changes(on: &On, changes: &[String]) {
    outln!("Changes to the {}:", on.name());
    for c in changes {
        outln!("  {c}");
    }
}

/// `budgets plan`: the changes `apply` would make, nothing written; terraform's
/// `-detailed-exitcode`: 0 no change, 2 changes, 1 any error (an invalid file too).
pub async fn plan(on: &On, path: &Path) -> Result<(), Failure> {
    let as_plan_error = |f: Failure| match f {
        Failure::Run(m) => Failure::Plan {
            code: 1,
            message: format!("error: {m}"),
        },
        Failure::Invalid(m)
        | Failure::ThresholdReached(m)
        | Failure::NothingStopped(m)
        | Failure::StopsBroken(m)
        | Failure::Plan { message: m, .. } => Failure::Plan {
            code: 1,
            message: m,
        },
    };
    let file = load(path).map_err(as_plan_error)?;
    let local = on.local().await.map_err(as_plan_error)?;
    let changes = changes(&local, path, &file.policy)
        .await
        .map_err(as_plan_error)?;
    if changes.is_empty() {
        outln!(
            "{}: no changes — the {} already holds exactly this policy",
            path.display(),
            on.name()
        );
        return Ok(());
    }
    print_changes(on, &changes);
    Err(Failure::Plan {
        code: 2,
        message: format!(
            "{} change(s) to apply: `spendguard budgets apply {}` writes them",
            changes.len(),
            path.display()
        ),
    })
}

/// `budgets apply`: validates, prints every change, writes after confirmation, and records
/// who applied which file in the audit log.
pub async fn apply(on: &On, path: &Path, yes: bool) -> Result<(), Failure> {
    let file = load(path)?;
    let local = on.local().await?;
    let policy = &file.policy;
    let store = local.store();
    let changes = changes(&local, path, policy).await?;
    if changes.is_empty() {
        outln!(
            "{}: the {} already holds exactly this policy",
            path.display(),
            on.name()
        );
        return Ok(());
    }
    print_changes(on, &changes);
    confirm(&format!("Apply {} change(s)?", changes.len()), yes)?;
    store.put_policy(policy).await.map_err(run_err)?;
    store
        .append_audit(&AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: Utc::now(),
            actor: actor(),
            action: "budgets_apply".into(),
            scope: None,
            detail: json!({
                "file": path.display().to_string(),
                "sha256": hex::encode(Sha256::digest(file.text.as_bytes())),
                "changes": changes.len(),
                "budgets": policy.budgets.len(),
                "keys": policy.keys.len(),
            }),
        })
        .await
        .map_err(|e| {
            Failure::Run(format!(
                "the policy is applied, but its audit entry was not written: {e}"
            ))
        })?;
    let keeper = local.cap_keeper()?;
    if !spendguard_domain::caps::provider_caps(&policy.budgets)
        .unwrap_or_default()
        .is_empty()
    {
        for c in keeper.keep(policy, None).await {
            match c.outcome {
                CapOutcome::Set { .. } | CapOutcome::Drifted { .. } => {
                    outln!(
                        "  set provider limit {} to {}",
                        c.resource,
                        dollars(c.cents)
                    )
                }
                CapOutcome::Failed { error } => {
                    return Err(Failure::Run(format!(
                        "the policy is applied, but provider limit {} was not set: {error} (budget-check sets it on its next run)",
                        c.resource
                    )));
                }
                CapOutcome::HeldByStop => outln!(
                    "  provider limit {} is held by a stop: its restore puts the cap back",
                    c.resource
                ),
                CapOutcome::NotEnabled => outln!("{}", not_enabled(&c.resource, &c.budget)),
                _ => {}
            }
        }
    }
    outln!(
        "{}: applied to the {} — {} budgets, {} keys",
        path.display(),
        on.name(),
        policy.budgets.len(),
        policy.keys.len()
    );
    Ok(())
}

/// `budgets export`: the target's policy as a budgets file, to `out` or stdout. The store keeps
/// the parsed policy, not the file: comments and defaults left implicit are not kept, every
/// value is written out.
pub async fn export(on: &On, out: Option<&Path>) -> Result<(), Failure> {
    let local = on.local().await?;
    let policy = local.store().load_policy().await.map_err(run_err)?;
    let text = format!(
        "# exported from the {} by `spendguard budgets export`\n{}",
        on.name(),
        to_budgets_file(&policy)
    );
    match out {
        None => outln!("{}", text.trim_end()),
        Some(path) => {
            std::fs::write(path, &text)
                .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
            errln!(
                "{}: the {} policy — {} budgets, {} keys",
                path.display(),
                on.name(),
                policy.budgets.len(),
                policy.keys.len()
            );
        }
    }
    Ok(())
}
