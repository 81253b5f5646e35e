//! The five functions' handlers as the CLI runs them: on the embedded store with `file:`
//! secrets (the default), or against AWS or an emulator exactly as deployed (`--aws`). Either
//! way each function is built by its own `app` module from its own `Config::from_env`, so what
//! runs here is what runs in Lambda.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_runtime::Diagnostic;
use serde_json::{Value, json};
use spendguard_app::backends::Backends;
use spendguard_app::env::{Env, EnvError, SourcesConfig};
use spendguard_app::flows::caps::CapKeeper;
use spendguard_app::flows::nightly::{MetricsSink, Nightly};
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::clock::Clock;
use spendguard_app::ports::store::StateStore;
use spendguard_aws::sns::SnsBus;
use spendguard_domain::alert::AlertEvent;
use spendguard_http::keys::cap_targets;
use spendguard_http::verify::sns::HttpsCertificates;
use spendguard_local::file_vault::FileVault;
use spendguard_local::memory_bus::MemoryBus;
use spendguard_local::sqlite::SqliteStore;

use crate::Failure;
use crate::aws::Access;

/// The functions, by their deployed names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Function {
    BudgetCheck,
    AlertFanout,
    KeyGuard,
    BudgetWebhook,
    DailyAggregate,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::BudgetCheck => "budget-check",
            Function::AlertFanout => "alert-fanout",
            Function::KeyGuard => "key-guard",
            Function::BudgetWebhook => "budget-webhook",
            Function::DailyAggregate => "daily-aggregate",
        }
    }
}

/// A handler's failure as Lambda reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invocation {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
}

impl<E: Into<Diagnostic>> From<E> for Invocation {
    fn from(e: E) -> Invocation {
        let d: Diagnostic = e.into();
        Invocation {
            error_type: d.error_type,
            error_message: d.error_message,
        }
    }
}

/// Where the functions run.
pub enum Target {
    /// The embedded store at this path; secrets are `file:` references.
    Embedded { store: PathBuf },
    /// AWS (or an emulator through `AWS_ENDPOINT_URL`), configured like the deployment: the
    /// functions' `SPENDGUARD_*` variables from the environment.
    Aws(Access),
}

/// The configuration the embedded store supplies when the environment does not: local secret
/// files (created on first use) and names that only label things.
fn embedded_defaults(dir: &Path) -> Result<BTreeMap<String, String>, Failure> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)
        .map_err(|e| Failure::Run(format!("{}: {e}", secrets.display())))?;
    let usage = local_secret(&secrets.join("usage-webhook"), || {
        format!("whsec_{}", base64_of(&random_bytes()))
    })?;
    let token = local_secret(
        &secrets.join("status-token"),
        || hex::encode(random_bytes()),
    )?;
    Ok(BTreeMap::from([
        ("SPENDGUARD_TABLE".into(), "embedded".into()),
        (
            "SPENDGUARD_ALERTS_TOPIC_ARN".into(),
            "arn:aws:sns:local:000000000000:spendguard-alerts".into(),
        ),
        (
            "SPENDGUARD_USAGE_SECRET_ARN".into(),
            format!("file:{}", usage.display()),
        ),
        (
            "SPENDGUARD_STATUS_TOKEN_ARN".into(),
            format!("file:{}", token.display()),
        ),
    ]))
}

fn random_bytes() -> Vec<u8> {
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A secret file, written with a fresh value (owner-only) if it does not exist yet.
fn local_secret(path: &Path, fresh: impl FnOnce() -> String) -> Result<PathBuf, Failure> {
    if !path.exists() {
        write_private(path, &fresh())?;
    }
    Ok(path.to_path_buf())
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, value: &str) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::Run(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(fail)?;
    std::io::Write::write_all(&mut file, value.as_bytes()).map_err(fail)
}

/// The functions wired to one target: built on demand, each from its own configuration.
pub struct Local {
    pub sdk: SdkConfig,
    pub backends: Backends,
    /// Alerts published (embedded: kept here for the caller to deliver or print).
    pub bus: Arc<dyn AlertBus>,
    pub published: Option<Arc<MemoryBus>>,
    overrides: BTreeMap<String, String>,
    defaults: BTreeMap<String, String>,
    embedded: bool,
    /// The embedded store itself, for what only it needs ([`Local::embedded_store`]).
    sqlite: Option<Arc<SqliteStore>>,
}

impl Local {
    /// `overrides` take precedence over the environment (the demo configures its stand-ins).
    pub async fn new(
        target: &Target,
        clock: Arc<dyn Clock>,
        overrides: BTreeMap<String, String>,
    ) -> Result<Local, Failure> {
        let sdk = match target {
            Target::Embedded { .. } => spendguard_aws::sdk::offline_sdk_config(),
            Target::Aws(access) => access.sdk_config().await?,
        };
        match target {
            Target::Embedded { store } => {
                if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Failure::Run(format!("{}: {e}", dir.display())))?;
                }
                let dir = store.parent().unwrap_or(Path::new("."));
                let defaults = embedded_defaults(dir)?;
                let sqlite = SqliteStore::open(store)
                    .map_err(|e| Failure::Run(format!("{}: {e}", store.display())))?;
                let sqlite = Arc::new(sqlite);
                let bus = Arc::new(MemoryBus::default());
                Ok(Local {
                    sdk,
                    sqlite: Some(sqlite.clone()),
                    backends: Backends {
                        store: sqlite,
                        vault: Arc::new(FileVault),
                        clock,
                    },
                    bus: bus.clone(),
                    published: Some(bus),
                    overrides,
                    defaults,
                    embedded: true,
                })
            }
            Target::Aws(_) => {
                let local = Local {
                    backends: spendguard_aws::backends::deployed(&sdk, ""),
                    bus: Arc::new(MemoryBus::default()),
                    published: None,
                    overrides,
                    defaults: BTreeMap::new(),
                    embedded: false,
                    sqlite: None,
                    sdk,
                };
                let table = local
                    .env()
                    .required("SPENDGUARD_TABLE", "the DynamoDB table name");
                let table = table.map_err(config_failure)?;
                let mut backends = spendguard_aws::backends::deployed(&local.sdk, &table);
                backends.clock = clock;
                let bus: Arc<dyn AlertBus> =
                    match local.env().optional("SPENDGUARD_ALERTS_TOPIC_ARN") {
                        Some(topic) => {
                            Arc::new(SnsBus::new(aws_sdk_sns::Client::new(&local.sdk), topic))
                        }
                        None => Arc::new(MemoryBus::default()),
                    };
                Ok(Local {
                    backends,
                    bus,
                    ..local
                })
            }
        }
    }

    pub fn store(&self) -> Arc<dyn StateStore> {
        self.backends.store.clone()
    }

    /// The embedded store as itself (`None` on AWS): its expired rows are deleted by whoever
    /// runs it for long ([`SqliteStore::prune_expired`]; DynamoDB's TTL does it on AWS).
    pub fn embedded_store(&self) -> Option<Arc<SqliteStore>> {
        self.sqlite.clone()
    }

    /// What keeps the budgets' provider caps, with the admin keys of the environment
    /// (`SPENDGUARD_OPENAI_ADMIN_KEY_ARN`, `SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN` and their API
    /// URLs), as budget-check keeps them.
    pub fn cap_keeper(&self) -> Result<CapKeeper, Failure> {
        let sources = SourcesConfig::from_env(&self.env()).map_err(config_failure)?;
        Ok(CapKeeper {
            store: self.store(),
            clock: self.backends.clock.clone(),
            targets: cap_targets(&sources, &self.backends.vault),
            lease_waits: &spendguard_app::lease::LEASE_WAITS_MS,
        })
    }

    /// The variables a function reads: overrides, then the process environment, then (embedded)
    /// the local defaults.
    pub fn env(&self) -> Env<impl Fn(&str) -> Option<String> + '_> {
        Env(move |name: &str| {
            self.overrides
                .get(name)
                .cloned()
                .or_else(|| std::env::var(name).ok().filter(|v| !v.is_empty()))
                .or_else(|| self.defaults.get(name).cloned())
        })
    }

    /// Events the embedded bus has received so far.
    pub fn events(&self) -> Vec<AlertEvent> {
        self.published
            .as_ref()
            .map(|b| b.events())
            .unwrap_or_default()
    }

    pub async fn checker(&self) -> Result<spendguard_app::flows::check::Checker, Failure> {
        let config = budget_check::config::Config::from_env(&self.env()).map_err(config_failure)?;
        budget_check::app::checker_with(&config, &self.sdk, self.backends.clone(), self.bus.clone())
            .await
            .map_err(|e| Failure::Run(e.to_string()))
    }

    pub fn fanout(&self) -> Result<alert_fanout::handler::Handler, Failure> {
        let config = alert_fanout::config::Config::from_env(&self.env()).map_err(config_failure)?;
        Ok(alert_fanout::app::fanout_with(
            &config,
            &self.sdk,
            self.backends.clone(),
        ))
    }

    pub async fn key_guard(&self) -> Result<key_guard::handler::Handler, Failure> {
        let config = key_guard::config::Config::from_env(&self.env()).map_err(config_failure)?;
        let aws = if self.embedded {
            key_guard::app::AwsKeys::Untouched
        } else {
            key_guard::app::AwsKeys::Managed
        };
        key_guard::app::handler_with(&config, &self.sdk, self.backends.clone(), aws)
            .await
            .map_err(|e| Failure::Run(e.to_string()))
    }

    pub async fn webhook(&self) -> Result<budget_webhook::handler::Webhook, Failure> {
        let config =
            budget_webhook::config::Config::from_env(&self.env()).map_err(config_failure)?;
        budget_webhook::app::webhook_with(
            &config,
            &self.sdk,
            self.backends.clone(),
            self.bus.clone(),
            Box::new(HttpsCertificates::new().map_err(Failure::Run)?),
        )
        .await
        .map_err(|e| Failure::Run(e.to_string()))
    }

    pub fn nightly(&self, metrics: Arc<dyn MetricsSink>) -> Nightly {
        daily_aggregate::app::nightly_with(
            self.store(),
            self.bus.clone(),
            self.backends.clock.clone(),
            metrics,
        )
    }

    /// Runs one function's handler with one event, as Lambda would.
    pub async fn invoke(
        &self,
        function: Function,
        event: Value,
        metrics: Arc<dyn MetricsSink>,
    ) -> Result<Result<Value, Invocation>, Failure> {
        if self.embedded && function == Function::KeyGuard && event.get("Step").is_some() {
            return Err(Failure::Invalid(
                "a rotation step needs Secrets Manager, which the embedded store does not have: \
                 run it with --aws (AWS_ENDPOINT_URL for an emulator)"
                    .into(),
            ));
        }
        Ok(match function {
            Function::BudgetCheck => {
                let checker = self.checker().await?;
                budget_check::handler::handle(&checker, event)
                    .await
                    .map(|r| serde_json::to_value(r).unwrap_or_default())
                    .map_err(Invocation::from)
            }
            Function::AlertFanout => self
                .fanout()?
                .handle(event)
                .await
                .map_err(|e| Invocation::from(alert_fanout::handler::diagnostic(e))),
            Function::KeyGuard => self
                .key_guard()
                .await?
                .handle(event)
                .await
                .map_err(Invocation::from),
            Function::BudgetWebhook => {
                let mut webhook = self.webhook().await?;
                // recorded SNS events carry SNS's signatures of their day, on certificates this
                // machine may not reach: on the embedded store, which nothing else reaches,
                // they are taken as Lambda would hand them over; a deployment verifies them
                if self.embedded
                    && let Some(sns) = webhook.sns.as_mut()
                {
                    sns.verify_trigger_signatures = false;
                }
                budget_webhook::event::handle(&webhook, event)
                    .await
                    .map_err(Invocation::from)
            }
            Function::DailyAggregate => {
                daily_aggregate::handler::handle(&self.nightly(metrics), event)
                    .await
                    .map_err(Invocation::from)
            }
        })
    }
}

fn config_failure(e: EnvError) -> Failure {
    Failure::Invalid(format!(
        "{e}\n(set it in the environment; the functions' variables are listed in docs/deploy.md)"
    ))
}

/// An alert as the alerts topic delivers it to a Lambda subscriber (fan-out, key-guard).
pub fn sns_event(alert: &AlertEvent) -> Value {
    let topic = "arn:aws:sns:local:000000000000:spendguard-alerts";
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": format!("{topic}:local"),
        "Sns": {
            "Type": "Notification",
            "MessageId": format!("local-{}", alert.alert_id),
            "TopicArn": topic,
            "Subject": alert.subject(),
            "Message": serde_json::to_string(alert).unwrap_or_default(),
            "Timestamp": alert.raised_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "SignatureVersion": "1",
            "Signature": "local",
            "SigningCertUrl": "https://sns.local.amazonaws.com/local.pem",
            "UnsubscribeUrl": "https://sns.local.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {
                "actions": {"Type": "String.Array", "Value": serde_json::to_string(&alert.action_names()).unwrap_or_default()},
                "severity": {"Type": "String", "Value": alert.severity.as_str()},
            }
        }
    }]})
}

/// The key-guard subscription's filter policy (`actions` in template.yaml and terraform/).
pub const KEY_GUARD_ACTIONS: [&str; 4] =
    ["disable_keys", "shutdown", "reduce_limits", "rotate_keys"];

pub fn key_guard_subscribes(alert: &AlertEvent) -> bool {
    alert
        .action_names()
        .iter()
        .any(|a| KEY_GUARD_ACTIONS.contains(a))
}

#[cfg(test)]
mod tests {
    use super::KEY_GUARD_ACTIONS;

    fn repo_file(path: &str) -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../").to_string() + path)
            .unwrap()
    }

    /// The `actions: [...]` list of the first `FilterPolicy` after `KeyGuardFunction:`.
    fn template_filter() -> Vec<String> {
        let template = repo_file("template.yaml");
        let function = &template[template.find("\n  KeyGuardFunction:").unwrap()..];
        let policy = &function[function.find("FilterPolicy:").unwrap()..];
        let line = policy.lines().nth(1).unwrap().trim();
        let list = line
            .strip_prefix("actions: [")
            .unwrap()
            .strip_suffix(']')
            .unwrap();
        list.split(',').map(|a| a.trim().to_string()).collect()
    }

    /// The key-guard subscription's `filter` JSON in terraform/.
    fn terraform_filter() -> Vec<String> {
        let main = repo_file("terraform/modules/spendguard/main.tf");
        let line = main
            .lines()
            .find(|l| l.contains("\"key-guard\"") && l.contains("filter"))
            .unwrap();
        let quoted = &line[line.find("filter = ").unwrap() + "filter = ".len()..];
        let quoted = quoted.trim().trim_end_matches('}').trim();
        let json: String = serde_json::from_str(quoted).unwrap();
        let filter: serde_json::Value = serde_json::from_str(&json).unwrap();
        serde_json::from_value(filter["actions"].clone()).unwrap()
    }

    #[test]
    fn key_guard_hears_what_the_deployment_sends_it() {
        let ours: Vec<String> = KEY_GUARD_ACTIONS.iter().map(|a| a.to_string()).collect();
        assert_eq!(ours, template_filter());
        assert_eq!(ours, terraform_filter());
    }
}
