//! Ingest without a hot item (ADR 031): usage on DynamoDB counted on its leaf, ancestors rolled
//! up later, compared with the embedded store, which counts every scope in its one transaction
//! (the linear model of the counters).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::{DateTime, Duration, Utc};
use spendguard_app::ports::store::{SpendStore, StateStore};
use spendguard_aws::dynamo::DynamoStore;
use spendguard_domain::period::Zone;
use spendguard_domain::scope::Scope;
use spendguard_domain::usage::{
    CounterKey, HourCounters, HourKey, MonthCounters, USAGE_MARKER_TTL, UsageEntry, presum,
    presum_hours,
};
use spendguard_local::sqlite::SqliteStore;

use crate::aws;
use crate::conformance::record;

/// The time zones the counters are kept in (a budget in New York besides UTC).
pub fn zones() -> Vec<Zone> {
    vec![Zone::UTC, Zone::parse("America/New_York").unwrap()]
}

/// Scopes with hourly or rolling budgets: hour counters on the root and a provider too.
pub fn minute_scopes() -> BTreeSet<Scope> {
    BTreeSet::from([Scope::root(), Scope::parse("openai").unwrap()])
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Key `k` of a few providers and projects.
pub fn key_scope(k: usize) -> String {
    let provider = ["openai", "anthropic"][k % 2];
    format!("{provider}/p{}/k{k}", k % 3)
}

/// Record `id` of key `k`: `cents`, at `when`, with a model (the same name for every
/// provider) and a user.
pub fn entry(id: &str, k: usize, cents: i64, when: DateTime<Utc>) -> UsageEntry {
    let mut r = record(id, &key_scope(k), cents, when);
    r.provider = r.scope.provider().to_string();
    r.user = Some(format!("u{}", k % 4));
    UsageEntry::counting(&r, &zones(), &minute_scopes())
}

/// A fresh DynamoDB table in moto, its store's client carrying `interceptor`.
pub async fn intercepted_store(
    sdk: &SdkConfig,
    interceptor: impl aws_smithy_runtime_api::client::interceptors::Intercept + 'static,
) -> DynamoStore {
    let (_, table) = aws::new_store(sdk).await;
    store_on(sdk, &table, interceptor)
}

/// A store on `table`, its client carrying `interceptor`.
pub fn store_on(
    sdk: &SdkConfig,
    table: &str,
    interceptor: impl aws_smithy_runtime_api::client::interceptors::Intercept + 'static,
) -> DynamoStore {
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(interceptor)
            .build(),
    );
    DynamoStore::new(client, table)
}

/// Whether a `TransactWriteItems` body is a roll-up's: it deletes a leaf's pending items.
fn is_roll_up(body: &serde_json::Value) -> bool {
    body["TransactItems"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| {
            a.pointer("/Delete/Key/SK/S")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|sk| sk.starts_with("P#"))
        })
}

/// Ingests one more record of key `key` through `store` (another client) just before each
/// roll-up transaction is sent: a runaway key reporting between the roll-up's read of its
/// pending items and the roll-up's commit, every time, without depending on timing.
#[derive(Debug, Clone)]
pub struct IngestBeforeEachRollUp {
    store: DynamoStore,
    key: usize,
    now: DateTime<Utc>,
    /// The records ingested so far (one per roll-up transaction sent).
    pub ingested: Arc<std::sync::Mutex<Vec<UsageEntry>>>,
    /// Cleared: the roll-ups run alone.
    pub racing: Arc<std::sync::atomic::AtomicBool>,
}

impl IngestBeforeEachRollUp {
    pub fn new(store: DynamoStore, key: usize, now: DateTime<Utc>) -> Self {
        IngestBeforeEachRollUp {
            store,
            key,
            now,
            ingested: Default::default(),
            racing: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for IngestBeforeEachRollUp {
    fn name(&self) -> &'static str {
        "IngestBeforeEachRollUp"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let (operation, body) = aws::operation_and_body(context);
        if operation != "TransactWriteItems"
            || !self.racing.load(std::sync::atomic::Ordering::SeqCst)
            || !is_roll_up(&serde_json::from_slice(body)?)
        {
            return Ok(());
        }
        let mut ingested = self.ingested.lock().unwrap();
        let e = entry(&format!("race-{}", ingested.len()), self.key, 50, self.now);
        let (store, now, one) = (self.store.clone(), self.now, e.clone());
        // the interceptor is synchronous: the ingest runs to its end on a runtime of its own
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(store.ingest_usage(&[one], now, USAGE_MARKER_TTL))
        })
        .join()
        .expect("racing ingest thread")?;
        ingested.push(e);
        Ok(())
    }
}

/// The embedded store, the reference: every scope counted in the ingest's own transaction.
pub fn reference() -> Arc<dyn StateStore> {
    Arc::new(SqliteStore::in_memory().expect("in-memory sqlite"))
}

/// Every month and hour counter `entries` feed.
pub fn counters_fed(entries: &[UsageEntry]) -> (Vec<CounterKey>, Vec<HourKey>) {
    let months = presum(entries).unwrap().into_keys().collect();
    let hours = presum_hours(entries).unwrap().into_keys().collect();
    (months, hours)
}

/// Month and hour counters as a store reads them.
pub type Counters = (
    BTreeMap<CounterKey, MonthCounters>,
    BTreeMap<HourKey, HourCounters>,
);

pub async fn read_all(
    store: &dyn SpendStore,
    months: &[CounterKey],
    hours: &[HourKey],
) -> Counters {
    (
        store.read_counters(months).await.unwrap(),
        store.read_hours(hours).await.unwrap(),
    )
}

/// The first counter where `got` and `want` differ, described (`None`: all equal).
pub fn first_difference(got: &Counters, want: &Counters) -> Option<String> {
    for (key, w) in &want.0 {
        if got.0.get(key) != Some(w) {
            return Some(format!(
                "{} {} {}: got {:?}, want {w:?}",
                key.scope,
                key.zone.name(),
                key.month,
                got.0.get(key)
            ));
        }
    }
    for (key, w) in &want.1 {
        if got.1.get(key) != Some(w) {
            return Some(format!(
                "{} {}: got {:?}, want {w:?}",
                key.scope,
                key.label(),
                got.1.get(key)
            ));
        }
    }
    let extra = got.0.len() + got.1.len();
    let wanted = want.0.len() + want.1.len();
    (extra != wanted).then(|| format!("{extra} counters read, {wanted} expected"))
}

/// Ingests `entries` into `store` as one batch at `now`; the names of the pending items it
/// wrote.
pub async fn ingest(
    store: &dyn SpendStore,
    entries: &[UsageEntry],
    now: DateTime<Utc>,
) -> Vec<String> {
    store
        .ingest_usage(entries, now, USAGE_MARKER_TTL)
        .await
        .expect("ingest")
        .pending
}

/// `n` records over `keys` keys from `start`, a few minutes apart, of varied costs.
pub fn workload(prefix: &str, n: usize, keys: usize, start: DateTime<Utc>) -> Vec<UsageEntry> {
    (0..n)
        .map(|i| {
            let cents = 1 + (i as i64 * 37) % 500;
            let when = start + Duration::minutes(7 * i as i64);
            entry(&format!("{prefix}-{i}"), i % keys, cents, when)
        })
        .collect()
}

/// The webhook's ingest flow followed by what the table's stream then does: the records'
/// leaves rolled up, so that a scheduled check sees their spend in every ancestor.
pub async fn ingest_usage(
    store: &dyn StateStore,
    budgets: &[spendguard_domain::budget::Budget],
    records: &[spendguard_domain::usage::UsageRecord],
    sender: Option<&str>,
    now: DateTime<Utc>,
) -> spendguard_app::ports::store::StoreResult<spendguard_domain::usage::IngestOutcome> {
    let outcome =
        spendguard_app::flows::ingest::ingest_usage(store, budgets, records, sender, now).await?;
    let leaves: BTreeSet<Scope> = records.iter().map(|r| r.scope.clone()).collect();
    store
        .roll_up(&leaves.into_iter().collect::<Vec<_>>(), now)
        .await?;
    Ok(outcome)
}

/// Before each roll-up transaction is sent, deletes the first pending item it moves through
/// another client, as a concurrent roll-up of that item would: every attempt is cancelled
/// with one item gone, so a group of n items is down to none after n attempts, without
/// depending on timing.
#[derive(Debug, Clone)]
pub struct MoveOneBeforeEachRollUp {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// The roll-up transactions sent so far.
    pub attempts: Arc<std::sync::atomic::AtomicUsize>,
}

impl MoveOneBeforeEachRollUp {
    pub fn new(sdk: &SdkConfig, table: &str) -> Self {
        MoveOneBeforeEachRollUp {
            client: aws_sdk_dynamodb::Client::new(sdk),
            table: table.to_string(),
            attempts: Default::default(),
        }
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for MoveOneBeforeEachRollUp {
    fn name(&self) -> &'static str {
        "MoveOneBeforeEachRollUp"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let (operation, body) = aws::operation_and_body(context);
        let body: serde_json::Value = serde_json::from_slice(body)?;
        if operation != "TransactWriteItems" || !is_roll_up(&body) {
            return Ok(());
        }
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let first = body["TransactItems"][0]["Delete"]["Key"].clone();
        let text = |name: &str| first[name]["S"].as_str().unwrap_or_default().to_string();
        let (client, table, pk, sk) = (
            self.client.clone(),
            self.table.clone(),
            text("PK"),
            text("SK"),
        );
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(
                    client
                        .delete_item()
                        .table_name(table)
                        .key("PK", aws_sdk_dynamodb::types::AttributeValue::S(pk))
                        .key("SK", aws_sdk_dynamodb::types::AttributeValue::S(sk))
                        .send(),
                )
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .join()
        .expect("deleting thread")?;
        Ok(())
    }
}

/// Makes every pending item of `leaf` in `table` unreadable (its list of deltas removed), as
/// a hand edit or a bug would.
pub async fn spoil_pending_items(sdk: &SdkConfig, table: &str, leaf: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let client = aws_sdk_dynamodb::Client::new(sdk);
    for sk in pending_sks(sdk, table, leaf).await {
        client
            .update_item()
            .table_name(table)
            .key("PK", AttributeValue::S(format!("SPEND#{leaf}")))
            .key("SK", AttributeValue::S(sk))
            .update_expression("REMOVE targets")
            .send()
            .await
            .unwrap();
    }
}

/// The sort keys of the pending items of `leaf` in `table`.
pub async fn pending_sks(sdk: &SdkConfig, table: &str, leaf: &str) -> Vec<String> {
    pending_attribute(sdk, table, leaf, "SK").await
}

/// The index shard (`pending_shard`) of each pending item of `leaf` in `table`.
pub async fn pending_shards(sdk: &SdkConfig, table: &str, leaf: &str) -> Vec<String> {
    pending_attribute(sdk, table, leaf, "pending_shard").await
}

/// A text attribute of each pending item of `leaf` in `table`.
async fn pending_attribute(sdk: &SdkConfig, table: &str, leaf: &str, name: &str) -> Vec<String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let out = aws_sdk_dynamodb::Client::new(sdk)
        .query()
        .table_name(table)
        .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("SPEND#{leaf}")))
        .expression_attribute_values(":p", AttributeValue::S("P#".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .filter_map(|item| item.get(name)?.as_s().ok().cloned())
        .collect()
}
