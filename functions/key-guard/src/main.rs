use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use spendguard_app::env::process_env;

use key_guard::{app, config::Config, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config =
        Config::from_env(&process_env()).inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let sdk = spendguard_aws::sdk::sdk_config().await;
    // the start's reads run while the runtime waits for the first event
    let key_guard = app::start(&config, &sdk);
    let key_guard = &key_guard;
    run(service_fn(move |e: LambdaEvent<Value>| async move {
        handler::handle_started(key_guard, e.payload).await
    }))
    .await
}
