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

// The incident lifecycle against its reference model (tests/src/incidents.rs) on DynamoDB
// through moto: fewer cases than on SQLite (each DynamoDB request takes milliseconds here).
spendguard_tests::incident_model!(
    incident_lifecycle_matches_its_model,
    {
        let sdk = aws::sdk().await;
        let (store, _table) = aws::new_store(&sdk).await;
        Arc::new(store) as Store
    },
    60
);
