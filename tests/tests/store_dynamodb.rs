//! The conformance suite on the DynamoDB store, through moto in server mode.

use std::sync::Arc;

use spendguard_tests::aws;
use spendguard_tests::conformance::Store;

async fn fresh() -> Store {
    let sdk = aws::sdk().await;
    let (store, _table) = aws::new_store(&sdk).await;
    Arc::new(store)
}

spendguard_tests::conformance_suite!(fresh());
spendguard_tests::detection_suite!(fresh());
