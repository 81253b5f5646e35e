use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use spendguard_core::bus::SnsBus;
use spendguard_core::clock::SystemClock;
use spendguard_core::env::process_env;
use spendguard_core::nightly::{Nightly, StdoutMetrics};
use spendguard_core::store::DynamoStore;

use daily_aggregate::handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = process_env();
    let table = env
        .required("SPENDGUARD_TABLE", "the DynamoDB table name")
        .inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let topic = env
        .required(
            "SPENDGUARD_ALERTS_TOPIC_ARN",
            "the ARN of the alerts SNS topic",
        )
        .inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let sdk = spendguard_core::aws::sdk_config().await;
    let nightly = Nightly {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)),
        bus: Arc::new(SnsBus::new(aws_sdk_sns::Client::new(&sdk), topic)),
        clock: Arc::new(SystemClock),
        metrics: Arc::new(StdoutMetrics),
    };
    let nightly = &nightly;
    run(service_fn(move |e: LambdaEvent<Value>| async move {
        handler::handle(nightly, e.payload).await
    }))
    .await
}
