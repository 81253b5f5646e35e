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

/// The emulator keeps DynamoDB's idempotency of `TransactWriteItems` on `ClientRequestToken`
/// (tests/moto/client_tokens.py): a transaction sent again with its token (the SDK's retry
/// after an attempt timed out) succeeds without being applied twice; the same token with other
/// parameters is refused as DynamoDB refuses it. (moto ignored the token: the retry was
/// applied again or cancelled on what the first made true, and a large ingest under load
/// reported records it had counted as duplicates.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sent_again_with_its_token_is_applied_once() {
    use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
    let sdk = aws::sdk().await;
    let (_store, table) = aws::new_store(&sdk).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let add = |amount: &str| {
        TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&table)
                    .key("PK", AttributeValue::S("TOKEN#test".into()))
                    .key("SK", AttributeValue::S("-".into()))
                    .update_expression("ADD #n :n")
                    .expression_attribute_names("#n", "n")
                    .expression_attribute_values(":n", AttributeValue::N(amount.into()))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    // tokens are kept per account across tables, as DynamoDB keeps them: fresh ones per run
    let (first, second) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let send = |amount: &'static str, token: &str| {
        client
            .transact_write_items()
            .transact_items(add(amount))
            .client_request_token(token)
            .send()
    };
    send("5", &first).await.unwrap();
    send("5", &first).await.unwrap();
    let mismatch = send("7", &first).await.unwrap_err();
    assert_eq!(
        mismatch.as_service_error().and_then(|e| e.meta().code()),
        Some("IdempotentParameterMismatchException"),
        "{mismatch:?}"
    );
    send("5", &second).await.unwrap();
    // DynamoDB's bound on a token: at most 36 characters
    let long = send("5", &"t".repeat(37)).await.unwrap_err();
    assert_eq!(
        long.as_service_error().and_then(|e| e.meta().code()),
        Some("ValidationException"),
        "{long:?}"
    );
    let item = client
        .get_item()
        .table_name(&table)
        .key("PK", AttributeValue::S("TOKEN#test".into()))
        .key("SK", AttributeValue::S("-".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        item.item().and_then(|i| i.get("n")),
        Some(&AttributeValue::N("10".into())),
        "the first token applied once, the second once"
    );
}
