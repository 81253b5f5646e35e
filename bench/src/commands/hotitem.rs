//! The hottest item of usage ingest (issue 28 item 3, ADR 031), counted on moto: one-record
//! batches for many unrelated keys, rolled up as the table's stream would (the leaves of each
//! stream batch of `b` pending items), every write request's items recorded by partition key.
//! Prints, per stream batch size, the writes the most-written partition takes per record, at
//! ingest and at roll-up, and the sustained rate DynamoDB's per-partition limit (1,000 write
//! units per second) allows with them. Counts, not timings: moto has no partition limits.
//!
//!     spendguard-bench hotitem [--records N] [--keys K]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use spendguard_app::ports::store::SpendStore;
use spendguard_domain::scope::Scope;
use spendguard_tests::aws::WriteRecorder;
use spendguard_tests::hotitem::{entry, ingest, key_scope, store_on};

/// A month counter near a month's end: about 5 KB, so 10 write units per transactional write.
const UNITS_PER_WRITE: f64 = 10.0;
const PARTITION_UNITS_PER_SECOND: f64 = 1000.0;

/// The most-written partition key of `writes` and how many writes it took; markers (one per
/// record, never shared) and the scope index (once per scope and process) left out.
fn hottest(writes: &[(String, String)]) -> (String, usize) {
    let mut per_pk: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, pk) in writes {
        if !pk.starts_with("USAGE#") && !pk.starts_with("SCOPES#") {
            *per_pk.entry(pk).or_default() += 1;
        }
    }
    per_pk
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(pk, n)| (pk.to_string(), n))
        .unwrap_or_default()
}

/// Partition keys written by the ingest transactions of more than one key.
fn shared_between_keys(transactions: &[Vec<(String, String)>]) -> usize {
    let mut writers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in transactions {
        let Some(leaf) = t
            .iter()
            .find(|(_, pk)| pk.starts_with("SPEND#"))
            .map(|(_, pk)| pk.as_str())
        else {
            continue;
        };
        for (_, pk) in t {
            writers.entry(pk).or_default().insert(leaf);
        }
    }
    writers.values().filter(|w| w.len() > 1).count()
}

async fn one_run(sdk: &aws_config::SdkConfig, records: usize, keys: usize, batch: usize) {
    let now: DateTime<Utc> = "2026-12-07T11:30:00Z".parse().unwrap();
    let (_, table) = spendguard_tests::aws::new_store(sdk).await;
    let at_ingest = WriteRecorder::default();
    let ingesting = store_on(sdk, &table, at_ingest.clone());
    let at_roll_up = WriteRecorder::default();
    let rolling = store_on(sdk, &table, at_roll_up.clone());
    let mut leaves: BTreeSet<Scope> = BTreeSet::new();
    for i in 0..records {
        let k = i % keys;
        ingest(&ingesting, &[entry(&format!("h{i}"), k, 100, now)], now).await;
        leaves.insert(Scope::parse(&key_scope(k)).unwrap());
        if (i + 1) % batch == 0 || i + 1 == records {
            let batch: Vec<Scope> = std::mem::take(&mut leaves).into_iter().collect();
            rolling.roll_up(&batch, now).await.expect("roll-up");
        }
    }
    let (ingest_pk, ingest_writes) = hottest(&at_ingest.writes());
    let (roll_pk, roll_writes) = hottest(&at_roll_up.writes());
    // the ingest's hottest partition is a key's own: per record of that key
    let per_key_record = ingest_writes as f64 / (records / keys) as f64;
    let per_record = roll_writes as f64 / records as f64;
    let bound = |per: f64| PARTITION_UNITS_PER_SECOND / UNITS_PER_WRITE / per;
    println!(
        "| {batch} | {ingest_pk} {per_key_record:.2} | {} | {:.0} | {roll_pk} {per_record:.3} | {:.0} |",
        shared_between_keys(&at_ingest.transactions()),
        bound(per_key_record),
        bound(per_record),
    );
}

pub async fn run(args: &[String]) {
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a count"))
    };
    let (records, keys) = (arg("--records", 500), arg("--keys", 20));
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        println!("hot item: skipped: set AWS_ENDPOINT_URL to moto (tests/moto/server.py)");
        return;
    }
    let sdk = spendguard_aws::sdk::sdk_config().await;
    println!(
        "\nhottest partition of usage ingest: {records} one-record batches over {keys} keys (2 providers, 3 projects, 4 users, one model), rolled up every b pending items as the stream would"
    );
    println!(
        "| stream batch b | ingest: hottest partition, writes per record of its key | partitions two keys' ingests share | one-record batches/s per key it allows | roll-up: hottest partition, writes per record (all keys) | records/s deployment-wide it allows |"
    );
    println!("|---:|---|---:|---:|---|---:|");
    for batch in [1, 10, 100] {
        one_run(&sdk, records, keys, batch).await;
    }
    println!(
        "(allowed: 1,000 write units per second per partition at {UNITS_PER_WRITE} units per write, a month item near a month's end in a transaction; markers and the scope index left out: one per record, once per scope and process). Before ADR 031 every ingest transaction also wrote `SPEND#*`'s items (a month item per zone, the hour item: 3 writes per record here), so the whole deployment was held to what one key's partition allows."
    );
}
