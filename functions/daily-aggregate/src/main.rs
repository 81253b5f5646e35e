//! daily-aggregate's Lambda entry point (EventBridge schedule, manual backfills): only wires.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use spendguard_app::env::process_env;

use daily_aggregate::{app, config::Config, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config =
        Config::from_env(&process_env()).inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let sdk = spendguard_aws::sdk::sdk_config().await;
    let nightly = app::nightly(&config, &sdk);
    let nightly = &nightly;
    run(service_fn(move |e: LambdaEvent<Value>| async move {
        handler::handle(nightly, e.payload).await
    }))
    .await
}
