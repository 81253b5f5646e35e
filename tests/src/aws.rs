//! Emulated AWS: moto in server mode, started by `scripts/test` (see `tests/moto/server.py`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value;
use spendguard_aws::dynamo::DynamoStore;

/// The moto endpoint. Refuses to run against anything but a loopback address, so that a
/// developer's real AWS credentials are never used by the tests.
pub fn endpoint() -> String {
    let url = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:"),
        "AWS_ENDPOINT_URL must point at a local moto server (got `{url}`): run the tests with scripts/test"
    );
    url
}

/// The SDK configuration exactly as the functions load it (timeouts, retries,
/// `AWS_ENDPOINT_URL`), pointed at moto.
pub async fn sdk() -> SdkConfig {
    endpoint();
    crate::logs::capture();
    spendguard_aws::sdk::sdk_config().await
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Writes one raw number into a month counter item, as a hand edit (or a figure written
/// before the bounds) would: `SPEND#<scope>` / `M#<month>@UTC`, attribute `d<dd>_<metric>`.
pub async fn plant_counter(
    sdk: &SdkConfig,
    table: &str,
    scope: &str,
    month: &str,
    attribute: &str,
    value: &str,
) {
    use aws_sdk_dynamodb::types::AttributeValue;
    aws_sdk_dynamodb::Client::new(sdk)
        .update_item()
        .table_name(table)
        .key("PK", AttributeValue::S(format!("SPEND#{scope}")))
        .key("SK", AttributeValue::S(format!("M#{month}@UTC")))
        .update_expression("SET #d = :v")
        .expression_attribute_names("#d", attribute)
        .expression_attribute_values(":v", AttributeValue::N(value.into()))
        .send()
        .await
        .expect("plant a counter in moto");
}

/// A fresh table created with the deployment's definition.
pub async fn new_store(sdk: &SdkConfig) -> (DynamoStore, String) {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let table = unique("spendguard");
    match DynamoStore::create_table(&client, &table).await {
        Ok(_) => {}
        // the name is this test's alone: "already exists" is the SDK retrying a create whose
        // answer moto lost under load (seen once in 66 store tests)
        Err(e) if format!("{e:?}").contains("ResourceInUseException") => {}
        Err(e) => panic!("create table in moto: {e:?}"),
    }
    (DynamoStore::new(client, &table), table)
}

/// An SNS topic with an SQS queue subscribed: what was published is counted at the queue.
pub struct TopicProbe {
    pub topic_arn: String,
    pub queue_url: String,
    sqs: aws_sdk_sqs::Client,
}

impl TopicProbe {
    pub async fn new(sdk: &SdkConfig) -> TopicProbe {
        let sns = aws_sdk_sns::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let topic_arn = sns
            .create_topic()
            .name(unique("alerts"))
            .send()
            .await
            .expect("create topic")
            .topic_arn
            .expect("topic arn");
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("alerts-probe"))
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes");
        let queue_arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .expect("queue arn")
            .clone();
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .expect("subscribe");
        TopicProbe {
            topic_arn,
            queue_url,
            sqs,
        }
    }

    /// Every SNS envelope delivered to the queue so far (the queue is emptied).
    pub async fn drain(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut empty_rounds = 0;
        while empty_rounds < 2 {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("receive");
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_rounds += 1;
                continue;
            }
            empty_rounds = 0;
            for m in messages {
                let body: Value =
                    serde_json::from_str(m.body().unwrap_or("{}")).expect("SNS envelope is JSON");
                out.push(body);
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
        out
    }
}

/// DynamoDB's write operations.
pub const DYNAMODB_WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

/// An AWS request's operation: x-amz-target's action (JSON protocols) or `Action=` (query).
pub fn operation_name(target: Option<&str>, body: &[u8]) -> String {
    if let Some(target) = target {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|p| p.strip_prefix("Action="))
        .unwrap_or_default()
        .to_string()
}

/// The operation of a request an SDK client is about to send, and its body.
pub fn operation_and_body<'a>(
    context: &'a BeforeTransmitInterceptorContextRef<'_>,
) -> (String, &'a [u8]) {
    let request = context.request();
    let body = request.body().bytes().unwrap_or_default();
    (
        operation_name(request.headers().get("x-amz-target"), body),
        body,
    )
}

/// Counts the requests an SDK client sends (every attempt), by operation.
#[derive(Debug, Default, Clone)]
pub struct RequestCounter(Arc<Mutex<BTreeMap<String, usize>>>);

impl RequestCounter {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }

    /// How many requests of each operation (`TransactWriteItems`, `BatchGetItem`, ...).
    pub fn operations(&self) -> BTreeMap<String, usize> {
        self.0.lock().unwrap().clone()
    }

    /// DynamoDB writes among them.
    pub fn writes(&self) -> usize {
        let counts = self.0.lock().unwrap();
        DYNAMODB_WRITES.iter().filter_map(|w| counts.get(*w)).sum()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (operation, _) = operation_and_body(context);
        *self.0.lock().unwrap().entry(operation).or_default() += 1;
        Ok(())
    }
}

/// Records the partition key (`PK`) of every item a DynamoDB client writes, by operation:
/// the items of batches and transactions one by one, as IAM authorises them.
#[derive(Debug, Default, Clone)]
pub struct WriteRecorder(Arc<Mutex<Vec<Written>>>, Arc<Mutex<Vec<Vec<Written>>>>);

/// (operation, partition key) of one item written.
pub type Written = (String, String);

impl WriteRecorder {
    /// (operation, partition key) of every item written so far.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }

    /// The (operation, partition key) of each `TransactWriteItems` request's items, one list
    /// per request (every attempt), in the order sent.
    pub fn transactions(&self) -> Vec<Vec<Written>> {
        self.1.lock().unwrap().clone()
    }
}

/// The partition keys a DynamoDB write request names, item by item.
fn written_partition_keys(operation: &str, body: &Value) -> Vec<(String, String)> {
    let pk = |item: &Value| item["PK"]["S"].as_str().unwrap_or("<no PK>").to_string();
    let mut out = Vec::new();
    match operation {
        "PutItem" => out.push((operation.to_string(), pk(&body["Item"]))),
        "UpdateItem" | "DeleteItem" => out.push((operation.to_string(), pk(&body["Key"]))),
        "BatchWriteItem" => {
            for requests in body["RequestItems"]
                .as_object()
                .into_iter()
                .flat_map(|t| t.values())
            {
                for request in requests.as_array().into_iter().flatten() {
                    if let Some(item) = request.pointer("/PutRequest/Item") {
                        out.push(("PutItem".into(), pk(item)));
                    }
                    if let Some(key) = request.pointer("/DeleteRequest/Key") {
                        out.push(("DeleteItem".into(), pk(key)));
                    }
                }
            }
        }
        "TransactWriteItems" => {
            for action in body["TransactItems"].as_array().into_iter().flatten() {
                for (kind, field, as_operation) in [
                    ("Put", "Item", "PutItem"),
                    ("Update", "Key", "UpdateItem"),
                    ("Delete", "Key", "DeleteItem"),
                    ("ConditionCheck", "Key", "ConditionCheckItem"),
                ] {
                    if let Some(item) = action.get(kind).map(|a| &a[field]) {
                        out.push((as_operation.into(), pk(item)));
                    }
                }
            }
        }
        _ => {}
    }
    out
}

impl Intercept for WriteRecorder {
    fn name(&self) -> &'static str {
        "WriteRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (operation, body) = operation_and_body(context);
        if DYNAMODB_WRITES.contains(&operation.as_str()) {
            let body: Value = serde_json::from_slice(body)?;
            let items = written_partition_keys(&operation, &body);
            if operation == "TransactWriteItems" {
                self.1.lock().unwrap().push(items.clone());
            }
            self.0.lock().unwrap().extend(items);
        }
        Ok(())
    }
}

/// Posts to moto's own control API (for example to queue Cost Explorer results).
pub async fn moto_api(path: &str, body: &Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", endpoint()))
        .json(body)
        .send()
        .await
        .expect("moto control API");
    assert!(
        response.status().is_success(),
        "moto {path}: {}",
        response.status()
    );
}

/// A new secret in moto named `<name>-<unique>` holding `value`; returns its ARN.
pub async fn secret(sdk: &SdkConfig, name: &str, value: &str) -> String {
    crate::logs::secret_used(value);
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(unique(name))
        .secret_string(value)
        .send()
        .await
        .expect("create secret in moto")
        .arn
        .expect("secret arn")
}

/// A Secrets Manager stand-in that answers `GetSecretValue` for the secrets it holds as the
/// service does, once `hold` lets each answer through, and refuses what the service refuses,
/// in its JSON error shape: another method or path, another operation, a request without a
/// SigV4 `Authorization`, a `SecretId` it does not hold.
pub async fn secrets_manager_standin(
    secrets: Vec<(String, String)>,
    hold: Arc<tokio::sync::Semaphore>,
) -> crate::standin::StandIn {
    use crate::standin::{Reply, StandIn};
    let refused = |status: u16, kind: &str, message: &str| Reply {
        status,
        headers: vec![("content-type", "application/x-amz-json-1.1".into())],
        body: serde_json::json!({"__type": kind, "message": message}).to_string(),
        ..Default::default()
    };
    StandIn::start(move |r, _| {
        if r.method != "POST" || r.path != "/" {
            return refused(404, "UnknownOperationException", "no such route");
        }
        if !r
            .header("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential="))
        {
            return refused(
                400,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            );
        }
        if r.header("x-amz-target") != Some("secretsmanager.GetSecretValue") {
            return refused(400, "UnknownOperationException", "not GetSecretValue");
        }
        let id = serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|b| b["SecretId"].as_str().map(str::to_string))
            .unwrap_or_default();
        let Some((_, value)) = secrets.iter().find(|(arn, _)| *arn == id) else {
            return refused(
                400,
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret.",
            );
        };
        Reply {
            status: 200,
            headers: vec![("content-type", "application/x-amz-json-1.1".into())],
            body: serde_json::json!({"ARN": id, "Name": id, "VersionId": "v1",
                "SecretString": value, "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9})
            .to_string(),
            delay: None,
            hold: Some(hold.clone()),
        }
    })
    .await
}
