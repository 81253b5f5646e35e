//! alert-fanout's Lambda entry point (SNS alerts, acks, the digest schedule): only wires.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use spendguard_app::env::process_env;

use alert_fanout::{app, config::Config, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config =
        Config::from_env(&process_env()).inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let sdk = spendguard_aws::sdk::sdk_config().await;
    let fanout = app::fanout(&config, &sdk);
    let fanout = &fanout;
    run(service_fn(move |e: LambdaEvent<Value>| async move {
        fanout.handle(e.payload).await.map_err(handler::diagnostic)
    }))
    .await
}
