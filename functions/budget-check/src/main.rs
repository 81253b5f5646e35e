use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use spendguard_app::env::process_env;

use budget_check::{app, config::Config, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config =
        Config::from_env(&process_env()).inspect_err(|e| tracing::error!("cannot start: {e}"))?;
    let sdk = spendguard_aws::sdk::sdk_config().await;
    let mut checker = app::checker(&config, &sdk).await?;
    checker.pending_age = Some(app::pending_age_metric(
        process_env().optional("AWS_LAMBDA_FUNCTION_NAME"),
    ));
    let (checker, role) = (&checker, config.role);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler::handle_any(checker, role, event.payload).await
    }))
    .await
}
