//! DynamoDB single-table store. Every key prefix of the table is defined in this file only.
//!
//! | item | PK | SK |
//! |---|---|---|
//! | budget | `BUDGETS` | `BUDGET#<id>` |
//! | settings | `BUDGETS` | `SETTINGS` |
//! | usage marker | `USAGE#<record id>` | `-` |
//! | counters (a month, a bucket per day) | `SPEND#<scope>` | `M#<yyyy-mm>@<zone>` |
//! | hour counters (expire after `HOUR_COUNTER_RETENTION`) | `SPEND#<scope>` | `H#<yyyy-mm-ddThh>` |
//! | one ingest transaction's deltas for a leaf's ancestor and dimension counters, until rolled up (ADR 031) | `SPEND#<leaf scope>` | `P#<transaction's idempotency token>` |
//! | quarter-hours of spend rolled up after a period it counts in may have ended, until the check evaluates them (ADR 031) | `LATE_SPEND#<shard, 0-15>` | `-` |
//! | until when the check last evaluated the periods that ended (ADR 031) | `ENDED_EVALUATED` | `-` |
//! | observation | `OBS#<budget>` | `<source>#<window>#<period>` |
//! | a source's day reading (expires after `SOURCE_DAY_RETENTION`) | `SRCDAY#<budget>` | `<yyyy-mm-dd>` |
//! | alert claim | `ALERT#<budget>` | `<window>#<period>#<tier>#<alert id>`, `recovery#<alert id>`, ... |
//! | delivery claim | `DELIVERY#<alert id>` | `<channel>` |
//! | open alert (pages, not recovered) | `OPEN_ALERTS` | `<alert id>` |
//! | warning queued for a digest | `DIGEST#<channel>` | `<alert id>` |
//! | key (spec from the budgets file, status and its version) | `KEYS` | `<key id>` |
//! | scopes that have counters in a month | `SCOPES#<yyyy-mm>` | `<scope>` |
//! | daily summary | `SUMMARY#<scope>` | `<yyyy-mm-dd>@<zone>`, `<yyyy-mm-dd>@<zone>#<source>` |
//! | key action lease and claims | `KEYACTION#<key id>` | `lease`, `rotate#<incident>` |
//! | index of switches not open | `KILL_INDEX` | `<scope>` |
//! | kill switch | `KILL#<scope>` | `STATE` |
//! | audit entry (expires after `AUDIT_RETENTION`) | `AUDIT#<yyyy-mm>` | `<timestamp>#<id>` |
//! | marker | `MSG#<namespace>#<id>` | `-` |
//! | cache | `CACHE#<key>` | `-` |
//! | reservation (the decision, and its holds while they hold) | `RESERVE#<request id>` | `-` |
//! | a window's total of outstanding holds | `HOLDS#<budget>#<window>#<period>` | `-` |
//! | one hold on a window, by when it expires | `HOLDS#<budget>#<window>#<period>` | `<expiry epoch, 12 digits>#<request id>` |

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, DeleteRequest, Get,
    GlobalSecondaryIndex, KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType,
    Put, PutRequest, ScalarAttributeType, TimeToLiveSpecification, TransactGetItem,
    TransactWriteItem, Update, WriteRequest,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::ClaimStore;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::MarkerStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::{AckOutcome, AlertStore};
use spendguard_app::ports::store::{FreshCounters, LateMark, LateSpend, PendingLeaves, SpendStore};
use spendguard_app::ports::store::{ReservationRequest, ReservationStore, Reserved};
use spendguard_app::ports::store::{StoreError, StoreResult, from_doc, to_doc};
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::authorize::{DECISION_MEMORY, Decision, Hold, Verdict, verdict};
use spendguard_domain::budget::Budget;
use spendguard_domain::keys::{KeyRecord, KeyStatus};
use spendguard_domain::money::{checked_add, parse_decimal};
use spendguard_domain::period::{YearMonth, counted_late, quarter_hour};
use spendguard_domain::records::{
    AUDIT_RETENTION, Acknowledgement, AuditEntry, Claim, ClaimOutcome, ClaimSpace, KillSwitch,
    Observation, OpenAlert, SourceDay, SwitchState, Versioned,
};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::{PolicySet, Settings};
use spendguard_domain::usage::{
    CounterKey, HOUR_COUNTER_RETENTION, HourCounters, HourKey, IngestOutcome, Metric,
    MonthCounters, Tally, UsageEntry, presum, presum_hours,
};

const PK: &str = "PK";
const SK: &str = "SK";
const TTL_ATTRIBUTE: &str = "expires_at";
const BUDGETS_PK: &str = "BUDGETS";
const SETTINGS_SK: &str = "SETTINGS";
const SINGLETON_SK: &str = "-";

fn budget_sk(id: &str) -> String {
    format!("BUDGET#{id}")
}
fn usage_marker_pk(id: &str) -> String {
    format!("USAGE#{id}")
}
fn counter_pk(scope: &Scope) -> String {
    format!("SPEND#{scope}")
}
fn counter_sk(key: &CounterKey) -> String {
    format!("M#{}@{}", key.month, key.zone)
}
fn hour_sk(key: &HourKey) -> String {
    format!("H#{}", key.label())
}
/// Where a leaf keeps what one ingest transaction (`chunk`: its idempotency token) owes the
/// other scopes' counters: written once by that transaction, never changed, deleted by the
/// roll-up that moves it (append-only, so an ingest never cancels a roll-up).
fn pending_sk(chunk: &str) -> String {
    format!("{PENDING_PREFIX}{chunk}")
}
const PENDING_PREFIX: &str = "P#";
/// A pending item's deltas: a list, one entry per counter item it feeds, each with the
/// counter's key (`pk`, `sk`), the attributes set on it (`set`) and those added (`add`).
const PENDING_TARGETS: &str = "targets";
/// ... and the holds of reserved requests on those counters' budgets (`window`, `sk`,
/// `amount`): released by the roll-up that adds the spend, not before (ADR 031).
const PENDING_HOLDS: &str = "holds";
/// Pending items a process remembers per leaf it wrote: a fresh read adds them for the leaves
/// its request wrote (earlier requests' spend on the same keys, not rolled up yet).
const REMEMBERED_PENDING: usize = 8;
/// At most this many remembered items per read (one `BatchGetItem`): the request's own items
/// are always read, the remembered ones only up to this bound.
const REMEMBERED_PER_READ: usize = MAX_BATCH_GET;

/// The name [`IngestOutcome::pending`] gives a pending item: its key, `PK` and `SK` on two
/// lines (no scope holds a line break).
fn pending_name(leaf: &Scope, token: &str) -> String {
    format!("{}\n{}", counter_pk(leaf), pending_sk(token))
}
fn pending_key(name: &str) -> StoreResult<(String, String)> {
    name.split_once('\n')
        .filter(|(pk, sk)| pk.starts_with("SPEND#") && sk.starts_with(PENDING_PREFIX))
        .map(|(pk, sk)| (pk.to_string(), sk.to_string()))
        .ok_or_else(|| StoreError::Corrupt(format!("`{name}` does not name a pending item")))
}
/// The sparse index of pending items (only they carry its keys): where the scheduled check
/// finds the leaves with something pending without reading every leaf (ADR 031).
pub const PENDING_INDEX: &str = "pending";
/// The index's partition key: `P#<shard>`, the shard a hash of the pending item's token (its
/// SK), so that one hot key's index writes spread over every shard rather than throttle one
/// (a throttled index throttles the table's writes that feed it: every key on that shard).
const PENDING_SHARD: &str = "pending_shard";
const PENDING_SHARDS: u8 = 16;
/// The index's sort key: the epoch second the pending item was written (ingest's `now`), so
/// that a bounded call takes the items that have waited longest (a backfilled record is not
/// late to roll up because it is old).
const PENDING_SINCE: &str = "pending_since";
/// Index entries one query page returns.
const PENDING_PAGE: i32 = 1000;
/// Pages per shard one call reads at most: a leaf with many pending items fills pages with
/// itself, and the others wait for the next call rather than make this one unbounded.
const PENDING_PAGES_PER_SHARD: usize = 4;

/// Where roll-ups mark spend they moved late ([`spendguard_domain::period::counted_late`]):
/// one item per shard (the first leaf's; a partition key each), a number set of quarter-hours
/// and a count of the moves that added to it, both added to by the transaction that moves the
/// spend, settled by the check that evaluated them.
const LATE_QUARTERS: &str = "quarters";
const LATE_MOVES: &str = "moves";
/// The check's record of until when it evaluated the periods that ended.
const ENDED_EVALUATED_PK: &str = "ENDED_EVALUATED";
const ENDED_EVALUATED_UNTIL: &str = "until";

fn late_spend_pk(shard: u8) -> String {
    format!("LATE_SPEND#{shard}")
}

fn late_spend_pk_of(leaf_pk: &str) -> String {
    late_spend_pk(Sha256::digest(leaf_pk.as_bytes())[0] % PENDING_SHARDS)
}

fn pending_shard(token: &str) -> String {
    let hash = Sha256::digest(token.as_bytes());
    format!("{PENDING_PREFIX}{}", hash[0] % PENDING_SHARDS)
}

/// The leaf whose pending item a stream record names (`SPEND#<leaf>`, `P#…`): what a roll-up
/// triggered by the table's stream rolls up. `None` for any other item.
pub fn pending_leaf(pk: &str, sk: &str) -> Option<Scope> {
    if !sk.starts_with(PENDING_PREFIX) {
        return None;
    }
    Scope::parse(pk.strip_prefix("SPEND#")?).ok()
}
fn counter_attribute(day: u32, metric: Metric) -> String {
    format!("d{day:02}_{}", metric.name())
}
fn observation_pk(budget_id: &str) -> String {
    format!("OBS#{budget_id}")
}
fn observation_sk(o: &Observation) -> String {
    format!("{}#{}#{}", o.source, o.window, o.period_key)
}
fn source_day_pk(budget_id: &str) -> String {
    format!("SRCDAY#{budget_id}")
}
/// Day readings outlive what the nightly run reads (the anomaly baseline and a month) and a
/// backfill of the year.
const SOURCE_DAY_RETENTION: Duration = Duration::days(400);
fn claim_pk(space: &ClaimSpace) -> String {
    match space {
        ClaimSpace::Alert { budget_id } => format!("ALERT#{budget_id}"),
        ClaimSpace::Delivery { alert_id } => format!("DELIVERY#{alert_id}"),
        ClaimSpace::Key { key_id } => format!("KEYACTION#{key_id}"),
    }
}
const OPEN_ALERTS_PK: &str = "OPEN_ALERTS";
const KEYS_PK: &str = "KEYS";
/// One item whose `version` every write of budgets, keys or settings moves, after the write.
const POLICY_VERSION_PK: &str = "POLICY_VERSION";
fn scopes_pk(month: YearMonth) -> String {
    format!("SCOPES#{month}")
}
fn summary_pk(scope: &Scope) -> String {
    format!("SUMMARY#{scope}")
}
fn summary_sk(summary: &DailySummary) -> String {
    format!("{}@{}", summary.date, summary.series_key())
}
/// Switches that are not open are listed here too, so a check finds them in one read.
const KILL_INDEX_PK: &str = "KILL_INDEX";
fn digest_pk(channel: &str) -> String {
    format!("DIGEST#{channel}")
}
fn kill_pk(scope: &Scope) -> String {
    format!("KILL#{scope}")
}
const KILL_SK: &str = "STATE";
fn audit_pk(month: YearMonth) -> String {
    format!("AUDIT#{month}")
}
fn marker_pk(namespace: &str, id: &str) -> String {
    format!("MSG#{namespace}#{id}")
}
fn reservation_pk(id: &str) -> String {
    format!("RESERVE#{id}")
}
fn holds_pk(window: &str) -> String {
    format!("HOLDS#{window}")
}
/// Sorted by expiry, so that the expired holds of a window are one key range.
fn hold_sk(until: DateTime<Utc>, id: &str) -> String {
    format!("{:012}#{id}", until.timestamp())
}
fn cache_pk(key: &str) -> String {
    format!("CACHE#{key}")
}

/// The version of a key's status (absent until the first `put_key_status`: version 0).
const KEY_STATUS_VERSION: &str = "status_version";

fn audit_item(entry: &AuditEntry) -> StoreResult<HashMap<String, AttributeValue>> {
    let mut item = key(
        audit_pk(YearMonth::of(entry.at.date_naive())),
        entry.sort_key(),
    );
    item.insert("doc".into(), s(to_doc(entry)?));
    // the table must not grow without bound (review finding #24)
    item.insert(
        TTL_ATTRIBUTE.into(),
        n((entry.at + AUDIT_RETENTION).timestamp()),
    );
    Ok(item)
}

fn key_record(item: &HashMap<String, AttributeValue>) -> StoreResult<KeyRecord> {
    Ok(KeyRecord {
        spec: from_doc("key", text_attr(item, "spec")?)?,
        status: from_doc("key status", text_attr(item, "status")?)?,
        version: match item.get(KEY_STATUS_VERSION) {
            Some(_) => number_attr(item, KEY_STATUS_VERSION)? as u64,
            None => 0,
        },
    })
}

/// Most actions DynamoDB accepts in one TransactWriteItems call.
const MAX_TRANSACTION_ACTIONS: usize = 100;
const MAX_BATCH_GET: usize = 100;
/// Items per `TransactGetItems`: DynamoDB's documented limit (100 since 2022; the tests' moto
/// is raised to it by tests/moto/transact_get_limit.py). A read of more counters and pending
/// items than this falls back to two reads (see `read_fresh`).
const MAX_TRANSACT_GET: usize = 100;
const MAX_BATCH_WRITE: usize = 25;
const MAX_ATTEMPTS: u32 = 6;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn key(pk: String, sk: impl Into<String>) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

fn sdk<E, R>(op: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(format!("DynamoDB {op}: {}", DisplayErrorContext(&e)))
}

fn built<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> StoreResult<T> {
    r.map_err(|e| StoreError::Unavailable(format!("DynamoDB request could not be built: {e}")))
}

fn text_attr<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> StoreResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::Corrupt(format!(
            "item lacks string attribute `{name}`"
        ))),
    }
}

fn decimal_attr(item: &HashMap<String, AttributeValue>, name: &str) -> StoreResult<Decimal> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => parse_decimal(v).map_err(|_| {
            StoreError::Corrupt(format!("attribute `{name}` = `{v}` is not a decimal"))
        }),
        _ => Err(StoreError::Corrupt(format!(
            "item lacks number attribute `{name}`"
        ))),
    }
}

fn number_attr(item: &HashMap<String, AttributeValue>, name: &str) -> StoreResult<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
            StoreError::Corrupt(format!("attribute `{name}` = `{v}` is not an integer"))
        }),
        _ => Err(StoreError::Corrupt(format!(
            "item lacks number attribute `{name}`"
        ))),
    }
}

async fn backoff(attempt: u32) {
    // 20 ms, 40 ms, 80 ms ... with jitter from the clock's sub-millisecond digits
    let jitter = u64::from(Utc::now().timestamp_subsec_micros() % 20);
    tokio::time::sleep(StdDuration::from_millis(20 * 2u64.pow(attempt) + jitter)).await;
}

/// The store on one DynamoDB table (`PK`, `SK` strings; TTL on `expires_at`).
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// (month, scope) pairs this process already listed in the scope index.
    indexed: std::sync::Arc<std::sync::Mutex<HashSet<(YearMonth, Scope)>>>,
    /// The names of the pending items this process wrote last, per leaf (`PK`, newest last).
    written_pending: std::sync::Arc<std::sync::Mutex<HashMap<String, VecDeque<String>>>>,
    /// Pending items one roll-up call reads and moves at most ([`ROLL_UP_ITEMS`]).
    roll_up_items: usize,
}

/// Pending items one roll-up call reads and moves at most, shared fairly among the leaves it
/// names: a backlog (a stalled stream, a hot key) costs each call bounded time and memory,
/// and the rest waits for the next call (the stream's next batch, the next check).
pub const ROLL_UP_ITEMS: usize = 2_000;
/// Items a roll-up reads before it moves them: the memory one call holds.
const ROLL_UP_BUFFER: usize = 500;
/// Items one query of a leaf's pending items asks for at most.
const PENDING_READ_PAGE: usize = 100;

impl DynamoStore {
    /// This store with another bound on the pending items one roll-up call moves (tests show
    /// the bound with a few items rather than thousands).
    pub fn with_roll_up_items(mut self, items: usize) -> Self {
        self.roll_up_items = items.max(1);
        self
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            indexed: Default::default(),
            written_pending: Default::default(),
            roll_up_items: ROLL_UP_ITEMS,
        }
    }

    /// Creates the table as the deployment defines it (on-demand, `PK`/`SK`, TTL).
    pub async fn create_table(client: &Client, table: &str) -> StoreResult<()> {
        let attr = |name: &str| {
            built(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )
        };
        let schema = |name: &str, kind: KeyType| {
            built(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build(),
            )
        };
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(SK)?)
            .attribute_definitions(attr(PENDING_SHARD)?)
            .attribute_definitions(built(
                AttributeDefinition::builder()
                    .attribute_name(PENDING_SINCE)
                    .attribute_type(ScalarAttributeType::N)
                    .build(),
            )?)
            .key_schema(schema(PK, KeyType::Hash)?)
            .key_schema(schema(SK, KeyType::Range)?)
            .global_secondary_indexes(built(
                GlobalSecondaryIndex::builder()
                    .index_name(PENDING_INDEX)
                    .key_schema(schema(PENDING_SHARD, KeyType::Hash)?)
                    .key_schema(schema(PENDING_SINCE, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build(),
            )?)
            .send()
            .await
            .map_err(|e| sdk("CreateTable", e))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(built(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build(),
            )?)
            .send()
            .await
            .map_err(|e| sdk("UpdateTimeToLive", e))?;
        Ok(())
    }

    async fn get_item(
        &self,
        key: HashMap<String, AttributeValue>,
    ) -> StoreResult<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk("GetItem", e))?;
        Ok(out.item)
    }

    async fn query_all(
        &self,
        pk: String,
        newest_first: bool,
        limit: Option<usize>,
    ) -> StoreResult<Vec<HashMap<String, AttributeValue>>> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(pk.clone()))
                .scan_index_forward(!newest_first)
                .consistent_read(true)
                .set_limit(limit.map(|l| l.min(1000) as i32))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            if limit.is_some_and(|l| items.len() >= l) {
                items.truncate(limit.unwrap_or(usize::MAX));
                return Ok(items);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// BatchGetItem over any number of keys, retrying unprocessed keys.
    /// The items of `wanted` (each asked for under its (PK, SK)), read in batches, each with
    /// what asked for it; absent items are left out.
    async fn batch_get_for<'k, K: Sync + 'k>(
        &self,
        wanted: Vec<((String, String), &'k K)>,
    ) -> StoreResult<Vec<(&'k K, HashMap<String, AttributeValue>)>> {
        let by_item: HashMap<(String, String), &K> = wanted.into_iter().collect();
        let requests = by_item
            .keys()
            .map(|(pk, sk)| key(pk.clone(), sk.clone()))
            .collect();
        let mut out = Vec::new();
        for item in self.batch_get(requests).await? {
            let id = (
                text_attr(&item, PK)?.to_string(),
                text_attr(&item, SK)?.to_string(),
            );
            if let Some(k) = by_item.get(&id) {
                out.push((*k, item));
            }
        }
        Ok(out)
    }

    async fn batch_get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> StoreResult<Vec<HashMap<String, AttributeValue>>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            let mut pending = chunk.to_vec();
            for attempt in 0.. {
                let request = built(
                    KeysAndAttributes::builder()
                        .set_keys(Some(pending))
                        .consistent_read(true)
                        .build(),
                )?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| sdk("BatchGetItem", e))?;
                if let Some(mut r) = out.responses {
                    found.extend(r.remove(&self.table).unwrap_or_default());
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if attempt + 1 >= MAX_ATTEMPTS {
                    return Err(StoreError::Unavailable(
                        "DynamoDB BatchGetItem: keys still unprocessed after retries".into(),
                    ));
                }
                backoff(attempt).await;
            }
        }
        Ok(found)
    }

    /// BatchWriteItem over any number of requests, retrying unprocessed items.
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> StoreResult<()> {
        for chunk in requests.chunks(MAX_BATCH_WRITE) {
            let mut pending = chunk.to_vec();
            for attempt in 0.. {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| sdk("BatchWriteItem", e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if attempt + 1 >= MAX_ATTEMPTS {
                    return Err(StoreError::Unavailable(
                        "DynamoDB BatchWriteItem: items still unprocessed after retries".into(),
                    ));
                }
                backoff(attempt).await;
            }
        }
        Ok(())
    }

    /// Writes whole month counters, replacing what is stored (and indexes their scopes): to move
    /// counters from the embedded store to a table, or to seed one quickly. Not for live
    /// ingest, which adds to counters atomically with its idempotency markers.
    pub async fn import_counters(
        &self,
        counters: &BTreeMap<CounterKey, MonthCounters>,
    ) -> StoreResult<()> {
        let mut requests = Vec::new();
        for (counter, month) in counters {
            let mut item = key(counter_pk(&counter.scope), counter_sk(counter));
            item.insert("scope".into(), s(counter.scope.as_str()));
            item.insert("zone".into(), s(counter.zone.name()));
            item.insert("month".into(), s(counter.month.to_string()));
            for (day, tally) in &month.days {
                for (metric, value) in &tally.0 {
                    item.insert(counter_attribute(*day, *metric), n(value.normalize()));
                }
            }
            requests.push(Self::put_request(item)?);
        }
        let scopes: BTreeSet<(YearMonth, &Scope)> =
            counters.keys().map(|k| (k.month, &k.scope)).collect();
        for (month, scope) in scopes {
            requests.push(Self::put_request(key(scopes_pk(month), scope.as_str()))?);
        }
        self.batch_write(requests).await
    }

    fn put_request(item: HashMap<String, AttributeValue>) -> StoreResult<WriteRequest> {
        Ok(WriteRequest::builder()
            .put_request(built(PutRequest::builder().set_item(Some(item)).build())?)
            .build())
    }

    fn budget_item(budget: &Budget) -> StoreResult<HashMap<String, AttributeValue>> {
        let mut item = key(BUDGETS_PK.into(), budget_sk(&budget.id));
        item.insert("doc".into(), s(to_doc(budget)?));
        Ok(item)
    }

    fn settings_item(settings: &Settings) -> StoreResult<HashMap<String, AttributeValue>> {
        let mut item = key(BUDGETS_PK.into(), SETTINGS_SK);
        item.insert("doc".into(), s(to_doc(settings)?));
        Ok(item)
    }

    /// In one read: the ids among `ids` whose usage marker exists and has not expired, and
    /// the reservations among them still holding (their records reconcile them).
    async fn read_for_ingest(
        &self,
        ids: &[&str],
        now: DateTime<Utc>,
    ) -> StoreResult<(HashSet<String>, HashMap<String, Holding>)> {
        let keys = ids
            .iter()
            .flat_map(|id| {
                [
                    key(usage_marker_pk(id), SINGLETON_SK),
                    key(reservation_pk(id), SINGLETON_SK),
                ]
            })
            .collect();
        let mut live = HashSet::new();
        let mut holding = HashMap::new();
        for item in self.batch_get(keys).await? {
            let pk = text_attr(&item, PK)?;
            if let Some(id) = pk.strip_prefix("USAGE#") {
                if number_attr(&item, TTL_ATTRIBUTE)? > now.timestamp() {
                    live.insert(id.to_string());
                }
            } else if let Some(h) = Holding::of(&item)? {
                holding.insert(h.id.clone(), h);
            }
        }
        Ok((live, holding))
    }

    /// A check, inside an ingest transaction, that the record's request holds no reservation
    /// (one that does cancels the transaction: the read path then releases it).
    fn not_holding(&self, id: &str) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .condition_check(built(
                ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(reservation_pk(id), SINGLETON_SK)))
                    .condition_expression("attribute_not_exists(#pk) OR #state <> :held")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":held", s(HELD))
                    .build(),
            )?)
            .build())
    }

    /// Lists the chunk's scopes under their months (what the nightly run reads instead of
    /// scanning). Each (month, scope) is written once per process.
    async fn index_scopes(&self, chunk: &[&UsageEntry]) -> StoreResult<()> {
        let wanted: BTreeSet<(YearMonth, Scope)> = chunk
            .iter()
            .flat_map(|e| e.deltas.iter().map(|d| (d.key.month, d.key.scope.clone())))
            .collect();
        let fresh: Vec<(YearMonth, Scope)> = {
            let known = self
                .indexed
                .lock()
                .map_err(|_| StoreError::Unavailable("index cache poisoned".into()))?;
            wanted.into_iter().filter(|k| !known.contains(k)).collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let requests = fresh
            .iter()
            .map(|(month, scope)| Self::put_request(key(scopes_pk(*month), scope.as_str())))
            .collect::<StoreResult<Vec<_>>>()?;
        self.batch_write(requests).await?;
        if let Ok(mut known) = self.indexed.lock() {
            known.extend(fresh);
        }
        Ok(())
    }

    /// Writes the markers and counter increments of `chunk` in one transaction; the names of
    /// the pending items it wrote. `Ok(None)`: the transaction was cancelled (a marker
    /// appeared, or a conflict) and nothing was written.
    /// `call` names the ingest call: its attempts share their token (DynamoDB applies a
    /// transaction whose token succeeded once, once), another call never does.
    async fn write_usage_chunk(
        &self,
        chunk: &[&UsageEntry],
        reservations: Reservations<'_>,
        call: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<Option<Vec<String>>> {
        let mut items = Vec::new();
        let mut token = Sha256::new();
        // DynamoDB keeps a token for 10 minutes per account and region, across tables, and
        // answers a call with a token that succeeded before with that success, changing
        // nothing: a replay of the same records in the same second (another call) must be
        // found duplicate by its markers, and two deployments must not share a token
        token.update(self.table.as_bytes());
        token.update([0]);
        token.update(call.as_bytes());
        token.update(now.timestamp().to_be_bytes());
        let holding = match reservations {
            Reservations::Read(holding) => holding,
            Reservations::Unread => {
                // a distinct request from the read path's retry of the same records
                token.update(b"unread");
                for e in chunk {
                    items.push(self.not_holding(&e.id)?);
                }
                &HashMap::new()
            }
        };
        // the whole content, not only the ids: DynamoDB refuses a token it saw within ten
        // minutes with other parameters (a record replayed with another amount in the same
        // second is a duplicate, not a 503)
        for e in chunk {
            token.update(format!("{e:?}\0{:?}\0", holding.get(&e.id)).as_bytes());
        }
        // the transaction's idempotency token also names its pending items: a retry of the
        // same request writes the very same items
        let token = hex::encode(token.finalize())[..36].to_string();
        for e in chunk {
            let mut marker = key(usage_marker_pk(&e.id), SINGLETON_SK);
            marker.insert(TTL_ATTRIBUTE.into(), n((now + ttl).timestamp()));
            items.push(
                TransactWriteItem::builder()
                    .put(built(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(marker))
                            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
                            .expression_attribute_names("#pk", PK)
                            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
                            .expression_attribute_values(":now", n(now.timestamp()))
                            .build(),
                    )?)
                    .build(),
            );
        }
        // the leaf's own counters directly; every other scope's in one new pending item per
        // leaf, rolled up later (ADR 031): no item here is shared with an unrelated leaf
        let (own, mut pending) = counter_writes(chunk)?;
        for write in &own {
            items.push(self.counter_update(write)?);
        }
        // the records of reserved requests settle them in the same transaction: the holds on
        // their leaf's own budgets released now, with the spend; the others owed by the
        // pending item until its roll-up adds the spend there (else, meanwhile, the spend
        // would be in neither, and /authorize would allow past an ancestor's cap)
        let mut released = Vec::new();
        for e in chunk {
            if let Some(h) = holding.get(&e.id) {
                let (now_released, owed) = h.split_at(&e.leaf);
                released.push(now_released);
                if !owed.is_empty() {
                    pending.entry(e.leaf.clone()).or_default().1.extend(owed);
                }
            }
        }
        for (leaf, (targets, owed)) in &pending {
            items.push(self.pending_put(leaf, &token, now, targets, owed)?);
        }
        items.extend(self.release_actions(&released.iter().collect::<Vec<_>>())?);
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(&token)
            .send()
            .await;
        match result {
            Ok(_) => {
                let names: Vec<String> = pending
                    .keys()
                    .map(|leaf| pending_name(leaf, &token))
                    .collect();
                self.remember_pending(&names);
                Ok(Some(names))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_transaction_canceled_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk("TransactWriteItems", e)),
        }
    }

    /// One shard of the pending index, oldest first, each entry's leaf and when its item was
    /// written; and, when the shard has more than [`PENDING_PAGES_PER_SHARD`] pages, the
    /// wait of the last entry read (the rest of the shard waited no longer).
    async fn pending_index_shard(
        &self,
        shard: u8,
    ) -> StoreResult<(Vec<(Scope, DateTime<Utc>)>, Option<DateTime<Utc>>)> {
        let mut entries = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        for _ in 0..PENDING_PAGES_PER_SHARD {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(PENDING_INDEX)
                .key_condition_expression("#shard = :shard")
                .expression_attribute_names("#shard", PENDING_SHARD)
                .expression_attribute_values(":shard", s(format!("{PENDING_PREFIX}{shard}")))
                .limit(PENDING_PAGE)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk("Query", e))?;
            for item in out.items() {
                let pk = text_attr(item, PK)?;
                let Some(leaf) = pending_leaf(pk, text_attr(item, SK)?) else {
                    continue;
                };
                let since = DateTime::from_timestamp(number_attr(item, PENDING_SINCE)?, 0)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("pending item of {pk}: `{PENDING_SINCE}`"))
                    })?;
                entries.push((leaf, since));
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok((entries, None)),
            }
        }
        let cut = entries.last().map(|(_, since)| *since);
        Ok((entries, cut))
    }

    fn remember_pending(&self, names: &[String]) {
        if let Ok(mut written) = self.written_pending.lock() {
            for name in names {
                let Some((pk, _)) = name.split_once('\n') else {
                    continue;
                };
                let remembered = written.entry(pk.to_string()).or_default();
                remembered.push_back(name.clone());
                if remembered.len() > REMEMBERED_PENDING {
                    remembered.pop_front();
                }
            }
        }
    }

    /// The pending item of `leaf` for the transaction `token`, its oldest record's time and
    /// when it is written: written only if new (a retry with the same token writes the same
    /// item; nothing else writes that key).
    fn pending_put(
        &self,
        leaf: &Scope,
        token: &str,
        written: DateTime<Utc>,
        targets: &[CounterWrite],
        owed: &[OwedHold],
    ) -> StoreResult<TransactWriteItem> {
        let mut item = key(counter_pk(leaf), pending_sk(token));
        item.insert(PENDING_SHARD.into(), s(pending_shard(token)));
        item.insert(PENDING_SINCE.into(), n(written.timestamp()));
        let targets = targets
            .iter()
            .map(|t| {
                let adds = t
                    .adds
                    .iter()
                    .map(|(name, value)| (name.clone(), n(value.normalize())))
                    .collect();
                AttributeValue::M(HashMap::from([
                    ("pk".to_string(), s(&t.pk)),
                    ("sk".to_string(), s(&t.sk)),
                    ("set".to_string(), AttributeValue::M(t.sets.clone())),
                    ("add".to_string(), AttributeValue::M(adds)),
                ]))
            })
            .collect();
        item.insert(PENDING_TARGETS.into(), AttributeValue::L(targets));
        if !owed.is_empty() {
            let owed = owed
                .iter()
                .map(|h| {
                    AttributeValue::M(HashMap::from([
                        ("window".to_string(), s(&h.window)),
                        ("sk".to_string(), s(&h.sk)),
                        ("amount".to_string(), n(h.amount.normalize())),
                    ]))
                })
                .collect();
            item.insert(PENDING_HOLDS.into(), AttributeValue::L(owed));
        }
        Ok(TransactWriteItem::builder()
            .put(built(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", PK)
                    .build(),
            )?)
            .build())
    }
}

/// One counter item's increment: what it sets and what it adds to.
#[derive(Debug, Clone)]
struct CounterWrite {
    pk: String,
    sk: String,
    sets: HashMap<String, AttributeValue>,
    adds: BTreeMap<String, Decimal>,
}

/// A reserved request's hold on a window of a budget above its record's leaf, released by the
/// roll-up of the leaf's pending item: the hold's entry (`HOLDS#<window>` / `sk`) and its share
/// of the window's total.
#[derive(Debug, Clone)]
struct OwedHold {
    window: String,
    sk: String,
    amount: Decimal,
}

/// What a chunk of entries writes: the leaves' own counter items, and per leaf what its
/// pending item carries (the other counters' increments, the holds it owes); each entry's
/// increments summed per item.
type ChunkWrites = (
    Vec<CounterWrite>,
    BTreeMap<Scope, (Vec<CounterWrite>, Vec<OwedHold>)>,
);

fn counter_writes(chunk: &[&UsageEntry]) -> StoreResult<ChunkWrites> {
    let out_of_range = |e: spendguard_domain::money::OutOfRange| StoreError::Corrupt(e.to_string());
    let mut months: BTreeMap<(Scope, CounterKey), BTreeMap<u32, Tally>> = BTreeMap::new();
    let mut hours: BTreeMap<(Scope, HourKey), HourCounters> = BTreeMap::new();
    for e in chunk {
        for (counter, days) in presum([*e]).map_err(out_of_range)? {
            let sums = months.entry((e.leaf.clone(), counter)).or_default();
            for (day, tally) in days {
                sums.entry(day)
                    .or_default()
                    .merge(&tally)
                    .map_err(out_of_range)?;
            }
        }
        for (hour, counters) in presum_hours([*e]).map_err(out_of_range)? {
            hours
                .entry((e.leaf.clone(), hour))
                .or_default()
                .merge(&counters)
                .map_err(out_of_range)?;
        }
    }
    let mut own = Vec::new();
    let mut pending: BTreeMap<Scope, (Vec<CounterWrite>, Vec<OwedHold>)> = BTreeMap::new();
    let mut place = |leaf: Scope, target: &Scope, write: CounterWrite| {
        if *target == leaf {
            own.push(write);
        } else {
            pending.entry(leaf).or_default().0.push(write);
        }
    };
    for ((leaf, counter), days) in months {
        let sets = HashMap::from([
            ("scope".to_string(), s(counter.scope.as_str())),
            ("zone".to_string(), s(counter.zone.name())),
            ("month".to_string(), s(counter.month.to_string())),
        ]);
        let adds = days
            .into_iter()
            .flat_map(|(day, tally)| {
                tally
                    .0
                    .into_iter()
                    .map(move |(metric, value)| (counter_attribute(day, metric), value))
            })
            .collect();
        let write = CounterWrite {
            pk: counter_pk(&counter.scope),
            sk: counter_sk(&counter),
            sets,
            adds,
        };
        place(leaf, &counter.scope, write);
    }
    for ((leaf, hour), counters) in hours {
        let expires = n((hour.hour + HOUR_COUNTER_RETENTION).timestamp());
        let write = CounterWrite {
            pk: counter_pk(&hour.scope),
            sk: hour_sk(&hour),
            sets: HashMap::from([(TTL_ATTRIBUTE.to_string(), expires)]),
            adds: counters.buckets().into_iter().collect(),
        };
        place(leaf, &hour.scope, write);
    }
    Ok((own, pending))
}

/// The items an entry's transaction writes: its leaf's own counters and the leaf's one
/// pending item (what packing counts against the action limit).
fn written_items(e: &UsageEntry) -> BTreeSet<String> {
    let months = e.deltas.iter().map(|d| (&d.key.scope, counter_sk(&d.key)));
    let hours = e.hours.iter().map(|h| (&h.key.scope, hour_sk(&h.key)));
    months
        .chain(hours)
        .map(|(scope, sk)| {
            if *scope == e.leaf {
                format!("{scope}|{sk}")
            } else {
                format!("{}|{PENDING_PREFIX}", e.leaf)
            }
        })
        .collect()
}

/// The counters an entry's pending item feeds (ancestors and dimensions).
fn pending_targets(e: &UsageEntry) -> BTreeSet<String> {
    let months = e.deltas.iter().map(|d| (&d.key.scope, counter_sk(&d.key)));
    let hours = e.hours.iter().map(|h| (&h.key.scope, hour_sk(&h.key)));
    months
        .chain(hours)
        .filter(|(scope, _)| **scope != e.leaf)
        .map(|(scope, sk)| format!("{scope}|{sk}"))
        .collect()
}

impl DynamoStore {
    /// The update of one counter item: `SET` its metadata, `ADD` its increments.
    /// A window's total of outstanding holds lowered by `amount` (holds released).
    fn holds_lowered(&self, window: &str, amount: Decimal) -> StoreResult<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(built(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(holds_pk(window), SINGLETON_SK)))
                    .update_expression("ADD #reserved :minus")
                    .expression_attribute_names("#reserved", "reserved")
                    .expression_attribute_values(":minus", n((-amount).normalize()))
                    .build(),
            )?)
            .build())
    }

    fn counter_update(&self, write: &CounterWrite) -> StoreResult<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(write.pk.clone(), write.sk.clone())));
        let mut sets = Vec::new();
        for (i, (name, value)) in write.sets.iter().enumerate() {
            sets.push(format!("#s{i} = :s{i}"));
            update = update
                .expression_attribute_names(format!("#s{i}"), name)
                .expression_attribute_values(format!(":s{i}"), value.clone());
        }
        let mut adds = Vec::new();
        for (i, (name, value)) in write.adds.iter().enumerate() {
            update = update
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":v{i}"), n(value.normalize()));
            adds.push(format!("#a{i} :v{i}"));
        }
        let expression = format!("SET {} ADD {}", sets.join(", "), adds.join(", "));
        Ok(TransactWriteItem::builder()
            .update(built(update.update_expression(expression).build())?)
            .build())
    }
}

/// A month counter as stored: a bucket per day and metric (`d<day>_<metric>`).
fn month_counters_of(item: &HashMap<String, AttributeValue>) -> MonthCounters {
    let mut month = MonthCounters::default();
    for (name, value) in item {
        let Some((day, metric)) = name.strip_prefix('d').and_then(|r| r.split_once('_')) else {
            continue;
        };
        let (Ok(day), Some(metric)) = (day.parse::<u32>(), Metric::parse(metric)) else {
            continue;
        };
        match value {
            AttributeValue::N(v) => month.read(day, metric, name, v),
            _ => {
                month
                    .unreadable
                    .entry(day)
                    .or_insert(format!("counter attribute `{name}` is not a number"));
            }
        }
    }
    month
}

/// An hour counter as stored ([`HourCounters::buckets`]).
fn hour_counters_of(item: &HashMap<String, AttributeValue>) -> HourCounters {
    let mut counters = HourCounters::default();
    for (name, value) in item {
        if let AttributeValue::N(v) = value
            && name != TTL_ATTRIBUTE
        {
            counters.read_bucket(name, v);
        }
    }
    counters
}

/// A counter a read asks for.
enum Counter<'k> {
    Month(&'k CounterKey),
    Hour(&'k HourKey),
}

/// A leaf's pending item as a roll-up reads it: its key and the increments it carries.
#[derive(Debug)]
struct PendingItem {
    key: (String, String),
    /// When it was written: spend counted in its leaf then and in the ancestors only now.
    written: DateTime<Utc>,
    targets: Vec<CounterWrite>,
    holds: Vec<OwedHold>,
}

impl PendingItem {
    fn of(item: &HashMap<String, AttributeValue>) -> StoreResult<PendingItem> {
        let key = (
            text_attr(item, PK)?.to_string(),
            text_attr(item, SK)?.to_string(),
        );
        let corrupt = |what: &str| StoreError::Corrupt(format!("pending item {key:?}: {what}"));
        let Some(AttributeValue::L(list)) = item.get(PENDING_TARGETS) else {
            return Err(corrupt("no list `targets`"));
        };
        let mut targets = Vec::new();
        for target in list {
            let AttributeValue::M(target) = target else {
                return Err(corrupt("a target is not a map"));
            };
            let (Some(AttributeValue::M(sets)), Some(AttributeValue::M(adds))) =
                (target.get("set"), target.get("add"))
            else {
                return Err(corrupt("a target lacks its `set` or `add` map"));
            };
            let adds = adds
                .keys()
                .map(|name| Ok((name.clone(), decimal_attr(adds, name)?)))
                .collect::<StoreResult<_>>()?;
            targets.push(CounterWrite {
                pk: text_attr(target, "pk")?.to_string(),
                sk: text_attr(target, "sk")?.to_string(),
                sets: sets.clone(),
                adds,
            });
        }
        let mut holds = Vec::new();
        if let Some(AttributeValue::L(list)) = item.get(PENDING_HOLDS) {
            for hold in list {
                let AttributeValue::M(hold) = hold else {
                    return Err(corrupt("a hold is not a map"));
                };
                holds.push(OwedHold {
                    window: text_attr(hold, "window")?.to_string(),
                    sk: text_attr(hold, "sk")?.to_string(),
                    amount: decimal_attr(hold, "amount")?,
                });
            }
        }
        let written = DateTime::from_timestamp(number_attr(item, PENDING_SINCE)?, 0)
            .ok_or_else(|| corrupt("`pending_since` out of range"))?;
        Ok(PendingItem {
            key,
            written,
            targets,
            holds,
        })
    }

    /// The items its roll-up updates besides deleting it: its targets, its holds' entries and
    /// their windows' totals.
    fn action_keys(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let targets = self.targets.iter().map(|t| (t.pk.clone(), t.sk.clone()));
        let holds = self.holds.iter().flat_map(|h| {
            [
                (holds_pk(&h.window), h.sk.clone()),
                (holds_pk(&h.window), SINGLETON_SK.to_string()),
            ]
        });
        targets.chain(holds)
    }
}

/// Groups pending items so that each group's deletes and its targets' updates fit one
/// transaction, with room for its late-spend mark.
fn pack_roll_up(pending: &[PendingItem]) -> Vec<Vec<&PendingItem>> {
    const ACTIONS: usize = MAX_TRANSACTION_ACTIONS - 1;
    let mut groups = Vec::new();
    let mut current: Vec<&PendingItem> = Vec::new();
    let mut targets: BTreeSet<(String, String)> = BTreeSet::new();
    for p in pending {
        let added = p.action_keys().filter(|t| !targets.contains(t)).count();
        if !current.is_empty() && current.len() + 1 + targets.len() + added > ACTIONS {
            groups.push(std::mem::take(&mut current));
            targets.clear();
        }
        targets.extend(p.action_keys());
        current.push(p);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// A page of a leaf's pending items: those read, those that cannot be read, where the next
/// page starts.
type PendingPage = (
    Vec<PendingItem>,
    Vec<StoreError>,
    Option<HashMap<String, AttributeValue>>,
);

/// How a roll-up transaction ended.
enum RollUp {
    Committed,
    /// Cancelled; these pending items (indexes into the group) were gone: another roll-up
    /// moved them. None gone: a conflict, try again.
    Cancelled(BTreeSet<usize>),
}

impl DynamoStore {
    /// A page of at most `limit` of a leaf's pending items from `start`, read consistently;
    /// those that cannot be read are left out and named in the second list (each fails only
    /// itself: review finding 3). The third: where the next page starts, if there may be one.
    async fn pending_page(
        &self,
        leaf: &Scope,
        start: Option<HashMap<String, AttributeValue>>,
        limit: usize,
    ) -> StoreResult<PendingPage> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :pending)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(counter_pk(leaf)))
            .expression_attribute_values(":pending", s(PENDING_PREFIX))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| sdk("Query", e))?;
        let mut items = Vec::new();
        let mut unreadable = Vec::new();
        for item in page.items() {
            match PendingItem::of(item) {
                Ok(p) => items.push(p),
                Err(e) => unreadable.push(e),
            }
        }
        let next = page.last_evaluated_key.filter(|k| !k.is_empty());
        Ok((items, unreadable, next))
    }

    /// Moves `pending` (any leaves') in as few transactions as its targets allow.
    async fn move_pending(
        &self,
        pending: &[PendingItem],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut moved = 0;
        for group in pack_roll_up(pending) {
            moved += self.roll_up_group(group, now).await?;
        }
        Ok(moved)
    }

    /// Moves a group of pending items into their targets, retrying only without the items
    /// another roll-up moved meanwhile (pending items never change, so nothing else can
    /// cancel a delete's condition). How many items it moved.
    async fn roll_up_group(
        &self,
        mut group: Vec<&PendingItem>,
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        for attempt in 0..MAX_ATTEMPTS {
            match self.try_roll_up(&group, now).await? {
                RollUp::Committed => return Ok(group.len()),
                RollUp::Cancelled(gone) if !gone.is_empty() => {
                    group = group
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !gone.contains(i))
                        .map(|(_, p)| p)
                        .collect();
                }
                RollUp::Cancelled(_) => backoff(attempt).await,
            }
            // every item left was moved by other roll-ups (review finding 4: this also ends
            // the last attempt, whose group may be empty)
            if group.is_empty() {
                return Ok(0);
            }
        }
        Err(StoreError::Conflict(format!(
            "roll-up of {} pending items of {} (transactions kept being cancelled)",
            group.len(),
            group[0].key.0
        )))
    }

    /// One transaction: each pending item deleted if it still exists, each target added the
    /// group's sum, and the quarter-hours of the items moved late marked.
    async fn try_roll_up(&self, group: &[&PendingItem], now: DateTime<Utc>) -> StoreResult<RollUp> {
        let out_of_range =
            |e: spendguard_domain::money::OutOfRange| StoreError::Corrupt(e.to_string());
        let mut targets: BTreeMap<(&str, &str), CounterWrite> = BTreeMap::new();
        let mut items = Vec::new();
        for p in group {
            items.push(
                TransactWriteItem::builder()
                    .delete(built(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(p.key.0.clone(), p.key.1.clone())))
                            .condition_expression("attribute_exists(#pk)")
                            .expression_attribute_names("#pk", PK)
                            .build(),
                    )?)
                    .build(),
            );
            for t in &p.targets {
                let target = targets
                    .entry((t.pk.as_str(), t.sk.as_str()))
                    .or_insert_with(|| CounterWrite {
                        adds: BTreeMap::new(),
                        ..t.clone()
                    });
                for (name, value) in &t.adds {
                    let sum = target.adds.entry(name.clone()).or_default();
                    *sum = checked_add(*sum, *value, name).map_err(out_of_range)?;
                }
            }
        }
        for write in targets.values() {
            items.push(self.counter_update(write)?);
        }
        // the holds the moved spend took the place of
        let mut lowered: BTreeMap<&str, Decimal> = BTreeMap::new();
        for h in group.iter().flat_map(|p| &p.holds) {
            let total = lowered.entry(h.window.as_str()).or_default();
            *total = checked_add(*total, h.amount, &h.window).map_err(out_of_range)?;
            items.push(
                TransactWriteItem::builder()
                    .delete(built(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(holds_pk(&h.window), &h.sk)))
                            .build(),
                    )?)
                    .build(),
            );
        }
        for (window, amount) in lowered {
            items.push(self.holds_lowered(window, amount)?);
        }
        // in the same transaction as the move, so that a check that reads the marks after it
        // sees the spend in the counters (and a crash cannot move spend without its mark)
        let late: BTreeSet<i64> = group
            .iter()
            .filter(|p| counted_late(p.written, now))
            .map(|p| quarter_hour(p.written).timestamp())
            .collect();
        if let Some(first) = group.first()
            && !late.is_empty()
        {
            items.push(
                TransactWriteItem::builder()
                    .update(built(
                        Update::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(late_spend_pk_of(&first.key.0), SINGLETON_SK)))
                            .update_expression("ADD #quarters :late, #moves :one")
                            .expression_attribute_names("#quarters", LATE_QUARTERS)
                            .expression_attribute_names("#moves", LATE_MOVES)
                            .expression_attribute_values(":one", n(1))
                            .expression_attribute_values(
                                ":late",
                                AttributeValue::Ns(late.iter().map(i64::to_string).collect()),
                            )
                            .build(),
                    )?)
                    .build(),
            );
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(RollUp::Committed),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    let gone = c
                        .cancellation_reasons()
                        .iter()
                        .take(group.len())
                        .enumerate()
                        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(i, _)| i)
                        .collect();
                    Ok(RollUp::Cancelled(gone))
                }
                _ => Err(sdk("TransactWriteItems", e)),
            },
        }
    }

    /// `counters` with the increments of `pending` items that feed them added.
    fn add_pending(
        counters: &mut FreshCounters,
        wanted: &HashMap<(String, String), Counter<'_>>,
        pending: &[HashMap<String, AttributeValue>],
    ) -> StoreResult<()> {
        let corrupt = |e: spendguard_domain::money::OutOfRange| StoreError::Corrupt(e.to_string());
        for item in pending {
            for t in PendingItem::of(item)?.targets {
                let Some(counter) = wanted.get(&(t.pk.clone(), t.sk.clone())) else {
                    continue;
                };
                let adds: HashMap<String, AttributeValue> = t
                    .adds
                    .iter()
                    .map(|(name, value)| (name.clone(), n(value.normalize())))
                    .collect();
                match counter {
                    Counter::Month(k) => {
                        let month = counters.0.entry((*k).clone()).or_default();
                        let part = month_counters_of(&adds);
                        for (day, tally) in part.days {
                            month
                                .days
                                .entry(day)
                                .or_default()
                                .merge(&tally)
                                .map_err(corrupt)?;
                        }
                        month.unreadable.extend(part.unreadable);
                    }
                    Counter::Hour(k) => {
                        counters
                            .1
                            .entry((*k).clone())
                            .or_default()
                            .merge(&hour_counters_of(&adds))
                            .map_err(corrupt)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `TransactGetItems` of `keys` (at most [`MAX_TRANSACT_GET`]), each answer in the order asked (`None`:
    /// absent), retried while a concurrent transaction cancels it.
    async fn transact_get(
        &self,
        keys: &[(String, String)],
    ) -> StoreResult<Vec<Option<HashMap<String, AttributeValue>>>> {
        let gets = keys
            .iter()
            .map(|(pk, sk)| {
                Ok(TransactGetItem::builder()
                    .get(built(
                        Get::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(pk.clone(), sk.clone())))
                            .build(),
                    )?)
                    .build())
            })
            .collect::<StoreResult<Vec<_>>>()?;
        for attempt in 0..MAX_ATTEMPTS {
            match self
                .client
                .transact_get_items()
                .set_transact_items(Some(gets.clone()))
                .send()
                .await
            {
                Ok(out) => {
                    return Ok(out
                        .responses
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| r.item)
                        .collect());
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_transaction_canceled_exception()) =>
                {
                    backoff(attempt).await;
                }
                Err(e) => return Err(sdk("TransactGetItems", e)),
            }
        }
        Err(StoreError::Conflict(
            "counters read in a snapshot (TransactGetItems kept being cancelled)".into(),
        ))
    }
}

impl DynamoStore {
    /// Read-modify-write of an open alert, guarded by its previous document (retried on a
    /// concurrent change). False when there is no such open alert.
    async fn update_open_alert(
        &self,
        alert_id: &str,
        change: impl Fn(&mut OpenAlert),
    ) -> StoreResult<bool> {
        for attempt in 0..MAX_ATTEMPTS {
            let Some(item) = self.get_item(key(OPEN_ALERTS_PK.into(), alert_id)).await? else {
                return Ok(false);
            };
            let before = text_attr(&item, "doc")?.to_string();
            let mut alert: OpenAlert = from_doc("open alert", &before)?;
            change(&mut alert);
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(OPEN_ALERTS_PK.into(), alert_id)))
                .update_expression("SET #doc = :after")
                .condition_expression("#doc = :before")
                .expression_attribute_names("#doc", "doc")
                .expression_attribute_values(":after", s(to_doc(&alert)?))
                .expression_attribute_values(":before", s(before))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    backoff(attempt).await
                }
                Err(e) => return Err(sdk("UpdateItem", e)),
            }
        }
        Err(StoreError::Conflict(format!("open alert {alert_id}")))
    }
}

const HELD: &str = "held";
/// Denied, reconciled or expired: holds nothing.
const SETTLED: &str = "settled";

/// A reservation still holding, as ingest and the expiry sweep read it.
#[derive(Debug, Clone)]
struct Holding {
    id: String,
    holds: Vec<Hold>,
    until: DateTime<Utc>,
}

impl Holding {
    fn of(item: &HashMap<String, AttributeValue>) -> StoreResult<Option<Holding>> {
        if text_attr(item, "state")? != HELD {
            return Ok(None);
        }
        let pk = text_attr(item, PK)?;
        Ok(Some(Holding {
            id: pk.trim_start_matches("RESERVE#").to_string(),
            holds: from_doc("reservation holds", text_attr(item, "holds")?)?,
            until: DateTime::from_timestamp(number_attr(item, "hold_until")?, 0)
                .ok_or_else(|| StoreError::Corrupt(format!("{pk}: hold_until out of range")))?,
        }))
    }

    /// Its holds on `leaf`'s own budgets (released with the record's ingest), and those on
    /// other budgets, owed until the record's roll-up.
    fn split_at(&self, leaf: &Scope) -> (Holding, Vec<OwedHold>) {
        let (own, other): (Vec<Hold>, Vec<Hold>) =
            self.holds.iter().cloned().partition(|h| h.scope == *leaf);
        let owed = other
            .into_iter()
            .map(|h| OwedHold {
                sk: hold_sk(self.until, &self.id),
                window: h.window,
                amount: h.amount,
            })
            .collect();
        (
            Holding {
                holds: own,
                ..self.clone()
            },
            owed,
        )
    }

    /// The items releasing it writes (for packing transactions).
    fn items(&self) -> BTreeSet<String> {
        let mut items = BTreeSet::from([reservation_pk(&self.id)]);
        for h in &self.holds {
            items.insert(holds_pk(&h.window));
            items.insert(format!(
                "{}|{}",
                holds_pk(&h.window),
                hold_sk(self.until, &self.id)
            ));
        }
        items
    }
}

/// How a reservation transaction ended.
enum Attempt {
    Decided(Reserved),
    /// The id was decided before.
    Known,
    /// These windows had no room for their hold.
    Full(Vec<String>),
    /// A concurrent transaction touched the same items: try again.
    Conflict,
}

impl DynamoStore {
    /// Releases `holdings` (each only if it still holds): settled, each window's total lowered
    /// once per window (one transaction may update an item only once), hold entries deleted.
    fn release_actions(&self, holdings: &[&Holding]) -> StoreResult<Vec<TransactWriteItem>> {
        let mut actions = Vec::new();
        let mut lowered: BTreeMap<&str, Decimal> = BTreeMap::new();
        for h in holdings {
            actions.push(
                TransactWriteItem::builder()
                    .update(built(
                        Update::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(reservation_pk(&h.id), SINGLETON_SK)))
                            .update_expression("SET #state = :settled")
                            .condition_expression("#state = :held")
                            .expression_attribute_names("#state", "state")
                            .expression_attribute_values(":settled", s(SETTLED))
                            .expression_attribute_values(":held", s(HELD))
                            .build(),
                    )?)
                    .build(),
            );
            for hold in &h.holds {
                let total = lowered.entry(hold.window.as_str()).or_default();
                *total = total.checked_add(hold.amount).ok_or_else(|| {
                    StoreError::Corrupt(format!("holds on {} out of range", hold.window))
                })?;
                actions.push(
                    TransactWriteItem::builder()
                        .delete(built(
                            Delete::builder()
                                .table_name(&self.table)
                                .set_key(Some(key(holds_pk(&hold.window), hold_sk(h.until, &h.id))))
                                .build(),
                        )?)
                        .build(),
                );
            }
        }
        for (window, amount) in lowered {
            actions.push(self.holds_lowered(window, amount)?);
        }
        Ok(actions)
    }

    /// The reservation item recording `verdict` (holding `holds` until `until` when allowed),
    /// written only when the id is new or forgotten.
    fn reservation_put(
        &self,
        request: &ReservationRequest,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> StoreResult<Put> {
        let holding = verdict.decision == Decision::Allow && !request.holds.is_empty();
        let mut item = key(reservation_pk(&request.id), SINGLETON_SK);
        item.insert("verdict".into(), s(to_doc(verdict)?));
        item.insert("state".into(), s(if holding { HELD } else { SETTLED }));
        item.insert("holds".into(), s(to_doc(&request.holds)?));
        item.insert("hold_until".into(), n(request.expires_at.timestamp()));
        item.insert(TTL_ATTRIBUTE.into(), n((now + DECISION_MEMORY).timestamp()));
        built(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#exp", TTL_ATTRIBUTE)
                .expression_attribute_values(":now", n(now.timestamp()))
                .build(),
        )
    }

    /// One transaction: the reservation recorded as allowed, and each hold added to its
    /// window's total on condition that the total leaves room for it (cap - amount).
    async fn try_reserve(
        &self,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Attempt> {
        let allowed = verdict(Decision::Allow, &request.holds, &request.outstanding_seen);
        let mut items = vec![
            TransactWriteItem::builder()
                .put(self.reservation_put(request, &allowed, now)?)
                .build(),
        ];
        for h in &request.holds {
            items.push(
                TransactWriteItem::builder()
                    .update(built(
                        Update::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(holds_pk(&h.window), SINGLETON_SK)))
                            .update_expression("ADD #reserved :amount")
                            .condition_expression(
                                "attribute_not_exists(#reserved) OR #reserved <= :room",
                            )
                            .expression_attribute_names("#reserved", "reserved")
                            .expression_attribute_values(":amount", n(h.amount.normalize()))
                            .expression_attribute_values(":room", n((h.cap - h.amount).normalize()))
                            .build(),
                    )?)
                    .build(),
            );
            let mut entry = key(
                holds_pk(&h.window),
                hold_sk(request.expires_at, &request.id),
            );
            entry.insert("amount".into(), s(h.amount.normalize().to_string()));
            // the window's total counts this entry until a sweep or its record releases it: the
            // table's TTL may delete it only after the window's period has ended (the longest,
            // a month, is shorter than the decision is remembered)
            entry.insert(TTL_ATTRIBUTE.into(), n((now + DECISION_MEMORY).timestamp()));
            items.push(
                TransactWriteItem::builder()
                    .put(built(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(entry))
                            .build(),
                    )?)
                    .build(),
            );
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let cancelled = match result {
            Ok(_) => {
                return Ok(Attempt::Decided(Reserved {
                    verdict: allowed,
                    replayed: false,
                }));
            }
            Err(e) => match e.as_service_error() {
                Some(
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c),
                ) => c.cancellation_reasons().to_vec(),
                _ => return Err(sdk("TransactWriteItems", e)),
            },
        };
        let failed = |i: usize| {
            cancelled
                .get(i)
                .and_then(|r| r.code())
                .is_some_and(|c| c == "ConditionalCheckFailed")
        };
        if failed(0) {
            return Ok(Attempt::Known);
        }
        // the window updates are items 1, 3, 5, ...
        let full: Vec<String> = request
            .holds
            .iter()
            .enumerate()
            .filter(|(i, _)| failed(1 + 2 * i))
            .map(|(_, h)| h.window.clone())
            .collect();
        Ok(if full.is_empty() {
            Attempt::Conflict
        } else {
            Attempt::Full(full)
        })
    }

    /// The verdict recorded for `id` (a replay).
    async fn recorded(&self, id: &str) -> StoreResult<Reserved> {
        let item = self
            .get_item(key(reservation_pk(id), SINGLETON_SK))
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("reservation {id} vanished")))?;
        Ok(Reserved {
            verdict: from_doc("reservation verdict", text_attr(&item, "verdict")?)?,
            replayed: true,
        })
    }

    /// Records a denial (holding nothing), unless the id was decided meanwhile.
    async fn deny(
        &self,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Reserved> {
        let windows: Vec<String> = request.holds.iter().map(|h| h.window.clone()).collect();
        let outstanding = self.outstanding(&windows, now).await?;
        let denied = verdict(Decision::Deny, &request.holds, &outstanding);
        let put = self.reservation_put(request, &denied, now)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Reserved {
                verdict: denied,
                replayed: false,
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                self.recorded(&request.id).await
            }
            Err(e) => Err(sdk("PutItem", e)),
        }
    }

    /// Releases the holds of `window` that expired by `now` (DynamoDB's TTL deletes late and
    /// moto never does: expiry is decided here). How many were released.
    async fn sweep(&self, window: &str, now: DateTime<Utc>) -> StoreResult<usize> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :first AND :expired")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(holds_pk(window)))
            .expression_attribute_values(":first", s("0"))
            .expression_attribute_values(":expired", s(format!("{:012}", now.timestamp() + 1)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk("Query", e))?;
        let ids: Vec<String> = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                text_attr(item, SK)
                    .map(|sk| sk.split_once('#').map_or(sk, |(_, id)| id).to_string())
            })
            .collect::<StoreResult<_>>()?;
        let keys = ids
            .iter()
            .map(|id| key(reservation_pk(id), SINGLETON_SK))
            .collect();
        let mut released = 0;
        for item in self.batch_get(keys).await? {
            let Some(holding) = Holding::of(&item)? else {
                continue;
            };
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(self.release_actions(&[&holding])?))
                .send()
                .await;
            match result {
                Ok(_) => released += 1,
                // reconciled or released by someone else meanwhile
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_transaction_canceled_exception()) => {}
                Err(e) => return Err(sdk("TransactWriteItems", e)),
            }
        }
        Ok(released)
    }
}

#[async_trait]
impl ReservationStore for DynamoStore {
    async fn outstanding(
        &self,
        windows: &[String],
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<Decimal>> {
        let wanted = windows
            .iter()
            .map(|w| ((holds_pk(w), SINGLETON_SK.to_string()), w))
            .collect();
        let mut totals: HashMap<&String, Decimal> = HashMap::new();
        for (window, item) in self.batch_get_for(wanted).await? {
            totals.insert(window, decimal_attr(&item, "reserved")?);
        }
        Ok(windows
            .iter()
            .map(|w| totals.get(w).copied().unwrap_or_default())
            .collect())
    }

    async fn reserve(
        &self,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Reserved> {
        // a hold larger than its window's room cannot fit whatever expires
        if request.holds.iter().any(|h| h.amount > h.cap) {
            return self.deny(request, now).await;
        }
        let mut swept = false;
        for attempt in 0..MAX_ATTEMPTS {
            match self.try_reserve(request, now).await? {
                Attempt::Decided(reserved) => return Ok(reserved),
                Attempt::Known => return self.recorded(&request.id).await,
                Attempt::Full(windows) => {
                    // expired holds may be what fills them: released once, then tried again
                    let mut released = 0;
                    if !swept {
                        swept = true;
                        for w in &windows {
                            released += self.sweep(w, now).await?;
                        }
                    }
                    if released == 0 {
                        return self.deny(request, now).await;
                    }
                }
                Attempt::Conflict => backoff(attempt).await,
            }
        }
        Err(StoreError::Conflict(format!(
            "reservation {} (transactions kept being cancelled)",
            request.id
        )))
    }
}

/// What an ingest transaction knows of the records' reservations.
#[derive(Clone, Copy)]
enum Reservations<'a> {
    /// Read before: these hold, and are released in the transaction.
    Read(&'a HashMap<String, Holding>),
    /// Not read: the transaction checks that none holds.
    Unread,
}

/// Whether `entries` fit one transaction written without a read first (a marker and a
/// reservation check per record, one update per counter, one pending item per leaf that its
/// roll-up can move in one transaction).
fn fits_unread(entries: &[&UsageEntry]) -> bool {
    let counters: BTreeSet<String> = entries.iter().flat_map(|e| written_items(e)).collect();
    let mut targets: BTreeMap<&Scope, BTreeSet<String>> = BTreeMap::new();
    for e in entries {
        targets
            .entry(&e.leaf)
            .or_default()
            .extend(pending_targets(e));
    }
    2 * entries.len() + counters.len() <= MAX_TRANSACTION_ACTIONS
        && targets.values().all(|t| t.len() < MAX_TRANSACTION_ACTIONS)
}

/// Groups entries so that each group fits one transaction (markers + one update per counter)
/// and each leaf's pending item in it fits one roll-up transaction (its delete and one update
/// per counter it feeds).
fn pack_transactions<'a>(
    entries: &[&'a UsageEntry],
    holding: &HashMap<String, Holding>,
) -> StoreResult<Vec<Vec<&'a UsageEntry>>> {
    let mut groups = Vec::new();
    let mut current: Vec<&UsageEntry> = Vec::new();
    let mut counters: BTreeSet<String> = BTreeSet::new();
    let mut targets: BTreeMap<&Scope, BTreeSet<String>> = BTreeMap::new();
    for e in entries {
        let mut own = written_items(e);
        let mut fed = pending_targets(e);
        if let Some(h) = holding.get(&e.id) {
            // released now: the reservation and the holds on the leaf's own budgets; the
            // others ride in the leaf's pending item, released by its roll-up
            let (released, owed) = h.split_at(&e.leaf);
            own.extend(released.items());
            for o in owed {
                fed.insert(format!("{}|{}", holds_pk(&o.window), o.sk));
                fed.insert(holds_pk(&o.window));
            }
        }
        if own.len() + 1 > MAX_TRANSACTION_ACTIONS || fed.len() + 1 > MAX_TRANSACTION_ACTIONS {
            return Err(StoreError::Unavailable(format!(
                "usage record {} touches {} counters (scope depth x time zones): more than one transaction holds",
                e.id,
                own.len().max(fed.len())
            )));
        }
        let added = own.iter().filter(|k| !counters.contains(*k)).count();
        let leaf_fed = targets
            .get(&e.leaf)
            .map_or(fed.len(), |t| t.union(&fed).count());
        if !current.is_empty()
            && (current.len() + 1 + counters.len() + added > MAX_TRANSACTION_ACTIONS
                || leaf_fed + 1 > MAX_TRANSACTION_ACTIONS)
        {
            groups.push(std::mem::take(&mut current));
            counters.clear();
            targets.clear();
        }
        counters.extend(own);
        targets.entry(&e.leaf).or_default().extend(fed);
        current.push(e);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    Ok(groups)
}

impl DynamoStore {
    /// Moves the policy's version (after the write it stands for).
    async fn policy_changed(&self) -> StoreResult<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(POLICY_VERSION_PK.into(), SINGLETON_SK)))
            .update_expression("ADD #version :one")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| sdk("UpdateItem", e))?;
        Ok(())
    }
}

#[async_trait]
impl PolicyStore for DynamoStore {
    async fn put_policy(&self, set: &PolicySet) -> StoreResult<()> {
        let keep: HashSet<String> = set.budgets.iter().map(|b| budget_sk(&b.id)).collect();
        let mut requests = Vec::new();
        for item in self.query_all(BUDGETS_PK.into(), false, None).await? {
            let sk = text_attr(&item, SK)?;
            if sk != SETTINGS_SK && !keep.contains(sk) {
                requests.push(
                    WriteRequest::builder()
                        .delete_request(built(
                            DeleteRequest::builder()
                                .set_key(Some(key(BUDGETS_PK.into(), sk)))
                                .build(),
                        )?)
                        .build(),
                );
            }
        }
        for b in &set.budgets {
            requests.push(Self::put_request(Self::budget_item(b)?)?);
        }
        requests.push(Self::put_request(Self::settings_item(&set.settings)?)?);
        let keep_keys: HashSet<&str> = set.keys.iter().map(|k| k.id.as_str()).collect();
        for item in self.query_all(KEYS_PK.into(), false, None).await? {
            let sk = text_attr(&item, SK)?;
            if !keep_keys.contains(sk) {
                requests.push(
                    WriteRequest::builder()
                        .delete_request(built(
                            DeleteRequest::builder()
                                .set_key(Some(key(KEYS_PK.into(), sk)))
                                .build(),
                        )?)
                        .build(),
                );
            }
        }
        self.batch_write(requests).await?;
        for k in &set.keys {
            // a key's status survives re-applying the budgets file
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(KEYS_PK.into(), &k.id)))
                .update_expression("SET #spec = :spec, #status = if_not_exists(#status, :active)")
                .expression_attribute_names("#spec", "spec")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":spec", s(to_doc(k)?))
                .expression_attribute_values(":active", s(to_doc(&KeyStatus::Active)?))
                .send()
                .await
                .map_err(|e| sdk("UpdateItem", e))?;
        }
        self.policy_changed().await
    }

    async fn load_policy(&self) -> StoreResult<PolicySet> {
        let mut set = PolicySet::default();
        for item in self.query_all(BUDGETS_PK.into(), false, None).await? {
            let sk = text_attr(&item, SK)?;
            let doc = text_attr(&item, "doc")?;
            if sk == SETTINGS_SK {
                set.settings = from_doc("settings", doc)?;
            } else {
                set.budgets.push(from_doc(sk, doc)?);
            }
        }
        set.keys = self.keys().await?.into_iter().map(|k| k.spec).collect();
        Ok(set)
    }

    async fn policy_version(&self) -> StoreResult<String> {
        match self
            .get_item(key(POLICY_VERSION_PK.into(), SINGLETON_SK))
            .await?
        {
            Some(item) => Ok(number_attr(&item, "version")?.to_string()),
            None => Ok("0".into()),
        }
    }

    async fn settings(&self) -> StoreResult<Settings> {
        match self.get_item(key(BUDGETS_PK.into(), SETTINGS_SK)).await? {
            Some(item) => from_doc("settings", text_attr(&item, "doc")?),
            None => Ok(Settings::default()),
        }
    }

    async fn put_budget(&self, budget: &Budget) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::budget_item(budget)?))
            .send()
            .await
            .map_err(|e| sdk("PutItem", e))?;
        self.policy_changed().await
    }

    async fn get_budget(&self, id: &str) -> StoreResult<Option<Budget>> {
        match self.get_item(key(BUDGETS_PK.into(), budget_sk(id))).await? {
            Some(item) => Ok(Some(from_doc(id, text_attr(&item, "doc")?)?)),
            None => Ok(None),
        }
    }

    async fn delete_budget(&self, id: &str) -> StoreResult<bool> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(BUDGETS_PK.into(), budget_sk(id))))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk("DeleteItem", e))?;
        let existed = out.attributes.is_some_and(|a| !a.is_empty());
        if existed {
            self.policy_changed().await?;
        }
        Ok(existed)
    }

    async fn put_settings(&self, settings: &Settings) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::settings_item(settings)?))
            .send()
            .await
            .map_err(|e| sdk("PutItem", e))?;
        self.policy_changed().await
    }
}

#[async_trait]
impl SpendStore for DynamoStore {
    async fn ingest_usage(
        &self,
        entries: &[UsageEntry],
        now: DateTime<Utc>,
        marker_ttl: Duration,
    ) -> StoreResult<IngestOutcome> {
        let call = uuid::Uuid::new_v4().simple().to_string();
        let mut outcome = IngestOutcome::default();
        let mut in_batch = HashSet::new();
        let mut pending: Vec<&UsageEntry> = Vec::new();
        for e in entries {
            if in_batch.insert(e.id.as_str()) {
                pending.push(e);
            } else {
                outcome.duplicates.push(e.id.clone());
            }
        }
        // Indexed first: a process stopped after the transaction would leave counted scopes
        // out of the index, which the nightly run and the roll-up of every leaf read.
        self.index_scopes(&pending).await?;
        // The usual batch (new records, no reservation) in one transaction and no read first:
        // the markers' conditions and a check that no reservation holds decide it. A replay,
        // a held reservation or a conflict cancels it, and the batch takes the path that
        // reads markers and reservations first.
        if fits_unread(&pending)
            && let Some(written) = self
                .write_usage_chunk(&pending, Reservations::Unread, &call, now, marker_ttl)
                .await?
        {
            outcome
                .accepted
                .extend(pending.iter().map(|e| e.id.clone()));
            outcome.pending = written;
            return Ok(outcome);
        }
        for attempt in 0..MAX_ATTEMPTS {
            let ids: Vec<&str> = pending.iter().map(|e| e.id.as_str()).collect();
            let (live, holding) = self.read_for_ingest(&ids, now).await?;
            pending.retain(|e| {
                let seen = live.contains(&e.id);
                if seen {
                    outcome.duplicates.push(e.id.clone());
                }
                !seen
            });
            if pending.is_empty() {
                return Ok(outcome);
            }
            let mut cancelled = Vec::new();
            for group in pack_transactions(&pending, &holding)? {
                match self
                    .write_usage_chunk(&group, Reservations::Read(&holding), &call, now, marker_ttl)
                    .await?
                {
                    Some(written) => {
                        outcome.accepted.extend(group.iter().map(|e| e.id.clone()));
                        outcome.pending.extend(written);
                    }
                    None => cancelled.extend(group),
                }
            }
            if cancelled.is_empty() {
                return Ok(outcome);
            }
            pending = cancelled;
            backoff(attempt).await;
        }
        Err(StoreError::Conflict(format!(
            "usage records {} (transactions kept being cancelled)",
            pending
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    async fn scopes_with_counters(&self, month: YearMonth) -> StoreResult<Vec<Scope>> {
        self.query_all(scopes_pk(month), false, None)
            .await?
            .iter()
            .map(|item| {
                Scope::parse(text_attr(item, SK)?).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn put_summaries(&self, summaries: &[DailySummary]) -> StoreResult<()> {
        let mut requests = Vec::new();
        for sm in summaries {
            let mut item = key(summary_pk(&sm.scope), summary_sk(sm));
            item.insert("doc".into(), s(to_doc(sm)?));
            requests.push(Self::put_request(item)?);
        }
        self.batch_write(requests).await
    }

    async fn summaries(
        &self,
        scope: &Scope,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<DailySummary>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(summary_pk(scope)))
            .expression_attribute_values(":from", s(from.to_string()))
            .expression_attribute_values(":to", s(format!("{to}@~")))
            .send()
            .await
            .map_err(|e| sdk("Query", e))?;
        out.items()
            .iter()
            .map(|item| from_doc("summary", text_attr(item, "doc")?))
            .collect()
    }

    async fn read_counters(
        &self,
        keys: &[CounterKey],
    ) -> StoreResult<BTreeMap<CounterKey, MonthCounters>> {
        let wanted = keys
            .iter()
            .map(|k| ((counter_pk(&k.scope), counter_sk(k)), k))
            .collect();
        let mut out = BTreeMap::new();
        for (counter, item) in self.batch_get_for(wanted).await? {
            out.insert(counter.clone(), month_counters_of(&item));
        }
        Ok(out)
    }

    async fn read_hours(&self, keys: &[HourKey]) -> StoreResult<BTreeMap<HourKey, HourCounters>> {
        let wanted = keys
            .iter()
            .map(|k| ((counter_pk(&k.scope), hour_sk(k)), k))
            .collect();
        let mut out = BTreeMap::new();
        for (hour, item) in self.batch_get_for(wanted).await? {
            out.insert(hour.clone(), hour_counters_of(&item));
        }
        Ok(out)
    }

    async fn read_fresh(
        &self,
        months: &[CounterKey],
        hours: &[HourKey],
        fresh_pending: &[String],
    ) -> StoreResult<FreshCounters> {
        // every pending item the request's ingest wrote, and what this process wrote before
        // for the same leaves (bounded); nothing queried, nothing for a leaf the request did
        // not write. Those still there are not in their counters yet (a roll-up deletes them
        // as it adds them).
        let mut pending = fresh_pending
            .iter()
            .map(|name| pending_key(name))
            .collect::<StoreResult<BTreeSet<_>>>()?;
        let remembered: Vec<String> = {
            let written = self
                .written_pending
                .lock()
                .map_err(|_| StoreError::Unavailable("pending cache poisoned".into()))?;
            let leaves: BTreeSet<&String> = pending.iter().map(|(pk, _)| pk).collect();
            leaves
                .into_iter()
                .filter_map(|pk| written.get(pk))
                .flatten()
                .cloned()
                .collect()
        };
        let before = pending.len();
        for name in remembered {
            if pending.len() - before == REMEMBERED_PER_READ {
                break;
            }
            pending.insert(pending_key(&name)?);
        }
        let mut wanted: Vec<((String, String), Counter<'_>)> = Vec::new();
        for k in months {
            wanted.push(((counter_pk(&k.scope), counter_sk(k)), Counter::Month(k)));
        }
        for k in hours {
            wanted.push(((counter_pk(&k.scope), hour_sk(k)), Counter::Hour(k)));
        }
        let plain = async {
            let months = self.read_counters(months).await?;
            let hours = if hours.is_empty() {
                BTreeMap::new()
            } else {
                self.read_hours(hours).await?
            };
            Ok::<FreshCounters, StoreError>((months, hours))
        };
        if pending.is_empty() {
            return plain.await;
        }
        if wanted.len() + pending.len() <= MAX_TRANSACT_GET {
            // one consistent snapshot: each pending item counted either in its target or as
            // pending, exactly once, even while a roll-up of it commits
            let keys: Vec<(String, String)> = wanted
                .iter()
                .map(|(k, _)| k.clone())
                .chain(pending)
                .collect();
            let mut found = self.transact_get(&keys).await?.into_iter();
            let mut counters: FreshCounters = Default::default();
            for (_, counter) in &wanted {
                let Some(item) = found.next().flatten() else {
                    continue;
                };
                match counter {
                    Counter::Month(k) => {
                        counters.0.insert((*k).clone(), month_counters_of(&item));
                    }
                    Counter::Hour(k) => {
                        counters.1.insert((*k).clone(), hour_counters_of(&item));
                    }
                }
            }
            let pending: Vec<_> = found.flatten().collect();
            Self::add_pending(&mut counters, &wanted.into_iter().collect(), &pending)?;
            return Ok(counters);
        }
        // Too many for one snapshot: the counters first, then the pending items, both read
        // consistently. A roll-up between the two reads moves an item out of the second read
        // after the first: its spend is missed by this read (the next read or the scheduled
        // check sees it), never counted twice — a double count could engage a kill switch.
        let mut counters = plain.await?;
        let keys = pending.into_iter().map(|(pk, sk)| key(pk, sk)).collect();
        let items = self.batch_get(keys).await?;
        Self::add_pending(&mut counters, &wanted.into_iter().collect(), &items)?;
        Ok(counters)
    }

    async fn roll_up(&self, leaves: &[Scope], now: DateTime<Utc>) -> StoreResult<usize> {
        // leaf by leaf in turns, a page each, so that one leaf's backlog cannot take the whole
        // call from the others; read in bounded buffers, each moved before the next is read
        let mut turns: VecDeque<(&Scope, Option<HashMap<String, AttributeValue>>)> = leaves
            .iter()
            .collect::<BTreeSet<&Scope>>()
            .into_iter()
            .map(|leaf| (leaf, None))
            .collect();
        let mut budget = self.roll_up_items;
        let mut buffer = Vec::new();
        let mut unreadable = Vec::new();
        let mut moved = 0;
        while budget > 0
            && let Some((leaf, start)) = turns.pop_front()
        {
            let share = (budget / (turns.len() + 1)).clamp(1, PENDING_READ_PAGE);
            let (items, bad, next) = self.pending_page(leaf, start, share).await?;
            budget = budget.saturating_sub(items.len() + bad.len());
            buffer.extend(items);
            unreadable.extend(bad);
            if let Some(next) = next {
                turns.push_back((leaf, Some(next)));
            }
            if buffer.len() >= ROLL_UP_BUFFER {
                moved += self.move_pending(&std::mem::take(&mut buffer), now).await?;
            }
        }
        moved += self.move_pending(&buffer, now).await?;
        if !turns.is_empty() {
            tracing::warn!(
                moved,
                leaves_with_more = turns.len(),
                "more pending than one roll-up moves; the next roll-up or check continues"
            );
        }
        // the readable items moved; the unreadable ones stay, and fail the call visibly
        match unreadable.len() {
            0 => Ok(moved),
            1 => Err(unreadable.remove(0)),
            n => Err(StoreError::Corrupt(format!(
                "{n} pending items cannot be read: {}",
                unreadable
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }

    async fn late_spend(&self) -> StoreResult<LateSpend> {
        let mut keys: Vec<_> = (0..PENDING_SHARDS)
            .map(|shard| key(late_spend_pk(shard), SINGLETON_SK))
            .collect();
        keys.push(key(ENDED_EVALUATED_PK.to_string(), SINGLETON_SK));
        let mut late = LateSpend::default();
        for item in self.batch_get(keys).await? {
            let pk = text_attr(&item, PK)?.to_string();
            if pk == ENDED_EVALUATED_PK {
                late.evaluated_until =
                    DateTime::from_timestamp(number_attr(&item, ENDED_EVALUATED_UNTIL)?, 0);
                continue;
            }
            let Some(AttributeValue::Ns(quarters)) = item.get(LATE_QUARTERS) else {
                continue;
            };
            let quarters = quarters
                .iter()
                .map(|q| {
                    q.parse::<i64>().map_err(|_| {
                        StoreError::Corrupt(format!("{pk}: `{q}` is not a quarter-hour"))
                    })
                })
                .collect::<StoreResult<Vec<i64>>>()?;
            let moves = number_attr(&item, LATE_MOVES)?;
            late.marks.push(LateMark {
                key: pk,
                quarters,
                moves: u64::try_from(moves).unwrap_or_default(),
            });
        }
        late.marks.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(late)
    }

    async fn settle_late_spend(
        &self,
        evaluated: &LateSpend,
        until: DateTime<Utc>,
    ) -> StoreResult<()> {
        for mark in &evaluated.marks {
            if mark.quarters.is_empty() {
                continue;
            }
            // only if no move added to it since it was read: a quarter-hour added again by a
            // move after the evaluation read its counters is evaluated by the next check
            let settled = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(mark.key.clone(), SINGLETON_SK)))
                .update_expression("DELETE #quarters :evaluated")
                .condition_expression("#moves = :moves")
                .expression_attribute_names("#quarters", LATE_QUARTERS)
                .expression_attribute_names("#moves", LATE_MOVES)
                .expression_attribute_values(
                    ":evaluated",
                    AttributeValue::Ns(mark.quarters.iter().map(i64::to_string).collect()),
                )
                .expression_attribute_values(":moves", n(mark.moves))
                .send()
                .await;
            if let Err(e) = settled
                && !e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception())
            {
                return Err(sdk("UpdateItem", e));
            }
        }
        // forward only: a slower check that evaluated less does not move it back
        let recorded = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(ENDED_EVALUATED_PK.to_string(), SINGLETON_SK)))
            .update_expression("SET #until = :until")
            .condition_expression("attribute_not_exists(#until) OR #until < :until")
            .expression_attribute_names("#until", ENDED_EVALUATED_UNTIL)
            .expression_attribute_values(":until", n(until.timestamp()))
            .send()
            .await;
        match recorded {
            Err(e)
                if !e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(sdk("UpdateItem", e))
            }
            _ => Ok(()),
        }
    }

    async fn pending_leaves(&self, limit: usize) -> StoreResult<PendingLeaves> {
        // every shard at once (a request per shard and page), merged by how long each item has
        // waited: the oldest `limit` leaves of all shards, not those of the first shards read
        let shards = futures::future::try_join_all(
            (0..PENDING_SHARDS).map(|shard| self.pending_index_shard(shard)),
        )
        .await?;
        // a shard left unread past some wait may hold older items than other shards' later
        // ones: nothing newer than the earliest such cut is taken (the next call takes it)
        let horizon = shards.iter().filter_map(|(_, cut)| *cut).min();
        let mut entries: Vec<(Scope, DateTime<Utc>)> = shards
            .into_iter()
            .flat_map(|(entries, _)| entries)
            .collect();
        let mut more = horizon.is_some();
        entries.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let mut leaves: Vec<(Scope, DateTime<Utc>)> = Vec::new();
        let mut found: HashSet<Scope> = HashSet::new();
        for (leaf, since) in entries {
            if horizon.is_some_and(|cut| since > cut) {
                break;
            }
            // sorted by wait: a leaf's first entry is its oldest
            if found.contains(&leaf) {
                continue;
            }
            if leaves.len() == limit {
                more = true;
                break;
            }
            found.insert(leaf.clone());
            leaves.push((leaf, since));
        }
        Ok(PendingLeaves { leaves, more })
    }

    async fn put_observations(&self, observations: &[Observation]) -> StoreResult<()> {
        let mut requests = Vec::new();
        for o in observations {
            let mut item = key(observation_pk(&o.budget_id), observation_sk(o));
            item.insert("doc".into(), s(to_doc(o)?));
            requests.push(Self::put_request(item)?);
        }
        self.batch_write(requests).await
    }

    async fn observations(&self, budget_id: &str) -> StoreResult<Vec<Observation>> {
        self.query_all(observation_pk(budget_id), false, None)
            .await?
            .iter()
            .map(|item| from_doc("observation", text_attr(item, "doc")?))
            .collect()
    }

    async fn put_source_days(&self, days: &[SourceDay]) -> StoreResult<()> {
        let mut requests = Vec::new();
        for day in days {
            let mut item = key(source_day_pk(&day.budget_id), day.date.to_string());
            item.insert("doc".into(), s(to_doc(day)?));
            item.insert(
                TTL_ATTRIBUTE.into(),
                n((day.observed_at + SOURCE_DAY_RETENTION).timestamp()),
            );
            requests.push(Self::put_request(item)?);
        }
        self.batch_write(requests).await
    }

    async fn source_days(
        &self,
        budget_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<SourceDay>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(source_day_pk(budget_id)))
                .expression_attribute_values(":from", s(from.to_string()))
                .expression_attribute_values(":to", s(to.to_string()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk("Query", e))?;
            items.extend(out.items().iter().cloned());
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        items
            .iter()
            .map(|item| from_doc("source day", text_attr(item, "doc")?))
            .collect()
    }
}

#[async_trait]
impl ClaimStore for DynamoStore {
    async fn claims_done(&self, claims: &[Claim]) -> StoreResult<Vec<bool>> {
        // BatchGetItem refuses a key twice
        let wanted: BTreeSet<(String, String)> = claims
            .iter()
            .map(|c| (claim_pk(&c.space), c.key.clone()))
            .collect();
        let items = self
            .batch_get(wanted.into_iter().map(|(pk, sk)| key(pk, sk)).collect())
            .await?;
        let mut done = HashSet::new();
        for item in &items {
            if text_attr(item, "state")? == "done" {
                done.insert((
                    text_attr(item, PK)?.to_string(),
                    text_attr(item, SK)?.to_string(),
                ));
            }
        }
        Ok(claims
            .iter()
            .map(|c| done.contains(&(claim_pk(&c.space), c.key.clone())))
            .collect())
    }

    async fn claim(&self, claim: &Claim, now: DateTime<Utc>) -> StoreResult<ClaimOutcome> {
        let mut item = key(claim_pk(&claim.space), &claim.key);
        item.insert("owner".into(), s(&claim.owner));
        item.insert("state".into(), s("claimed"));
        item.insert("lease_until".into(), n((now + claim.lease).timestamp()));
        item.insert(TTL_ATTRIBUTE.into(), n(claim.expires_at.timestamp()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(#pk) OR (#state = :claimed AND #lease < :now)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Won),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                let current = self
                    .get_item(key(claim_pk(&claim.space), &claim.key))
                    .await?;
                match current
                    .as_ref()
                    .map(|i| text_attr(i, "state"))
                    .transpose()?
                {
                    Some("done") => Ok(ClaimOutcome::AlreadyRaised),
                    _ => Ok(ClaimOutcome::HeldByOther),
                }
            }
            Err(e) => Err(sdk("PutItem", e)),
        }
    }

    async fn finish_claim(&self, claim: &Claim) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(claim_pk(&claim.space), &claim.key)))
            .update_expression("SET #state = :done")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":me", s(&claim.owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(format!(
                    "claim {} is held by another run",
                    claim.key
                )))
            }
            Err(e) => Err(sdk("UpdateItem", e)),
        }
    }

    async fn release_claim(&self, claim: &Claim) -> StoreResult<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(claim_pk(&claim.space), &claim.key)))
            .condition_expression("#owner = :me AND #state = :claimed")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":me", s(&claim.owner))
            .expression_attribute_values(":claimed", s("claimed"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // someone else holds it now, or it was finished: nothing of ours to release
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk("DeleteItem", e)),
        }
    }
}

#[async_trait]
impl AlertStore for DynamoStore {
    async fn put_open_alert(&self, alert: &OpenAlert) -> StoreResult<()> {
        let mut item = key(OPEN_ALERTS_PK.into(), &alert.event.alert_id);
        item.insert("doc".into(), s(to_doc(alert)?));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk("PutItem", e))?;
        Ok(())
    }

    async fn open_alerts(&self) -> StoreResult<Vec<OpenAlert>> {
        self.query_all(OPEN_ALERTS_PK.into(), false, None)
            .await?
            .iter()
            .map(|item| from_doc("open alert", text_attr(item, "doc")?))
            .collect()
    }

    async fn acknowledge_alert(
        &self,
        alert_id: &str,
        ack: &Acknowledgement,
    ) -> StoreResult<AckOutcome> {
        // what the last (committed) attempt of the guarded update saw
        let seen = std::sync::Mutex::new(AckOutcome::Unknown);
        let found = self
            .update_open_alert(alert_id, |a| {
                let outcome = match &a.acknowledged {
                    Some(earlier) => AckOutcome::AlreadyAcknowledged(earlier.clone()),
                    None => {
                        a.acknowledged = Some(ack.clone());
                        AckOutcome::Acknowledged(Box::new(a.clone()))
                    }
                };
                if let Ok(mut seen) = seen.lock() {
                    *seen = outcome;
                }
            })
            .await?;
        Ok(match seen.into_inner() {
            Ok(outcome) if found => outcome,
            _ => AckOutcome::Unknown,
        })
    }

    async fn set_escalation_level(&self, alert_id: &str, level: u32) -> StoreResult<()> {
        self.update_open_alert(alert_id, |a| {
            a.escalation_level = a.escalation_level.max(level)
        })
        .await
        .map(|_| ())
    }

    async fn close_alert(&self, alert_id: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(OPEN_ALERTS_PK.into(), alert_id)))
            .send()
            .await
            .map_err(|e| sdk("DeleteItem", e))?;
        Ok(())
    }

    async fn queue_digest(
        &self,
        channel: &str,
        event: &AlertEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut item = key(digest_pk(channel), &event.alert_id);
        item.insert("queued_at".into(), n(now.timestamp_millis()));
        item.insert("doc".into(), s(to_doc(event)?));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // already queued: keep the first time it was queued
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk("PutItem", e)),
        }
    }

    async fn digest_queue(&self, channel: &str) -> StoreResult<Vec<(DateTime<Utc>, AlertEvent)>> {
        let mut out = Vec::new();
        for item in self.query_all(digest_pk(channel), false, None).await? {
            let at = DateTime::from_timestamp_millis(number_attr(&item, "queued_at")?)
                .ok_or_else(|| StoreError::Corrupt("digest time".into()))?;
            out.push((
                at,
                from_doc::<AlertEvent>("digest entry", text_attr(&item, "doc")?)?,
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.alert_id.cmp(&b.1.alert_id)));
        Ok(out)
    }

    async fn remove_from_digest(&self, channel: &str, alert_ids: &[String]) -> StoreResult<()> {
        let requests = alert_ids
            .iter()
            .map(|id| {
                Ok(WriteRequest::builder()
                    .delete_request(built(
                        DeleteRequest::builder()
                            .set_key(Some(key(digest_pk(channel), id)))
                            .build(),
                    )?)
                    .build())
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.batch_write(requests).await
    }
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.query_all(KEYS_PK.into(), false, None)
            .await?
            .iter()
            .map(key_record)
            .collect()
    }

    async fn key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>> {
        self.get_item(key(KEYS_PK.into(), key_id))
            .await?
            .as_ref()
            .map(key_record)
            .transpose()
    }

    async fn put_key_status(
        &self,
        key_id: &str,
        status: &KeyStatus,
        expected: u64,
    ) -> StoreResult<u64> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(KEYS_PK.into(), key_id)))
            .update_expression("SET #status = :status, #v = :next")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#v", KEY_STATUS_VERSION)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":status", s(to_doc(status)?))
            .expression_attribute_values(":next", n(expected + 1))
            .expression_attribute_values(":expected", n(expected));
        // a key registered by `put_policy` has no version yet: that is version 0
        let update = if expected == 0 {
            update.condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#v) OR #v = :expected)",
            )
        } else {
            update.condition_expression("attribute_exists(#pk) AND #v = :expected")
        };
        match update.send().await {
            Ok(_) => Ok(expected + 1),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                match self.key(key_id).await? {
                    Some(_) => Err(StoreError::Conflict(format!("status of key {key_id}"))),
                    None => Err(StoreError::Corrupt(format!(
                        "no key `{key_id}` in the registry"
                    ))),
                }
            }
            Err(e) => Err(sdk("UpdateItem", e)),
        }
    }

    async fn active_kill_switches(&self) -> StoreResult<Vec<Versioned<KillSwitch>>> {
        let scopes: Vec<Scope> = self
            .query_all(KILL_INDEX_PK.into(), false, None)
            .await?
            .iter()
            .map(|item| {
                Scope::parse(text_attr(item, SK)?).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect::<StoreResult<_>>()?;
        let switches = self.kill_switches(&scopes).await?;
        Ok(switches
            .into_iter()
            .filter(|s| s.value.state != SwitchState::Open)
            .collect())
    }

    async fn kill_switch(&self, scope: &Scope) -> StoreResult<Option<Versioned<KillSwitch>>> {
        match self.get_item(key(kill_pk(scope), KILL_SK)).await? {
            Some(item) => Ok(Some(Versioned {
                value: from_doc(&format!("kill switch {scope}"), text_attr(&item, "doc")?)?,
                version: number_attr(&item, "version")? as u64,
            })),
            None => Ok(None),
        }
    }

    async fn kill_switches(&self, scopes: &[Scope]) -> StoreResult<Vec<Versioned<KillSwitch>>> {
        let keys = scopes
            .iter()
            .map(|scope| key(kill_pk(scope), KILL_SK))
            .collect();
        self.batch_get(keys)
            .await?
            .iter()
            .map(|item| {
                Ok(Versioned {
                    value: from_doc("kill switch", text_attr(item, "doc")?)?,
                    version: number_attr(item, "version")? as u64,
                })
            })
            .collect()
    }

    async fn put_kill_switch(
        &self,
        switch: &KillSwitch,
        expected: Option<u64>,
        audit: &AuditEntry,
    ) -> StoreResult<u64> {
        let version = expected.map_or(1, |v| v + 1);
        let mut item = key(kill_pk(&switch.scope), KILL_SK);
        item.insert("doc".into(), s(to_doc(switch)?));
        item.insert("version".into(), n(version));
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            Some(v) => put
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(v)),
        };
        // the switch and its index entry change together
        let index_key = key(KILL_INDEX_PK.into(), switch.scope.as_str());
        let index = if switch.state == SwitchState::Open {
            TransactWriteItem::builder()
                .delete(built(
                    aws_sdk_dynamodb::types::Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(index_key))
                        .build(),
                )?)
                .build()
        } else {
            TransactWriteItem::builder()
                .put(built(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(index_key))
                        .build(),
                )?)
                .build()
        };
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(built(put.build())?)
                    .build(),
            )
            .transact_items(index)
            .transact_items(
                TransactWriteItem::builder()
                    .put(built(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(audit_item(audit)?))
                            .build(),
                    )?)
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(version),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_transaction_canceled_exception()) =>
            {
                Err(StoreError::Conflict(format!(
                    "kill switch {}",
                    switch.scope
                )))
            }
            Err(e) => Err(sdk("TransactWriteItems", e)),
        }
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(entry)?))
            .send()
            .await
            .map_err(|e| sdk("PutItem", e))?;
        Ok(())
    }

    async fn audit_log(&self, month: YearMonth, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.query_all(audit_pk(month), true, Some(limit))
            .await?
            .iter()
            .map(|item| from_doc("audit entry", text_attr(item, "doc")?))
            .collect()
    }
}

#[async_trait]
impl MarkerStore for DynamoStore {
    async fn put_marker(
        &self,
        namespace: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let mut item = key(marker_pk(namespace, id), SINGLETON_SK);
        item.insert(TTL_ATTRIBUTE.into(), n((now + ttl).timestamp()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk("PutItem", e)),
        }
    }

    async fn has_marker(&self, namespace: &str, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        match self
            .get_item(key(marker_pk(namespace, id), SINGLETON_SK))
            .await?
        {
            Some(item) => Ok(number_attr(&item, TTL_ATTRIBUTE)? > now.timestamp()),
            None => Ok(false),
        }
    }

    async fn get_cached(&self, cache_key: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        let Some(item) = self
            .get_item(key(cache_pk(cache_key), SINGLETON_SK))
            .await?
        else {
            return Ok(None);
        };
        if number_attr(&item, TTL_ATTRIBUTE)? <= now.timestamp() {
            return Ok(None);
        }
        Ok(Some(text_attr(&item, "value")?.to_string()))
    }

    async fn put_cached(
        &self,
        cache_key: &str,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut item = key(cache_pk(cache_key), SINGLETON_SK);
        item.insert("value".into(), s(value));
        item.insert(TTL_ATTRIBUTE.into(), n(expires_at.timestamp()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk("PutItem", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spendguard_domain::money::{Currency, Money};
    use spendguard_domain::period::Zone;
    use spendguard_domain::pricing::Tokens;
    use spendguard_domain::usage::UsageRecord;

    fn entry(id: &str, scope: &str, zones: &[Zone]) -> UsageEntry {
        let record = UsageRecord {
            id: id.into(),
            scope: Scope::parse(scope).unwrap(),
            provider: "openai".into(),
            model: None,
            tokens: Tokens::default(),
            requests: 1,
            cost: Money::new(Decimal::ONE, Currency::USD),
            timestamp: DateTime::parse_from_rfc3339("2026-11-23T03:30:00Z")
                .unwrap()
                .with_timezone(&Utc),
            covers_minutes: 1,
            user: None,
            endpoint: None,
            feature: None,
        };
        UsageEntry::of(&record, zones)
    }

    #[test]
    fn transactions_never_exceed_the_action_limit() {
        let zones = [Zone::UTC, Zone::parse("Europe/Berlin").unwrap()];
        let entries: Vec<UsageEntry> = (0..500)
            .map(|i| {
                entry(
                    &format!("r{i}"),
                    &format!("openai/p{}/k{}", i % 7, i % 31),
                    &zones,
                )
            })
            .collect();
        let refs: Vec<&UsageEntry> = entries.iter().collect();
        let groups = pack_transactions(&refs, &HashMap::new()).unwrap();
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 500);
        for g in &groups {
            let counters: BTreeSet<String> = g.iter().flat_map(|e| written_items(e)).collect();
            assert!(
                g.len() + counters.len() <= MAX_TRANSACTION_ACTIONS,
                "{} actions",
                g.len() + counters.len()
            );
        }
    }

    #[test]
    fn one_scope_packs_many_records_per_transaction() {
        let entries: Vec<UsageEntry> = (0..200)
            .map(|i| entry(&format!("r{i}"), "openai/prod/key-1", &[Zone::UTC]))
            .collect();
        let refs: Vec<&UsageEntry> = entries.iter().collect();
        let groups = pack_transactions(&refs, &HashMap::new()).unwrap();
        // the key's month and hour counters and its one pending item (for the project,
        // provider and * counters) leave room for 97 markers per transaction
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [97, 97, 6]);
    }

    #[test]
    fn records_that_reconcile_a_reservation_pack_its_items_too() {
        let entries: Vec<UsageEntry> = (0..200)
            .map(|i| entry(&format!("r{i}"), "openai/prod/key-1", &[Zone::UTC]))
            .collect();
        let holding: HashMap<String, Holding> = entries
            .iter()
            .map(|e| {
                let h = Holding {
                    id: e.id.clone(),
                    holds: vec![Hold {
                        window: "b#daily#D#2026-11-20".into(),
                        budget: "b".into(),
                        scope: Scope::root(),
                        kind: spendguard_domain::period::WindowKind::Daily,
                        period: "D#2026-11-20".into(),
                        currency: Currency::USD,
                        amount: Decimal::ONE,
                        cap: Decimal::TEN,
                    }],
                    until: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                };
                (e.id.clone(), h)
            })
            .collect();
        let refs: Vec<&UsageEntry> = entries.iter().collect();
        let groups = pack_transactions(&refs, &holding).unwrap();
        // the hold is on a budget above the key: owed by the pending item until its roll-up.
        // The key's 2 counters and its pending item are shared; each record adds its marker
        // and its reservation: 48 records per transaction
        assert_eq!(
            groups.iter().map(Vec::len).collect::<Vec<_>>(),
            [48, 48, 48, 48, 8]
        );
    }
}
