//! alert-fanout is not implemented yet: it refuses every event (no fake success). See the open issue.

mod handler;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|event: LambdaEvent<Value>| {
        handler::handle(event.payload)
    }))
    .await
}
