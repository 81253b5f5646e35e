//! `spendguard invoke <function> --event FILE`: one function's handler with one event, on the
//! embedded store or (`--aws`) against AWS or an emulator — `sam local invoke` without Docker.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use spendguard_app::flows::nightly::{MetricsSink, StdoutMetrics};
use spendguard_app::ports::clock::{Clock, FixedClock, SystemClock};
use spendguard_app::ports::secrets::SecretVault;
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_local::file_vault::FileVault;

use crate::Failure;
use crate::local::{Function, Local, Target};
use crate::output::{errln, outln};

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The function to run.
    #[arg(value_enum)]
    pub function: Function,
    /// The event, as the function's trigger delivers it (see events/<function>/).
    #[arg(long, value_name = "FILE")]
    pub event: PathBuf,
    /// Run against AWS (or the emulator at AWS_ENDPOINT_URL) with the function's SPENDGUARD_*
    /// variables from the environment, instead of the embedded store.
    #[arg(long)]
    pub aws: bool,
    /// The embedded store (a SQLite file, created if missing).
    #[arg(long, value_name = "PATH", default_value = ".spendguard/state.db")]
    pub store: PathBuf,
    /// Load this budgets file into the embedded store first (as `spendguard check` does).
    #[arg(long, value_name = "FILE", conflicts_with = "aws")]
    pub budgets: Option<PathBuf>,
    /// Run as of this instant (RFC 3339) instead of now (embedded store only).
    #[arg(long, value_name = "TIME", conflicts_with = "aws")]
    pub now: Option<String>,
    /// Sign a `/usage` request with the embedded store's usage secret (and the current time),
    /// replacing the event's `webhook-*` headers.
    #[arg(long)]
    pub sign: bool,
}

pub fn parse_time(t: &str, flag: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Failure::Invalid(format!("{flag} `{t}`: not an RFC 3339 time: {e}")))
}

fn read_event(path: &Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Invalid(format!("{}: cannot read: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::Invalid(format!(
            "{}:{}:{}: not JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// Re-signs a Function URL request's body as Standard Webhooks with `secret`.
async fn sign(event: &mut Value, local: &Local, now: DateTime<Utc>) -> Result<(), Failure> {
    let reference = local
        .env()
        .required("SPENDGUARD_USAGE_SECRET_ARN", "the usage webhook's secret")
        .map_err(|e| Failure::Invalid(e.to_string()))?;
    let secret = FileVault
        .read(&reference)
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    let secrets = WebhookSecret::parse_list(secret.expose()).map_err(Failure::Run)?;
    let body = event
        .get("body")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::Invalid("--sign: the event has no `body` string".into()))?
        .to_string();
    let headers = event
        .get_mut("headers")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Failure::Invalid("--sign: the event has no `headers` object".into()))?;
    let id = headers
        .get("webhook-id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
    let signature = secrets[0].sign(&id, now.timestamp(), body.as_bytes());
    headers.insert("webhook-id".into(), id.into());
    headers.insert(
        "webhook-timestamp".into(),
        now.timestamp().to_string().into(),
    );
    headers.insert("webhook-signature".into(), signature.into());
    Ok(())
}

pub async fn run(args: InvokeArgs) -> Result<(), Failure> {
    let mut event = read_event(&args.event)?;
    let clock: Arc<dyn Clock> = match &args.now {
        Some(t) => Arc::new(FixedClock::new(parse_time(t, "--now")?)),
        None => Arc::new(SystemClock),
    };
    let target = if args.aws {
        Target::Aws(Default::default())
    } else {
        crate::serve::refuse_if_served(&args.store)?;
        Target::Embedded {
            store: args.store.clone(),
        }
    };
    let local = Local::new(&target, clock.clone(), Default::default()).await?;
    if let Some(path) = &args.budgets {
        let policy = crate::check::load(path)?;
        local
            .store()
            .put_policy(&policy)
            .await
            .map_err(|e| Failure::Run(e.to_string()))?;
    }
    if args.sign {
        if args.aws {
            return Err(Failure::Invalid(
                "--sign uses the embedded store's secret; with --aws, sign with your own".into(),
            ));
        }
        sign(&mut event, &local, clock.now()).await?;
    }
    let metrics: Arc<dyn MetricsSink> = Arc::new(StdoutMetrics);
    let outcome = local.invoke(args.function, event, metrics).await?;
    for alert in local.events() {
        errln!("published to the local alerts bus: {}", alert.subject());
    }
    match outcome {
        Ok(response) => {
            outln!("{}", pretty(&response));
            Ok(())
        }
        Err(error) => {
            outln!(
                "{}",
                pretty(&serde_json::to_value(&error).unwrap_or_default())
            );
            Err(Failure::Run(format!(
                "{} failed: {}: {}",
                args.function.name(),
                error.error_type,
                error.error_message
            )))
        }
    }
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}
