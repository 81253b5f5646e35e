//! ADR 031 on DynamoDB through moto: an ingest transaction writes only its own leaf's items;
//! ancestors and dimensions are rolled up exactly once.

use std::collections::BTreeSet;

use spendguard_app::ports::store::SpendStore;
use spendguard_domain::scope::Scope;
use spendguard_tests::aws;
use spendguard_tests::hotitem::{
    IngestBeforeEachRollUp, MoveOneBeforeEachRollUp, at, counters_fed, entry, first_difference,
    ingest, intercepted_store, key_scope, pending_shards, pending_sks, read_all, reference,
    spoil_pending_items, store_on, workload,
};

/// Issue 28 item 3: two senders reporting for unrelated keys (the same model name) write no
/// item in common, so neither transaction can cancel the other. Before ADR 031 every ingest
/// transaction updated `SPEND#*` (and keys of one provider `SPEND#<provider>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_keys_share_no_item_in_their_ingest_transactions() {
    let sdk = aws::sdk().await;
    let recorder = aws::WriteRecorder::default();
    let store = intercepted_store(&sdk, recorder.clone()).await;
    let now = at("2026-12-07T11:30:00Z");
    // keys 0 and 1: openai and anthropic; key 2: openai again, another project
    for k in 0..3 {
        ingest(&store, &[entry(&format!("r{k}"), k, 125, now)], now).await;
    }
    let transactions = recorder.transactions();
    assert_eq!(
        transactions.len(),
        3,
        "one transaction per one-record batch"
    );
    let items: Vec<BTreeSet<&str>> = transactions
        .iter()
        .map(|t| t.iter().map(|(_, pk)| pk.as_str()).collect())
        .collect();
    for a in 0..items.len() {
        for b in a + 1..items.len() {
            let shared: Vec<&&str> = items[a].intersection(&items[b]).collect();
            assert!(
                shared.is_empty(),
                "{} and {} wrote the same items {shared:?}",
                key_scope(a),
                key_scope(b)
            );
        }
        let leaf = format!("SPEND#{}", key_scope(a));
        let own = |pk: &&str| *pk == leaf || pk.starts_with("USAGE#") || pk.starts_with("RESERVE#");
        assert!(items[a].iter().all(own), "{:?}", items[a]);
    }
}

/// Many records over many keys, some leaves rolled up midway and the rest left pending:
/// every ancestor, provider, project, model and user counter (month and hour) reads exactly
/// what the embedded store counted in its one transaction — read together with the pending
/// leaves in one snapshot before the roll-up, and alone after it; a replayed batch and a
/// replayed roll-up change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ancestors_read_exactly_the_sum_of_their_leaves() {
    let sdk = aws::sdk().await;
    let (store, _) = aws::new_store(&sdk).await;
    let linear = reference();
    let now = at("2026-12-07T11:30:00Z");
    let entries = workload("w", 90, 8, at("2026-12-06T20:00:00Z"));
    let mut start = 0;
    let mut written = Vec::new();
    for (round, size) in [1, 5, 12, 2, 40, 10, 20].into_iter().enumerate() {
        let batch = &entries[start..start + size];
        written.extend(ingest(&store, batch, now).await);
        ingest(linear.as_ref(), batch, now).await;
        if round == 2 {
            // a replay: counted once, nothing written
            assert!(ingest(&store, &entries[..8], now).await.is_empty());
            // half of the leaves rolled up midway, as the stream would
            let half: Vec<Scope> = (0..6)
                .map(|k| Scope::parse(&key_scope(k)).unwrap())
                .collect();
            assert!(store.roll_up(&half, now).await.unwrap() > 0);
        }
        start += size;
    }
    assert_eq!(start, entries.len());
    let (months, hours) = counters_fed(&entries);
    let want = read_all(linear.as_ref(), &months, &hours).await;
    let leaves: Vec<Scope> = (0..12)
        .map(|k| Scope::parse(&key_scope(k)).unwrap())
        .collect();

    let pending = read_all(&store, &months, &hours).await;
    assert!(
        first_difference(&pending, &want).is_some(),
        "some spend is still pending on its leaves"
    );
    // with every pending item the ingests wrote (those rolled up are found gone)
    let fresh = store.read_fresh(&months, &hours, &written).await.unwrap();
    if let Some(diff) = first_difference(&fresh, &want) {
        panic!("counters with their leaves' pending items: {diff}");
    }

    assert!(store.roll_up(&leaves, now).await.unwrap() > 0);
    let rolled = read_all(&store, &months, &hours).await;
    if let Some(diff) = first_difference(&rolled, &want) {
        panic!("rolled up: {diff}");
    }
    assert_eq!(
        store.roll_up(&leaves, now).await.unwrap(),
        0,
        "nothing left to move"
    );
    assert_eq!(read_all(&store, &months, &hours).await, rolled);
}

/// A runaway key keeps reporting while its leaf is rolled up: each roll-up transaction still
/// moves what it read, and what arrived meanwhile waits for the next one. (The first build
/// conditioned each delete on the pending item's sequence, which every ingest moved: a key
/// reporting between the roll-up's read and its commit cancelled every attempt, and its
/// project, provider and `*` counters stopped moving while it ran.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_reporting_during_its_roll_up_is_still_rolled_up() {
    let sdk = aws::sdk().await;
    let (plain, table) = aws::new_store(&sdk).await;
    let now = at("2026-12-07T11:30:00Z");
    let racer = IngestBeforeEachRollUp::new(plain.clone(), 0, now);
    let store = store_on(&sdk, &table, racer.clone());
    let linear = reference();
    let first: Vec<_> = (0..3)
        .map(|i| entry(&format!("r{i}"), 0, 100 + i, now))
        .collect();
    for e in &first {
        ingest(&store, std::slice::from_ref(e), now).await;
        ingest(linear.as_ref(), std::slice::from_ref(e), now).await;
    }
    let leaf = Scope::parse(&key_scope(0)).unwrap();

    let moved = store.roll_up(std::slice::from_ref(&leaf), now).await;
    assert!(
        moved.as_ref().is_ok_and(|n| *n > 0),
        "roll-up raced by its leaf's ingest: {moved:?}"
    );
    let raced = racer.ingested.lock().unwrap().clone();
    assert_eq!(raced.len(), 1, "one roll-up transaction, not cancelled");
    let (months, hours) = counters_fed(&first);
    let want = read_all(linear.as_ref(), &months, &hours).await;
    let leaf_only = |c: &spendguard_tests::hotitem::Counters| {
        let months = c.0.iter().filter(|(k, _)| k.scope != leaf);
        let hours = c.1.iter().filter(|(k, _)| k.scope != leaf);
        (
            months.map(|(k, v)| (k.clone(), v.clone())).collect(),
            hours.map(|(k, v)| (k.clone(), v.clone())).collect(),
        )
    };
    if let Some(diff) = first_difference(
        &leaf_only(&read_all(&store, &months, &hours).await),
        &leaf_only(&want),
    ) {
        panic!("ancestors after the raced roll-up: {diff}");
    }

    // what the key reported meanwhile is moved by the next roll-up
    racer
        .racing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    ingest(linear.as_ref(), &raced, now).await;
    assert!(store.roll_up(&[leaf], now).await.unwrap() > 0);
    let all: Vec<_> = first.iter().chain(&raced).cloned().collect();
    let (months, hours) = counters_fed(&all);
    let want = read_all(linear.as_ref(), &months, &hours).await;
    if let Some(diff) = first_difference(&read_all(&store, &months, &hours).await, &want) {
        panic!("after the next roll-up: {diff}");
    }
}

/// Review finding 4: a group whose last attempt finds every remaining item moved by another
/// roll-up has nothing left to move. Six pending items, one moved by someone else before each
/// of the six attempts: the roll-up ends with nothing moved by it. (Before, the group was
/// empty after the sixth attempt and the error message indexed it: a panic.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_emptied_by_other_roll_ups_on_its_last_attempt_moves_nothing() {
    let sdk = aws::sdk().await;
    let (plain, table) = aws::new_store(&sdk).await;
    let mover = MoveOneBeforeEachRollUp::new(&sdk, &table);
    let store = store_on(&sdk, &table, mover.clone());
    let now = at("2026-12-07T11:30:00Z");
    for i in 0..6 {
        ingest(&plain, &[entry(&format!("g{i}"), 0, 10 + i, now)], now).await;
    }
    let leaf = Scope::parse(&key_scope(0)).unwrap();
    let moved = tokio::spawn(async move { store.roll_up(&[leaf], now).await })
        .await
        .expect("the roll-up panicked");
    assert_eq!(
        moved.unwrap(),
        0,
        "every item was moved by the other roll-up"
    );
    assert_eq!(
        mover.attempts.load(std::sync::atomic::Ordering::SeqCst),
        6,
        "one attempt per item gone"
    );
}

/// Review finding 3: a pending item the roll-up cannot read fails only itself: the leaf's
/// other items and the other leaves move, the bad item stays, and the call fails naming it.
/// (Before, the leaf's query failed on it: nothing of the call moved.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pending_item_fails_only_itself() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let linear = reference();
    let now = at("2026-12-07T11:30:00Z");
    ingest(&store, &[entry("bad", 0, 999, now)], now).await;
    spoil_pending_items(&sdk, &table, &key_scope(0)).await;
    let good = vec![
        entry("a1", 0, 10, now),
        entry("a2", 0, 20, now),
        entry("b1", 1, 30, now),
    ];
    for e in &good {
        ingest(&store, std::slice::from_ref(e), now).await;
        ingest(linear.as_ref(), std::slice::from_ref(e), now).await;
    }
    let leaves: Vec<Scope> = (0..2)
        .map(|k| Scope::parse(&key_scope(k)).unwrap())
        .collect();

    let err = store.roll_up(&leaves, now).await.unwrap_err();
    assert!(err.to_string().contains("pending item"), "{err}");
    assert_eq!(
        pending_sks(&sdk, &table, &key_scope(0)).await.len(),
        1,
        "the bad one stays"
    );
    assert!(pending_sks(&sdk, &table, &key_scope(1)).await.is_empty());
    let ancestors = |c: spendguard_tests::hotitem::Counters| {
        let leaf = |s: &Scope| leaves.contains(s);
        (
            c.0.into_iter().filter(|(k, _)| !leaf(&k.scope)).collect(),
            c.1.into_iter().filter(|(k, _)| !leaf(&k.scope)).collect(),
        )
    };
    let (months, hours) = counters_fed(&good);
    let want = ancestors(read_all(linear.as_ref(), &months, &hours).await);
    if let Some(diff) = first_difference(&ancestors(read_all(&store, &months, &hours).await), &want)
    {
        panic!("the readable items' ancestors: {diff}");
    }
}

/// A batch over more leaves than one snapshot reads (a `TransactGetItems` takes 100 items)
/// is read without writing: the counters first, then the pending items, which can only miss
/// what a roll-up moves between the two reads, never count it twice. (The first build rolled
/// the batch's leaves up inside the webhook's request instead, racing the stream.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_many_fresh_leaves_writes_nothing_and_counts_each_once() {
    let sdk = aws::sdk().await;
    let recorder = aws::WriteRecorder::default();
    let store = intercepted_store(&sdk, recorder.clone()).await;
    let linear = reference();
    let now = at("2026-12-07T11:30:00Z");
    let entries: Vec<_> = (0..30)
        .map(|k| entry(&format!("m{k}"), k, 10 + k as i64, now))
        .collect();
    let written = ingest(&store, &entries, now).await;
    ingest(linear.as_ref(), &entries, now).await;
    let leaves: Vec<Scope> = (0..30)
        .map(|k| Scope::parse(&key_scope(k)).unwrap())
        .collect();
    let (months, hours) = counters_fed(&entries);
    assert!(
        months.len() + hours.len() + written.len() > 100,
        "more than one snapshot"
    );
    let want = read_all(linear.as_ref(), &months, &hours).await;

    let before = recorder.writes().len();
    let fresh = store.read_fresh(&months, &hours, &written).await.unwrap();
    assert_eq!(recorder.writes().len(), before, "the read wrote");
    if let Some(diff) = first_difference(&fresh, &want) {
        panic!("counters with their leaves' pending items: {diff}");
    }
    assert_eq!(
        store.roll_up(&leaves, now).await.unwrap(),
        30,
        "every pending item still there for the stream"
    );
}

/// Review S5: the index shard is a hash of the pending item's token, not of its leaf, so a
/// hot key's index writes spread over the shards instead of throttling one shard (and with
/// it every key sharing it); the check still finds the leaf once, with its longest wait.
/// (Before, every pending item of a leaf carried the leaf's one shard.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leafs_pending_items_spread_over_the_index_shards() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let first = at("2026-12-07T11:30:00Z");
    for i in 0..8 {
        let now = first + chrono::Duration::seconds(i);
        ingest(&store, &[entry(&format!("hot{i}"), 0, 10, now)], now).await;
    }
    let shards: BTreeSet<String> = pending_shards(&sdk, &table, &key_scope(0))
        .await
        .into_iter()
        .collect();
    assert!(shards.len() > 1, "8 pending items, shards {shards:?}");

    let found = store.pending_leaves(10).await.unwrap();
    assert_eq!(
        found.leaves,
        vec![(Scope::parse(&key_scope(0)).unwrap(), first)],
        "the leaf once, with when its oldest pending item was written"
    );
    assert!(!found.more);
}

/// Item 2 of the pending index's brief: the index orders pending items by when they were
/// written, not by their records' time: a backfilled record a month old written now has
/// waited no longer than a fresh one. (Before, its `first_at`, the record's time, came first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_leaves_wait_from_when_their_items_were_written() {
    let sdk = aws::sdk().await;
    let (store, _) = aws::new_store(&sdk).await;
    let now = at("2026-12-07T11:30:00Z");
    let backfilled = now - chrono::Duration::days(30);
    ingest(&store, &[entry("old", 0, 10, backfilled)], now).await;
    let found = store.pending_leaves(10).await.unwrap();
    assert_eq!(
        found.leaves,
        vec![(Scope::parse(&key_scope(0)).unwrap(), now)]
    );
    // rolled up in the quarter-hour it was written: nothing late, however old the record
    // (a backfill of an ended period is not evaluated in it, as if counted at ingest)
    assert_eq!(
        store
            .roll_up(&[found.leaves[0].0.clone()], now)
            .await
            .unwrap(),
        1
    );
    assert!(
        store.late_spend().await.unwrap().marks.is_empty(),
        "a month-old record rolled up at once is not late spend"
    );
}

/// Review S3: a bounded call returns the leaves that have waited longest across all shards,
/// not the first ones found in shard order (which starved the high shards under a backlog
/// larger than one check takes). Each key's record is written a minute after the previous
/// key's, its record time an hour earlier (write order and record order disagree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_call_returns_the_longest_waiting_leaves_of_every_shard() {
    let sdk = aws::sdk().await;
    let (store, _) = aws::new_store(&sdk).await;
    let first = at("2026-12-07T11:30:00Z");
    let keys = 24;
    let written = |k: usize| first + chrono::Duration::minutes(k as i64);
    for k in 0..keys {
        let record_at = first - chrono::Duration::hours(k as i64);
        ingest(
            &store,
            &[entry(&format!("w{k}"), k, 10, record_at)],
            written(k),
        )
        .await;
    }
    let limit = 5;
    let found = store.pending_leaves(limit).await.unwrap();
    let want: Vec<(Scope, chrono::DateTime<chrono::Utc>)> = (0..limit)
        .map(|k| (Scope::parse(&key_scope(k)).unwrap(), written(k)))
        .collect();
    assert_eq!(found.leaves, want);
    assert!(found.more, "19 leaves left for the next call");

    let all = store.pending_leaves(keys).await.unwrap();
    assert_eq!(all.leaves.len(), keys);
    assert!(!all.more, "nothing left when the limit takes every leaf");
}

/// Review S9: DynamoDB takes 100 items in one `TransactGetItems` (since 2022), so a read of
/// up to 100 counters and pending items is one consistent snapshot, one request. (Before,
/// `MAX_TRANSACT_GET` was moto's former 25: this read fell back to the counters, then the
/// pending items, two reads that can miss what a roll-up moves between them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_up_to_100_items_is_one_snapshot() {
    let sdk = aws::sdk().await;
    let requests = aws::RequestCounter::default();
    let store = intercepted_store(&sdk, requests.clone()).await;
    let linear = reference();
    let now = at("2026-12-07T11:30:00Z");
    let entries: Vec<_> = (0..6)
        .map(|k| entry(&format!("s{k}"), k, 10 + k as i64, now))
        .collect();
    let mut written = Vec::new();
    for e in &entries {
        written.extend(ingest(&store, std::slice::from_ref(e), now).await);
        ingest(linear.as_ref(), std::slice::from_ref(e), now).await;
    }
    let (months, _) = counters_fed(&entries);
    let items = months.len() + written.len();
    assert!(
        (26..=100).contains(&items),
        "{items} items: more than 25, at most 100"
    );

    requests.reset();
    let fresh = store.read_fresh(&months, &[], &written).await.unwrap();
    assert_eq!(
        requests.operations(),
        std::collections::BTreeMap::from([("TransactGetItems".to_string(), 1)])
    );
    let want = read_all(linear.as_ref(), &months, &[]).await;
    if let Some(diff) = first_difference(&fresh, &want) {
        panic!("counters with their leaves' pending items: {diff}");
    }
}

/// What a case of the race model does, in order.
#[derive(Debug, Clone)]
enum RaceOp {
    /// New records of a key, one batch.
    Ingest {
        key: usize,
        records: usize,
    },
    /// An earlier batch delivered again.
    Replay {
        batch: usize,
    },
    RollUp {
        key: usize,
    },
    /// Two roll-ups of one key at once (a stream batch redelivered while it runs).
    DuplicateRollUp {
        key: usize,
    },
    /// A roll-up of a key and new records of it at once.
    RollUpRacingIngest {
        key: usize,
        records: usize,
    },
}

fn race_op() -> impl proptest::strategy::Strategy<Value = RaceOp> {
    use proptest::prelude::*;
    prop_oneof![
        (0..4usize, 1..4usize).prop_map(|(key, records)| RaceOp::Ingest { key, records }),
        (0..8usize).prop_map(|batch| RaceOp::Replay { batch }),
        (0..4usize).prop_map(|key| RaceOp::RollUp { key }),
        (0..4usize).prop_map(|key| RaceOp::DuplicateRollUp { key }),
        (0..4usize, 1..4usize)
            .prop_map(|(key, records)| RaceOp::RollUpRacingIngest { key, records }),
    ]
}

/// Runs `ops` on a fresh table and the embedded store; every ancestor and dimension counter
/// must end equal to the sum of the distinct records accepted, and a last roll-up must find
/// nothing left.
async fn run_race_case(ops: &[RaceOp]) -> Result<(), String> {
    let sdk = aws::sdk().await;
    let (store, _) = aws::new_store(&sdk).await;
    let linear = reference();
    let now = at("2026-12-07T11:30:00Z");
    let mut batches: Vec<Vec<spendguard_domain::usage::UsageEntry>> = Vec::new();
    let mut next_id = 0;
    let mut new_batch = |key: usize, records: usize| {
        let batch: Vec<_> = (0..records)
            .map(|i| {
                next_id += 1;
                entry(
                    &format!("x{next_id}"),
                    key,
                    7 + (next_id * 13) % 90,
                    now - chrono::Duration::minutes(i as i64 * 40),
                )
            })
            .collect();
        batch
    };
    let leaf = |key: usize| Scope::parse(&key_scope(key)).unwrap();
    for op in ops {
        match op {
            RaceOp::Ingest { key, records } => {
                let batch = new_batch(*key, *records);
                ingest(&store, &batch, now).await;
                batches.push(batch);
            }
            RaceOp::Replay { batch } => {
                if let Some(b) = batches.get(*batch % batches.len().max(1)).cloned() {
                    ingest(&store, &b, now).await;
                }
            }
            RaceOp::RollUp { key } => {
                store
                    .roll_up(&[leaf(*key)], now)
                    .await
                    .map_err(|e| format!("{op:?}: {e}"))?;
            }
            RaceOp::DuplicateRollUp { key } => {
                let leaves = [leaf(*key)];
                let (a, b) = tokio::join!(store.roll_up(&leaves, now), store.roll_up(&leaves, now));
                a.and(b).map_err(|e| format!("{op:?}: {e}"))?;
            }
            RaceOp::RollUpRacingIngest { key, records } => {
                let batch = new_batch(*key, *records);
                let leaves = [leaf(*key)];
                let (rolled, ingested) = tokio::join!(
                    store.roll_up(&leaves, now),
                    store.ingest_usage(&batch, now, spendguard_domain::usage::USAGE_MARKER_TTL)
                );
                rolled.map_err(|e| format!("{op:?}: {e}"))?;
                ingested.map_err(|e| format!("{op:?}: {e}"))?;
                batches.push(batch);
            }
        }
    }
    let all: Vec<_> = batches.iter().flatten().cloned().collect();
    if all.is_empty() {
        return Ok(());
    }
    ingest(linear.as_ref(), &all, now).await;
    let leaves: Vec<Scope> = (0..4).map(leaf).collect();
    store
        .roll_up(&leaves, now)
        .await
        .map_err(|e| e.to_string())?;
    let (months, hours) = counters_fed(&all);
    let want = read_all(linear.as_ref(), &months, &hours).await;
    if let Some(diff) = first_difference(&read_all(&store, &months, &hours).await, &want) {
        return Err(format!("after every roll-up: {diff}"));
    }
    match store.roll_up(&leaves, now).await {
        Ok(0) => Ok(()),
        other => Err(format!("a last roll-up found something: {other:?}")),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 12,
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..proptest::prelude::ProptestConfig::default()
    })]
    /// Random interleavings of ingest (new and replayed), roll-up, duplicate roll-up and
    /// roll-up racing ingest: every counter ends exactly the sum of the distinct records.
    #[test]
    fn any_interleaving_of_ingest_and_roll_up_counts_each_record_once(
        ops in proptest::collection::vec(race_op(), 1..10)
    ) {
        thread_local! {
            static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
        }
        let result = RUNTIME.with(|runtime| runtime.block_on(run_race_case(&ops)));
        proptest::prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// ADR 031 defect 2: the roll-up runs as usage-rollup, whose role (template.yaml's
/// `UsageRollupFunction`; tests/deploy checks terraform/ agrees and evaluates it) may write
/// only some items. Every item a roll-up writes — the pending items it deletes, the counters
/// it adds to — is one that role allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_up_writes_only_items_the_roll_up_role_may_write() {
    let sdk = aws::sdk().await;
    let (_, table) = aws::new_store(&sdk).await;
    let ingesting = store_on(&sdk, &table, aws::WriteRecorder::default());
    let recorder = aws::WriteRecorder::default();
    let rolling_up = store_on(&sdk, &table, recorder.clone());
    let now = at("2026-12-07T11:30:00Z");
    for k in 0..3 {
        ingest(&ingesting, &[entry(&format!("r{k}"), k, 125, now)], now).await;
    }
    let leaves: Vec<Scope> = (0..3)
        .map(|k| Scope::parse(&key_scope(k)).unwrap())
        .collect();
    // after a quarter-hour boundary: the roll-up marks late spend too
    let later = now + chrono::Duration::minutes(16);
    assert_eq!(rolling_up.roll_up(&leaves, later).await.unwrap(), 3);

    let statements = roll_up_write_statements();
    let writes = recorder.writes();
    let refused: Vec<_> = writes
        .iter()
        .filter(|(operation, pk)| {
            !statements.iter().any(|(actions, keys)| {
                actions.contains(&format!("dynamodb:{operation}"))
                    && keys.iter().any(|p| match p.strip_suffix('*') {
                        Some(prefix) => pk.starts_with(prefix),
                        None => pk == p,
                    })
            })
        })
        .collect();
    assert!(refused.is_empty(), "IAM would refuse {refused:?}");
    // the check above saw the roll-up's real writes: pending items deleted, ancestors added to
    for (operation, pk) in [
        ("DeleteItem", "SPEND#openai/p0/k0"),
        ("UpdateItem", "SPEND#*"),
        ("UpdateItem", "LATE_SPEND#"),
    ] {
        assert!(
            writes.iter().any(|(o, p)| o == operation
                && p.starts_with(pk)
                && (pk.ends_with('#') || p == pk)),
            "no {operation} of {pk}: {writes:?}"
        );
    }
}

/// (actions, `dynamodb:LeadingKeys` patterns) of each statement of usage-rollup's role in
/// template.yaml that names leading keys.
fn roll_up_write_statements() -> Vec<(Vec<String>, Vec<String>)> {
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"),
    )
    .unwrap();
    let start = template
        .find("  UsageRollupFunction:")
        .expect("the roll-up is a function of its own");
    let end = start + template[start..].find("      Events:").unwrap();
    let list = |line: &str| -> Vec<String> {
        line.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut statements = Vec::new();
    let mut actions = Vec::new();
    for line in template[start..end].lines().map(str::trim) {
        if let Some(a) = line.strip_prefix("Action: ") {
            actions = list(a);
        } else if let Some(keys) = line.strip_prefix("dynamodb:LeadingKeys: ") {
            statements.push((actions.clone(), list(keys)));
        }
    }
    assert!(
        !statements.is_empty(),
        "the roll-up's writes name leading keys"
    );
    statements
}

/// Review of merge28, B1: one roll-up call reads and moves at most its bound of pending items,
/// shared among the leaves it names, so a hot key's backlog neither makes a call unbounded in
/// memory and time (the scheduled check rolls up before it evaluates anything) nor starves the
/// call's other leaves; the next call moves the rest, exactly once. (Before, a call read every
/// pending item of every leaf it named, then moved them all: 8 of 8 here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_roll_up_moves_a_bounded_share_of_each_leaf_and_the_next_the_rest() {
    let sdk = aws::sdk().await;
    let (plain, table) = aws::new_store(&sdk).await;
    let store = plain.with_roll_up_items(4);
    let now = at("2026-12-07T11:30:00Z");
    // key 0 runs away: six ingests, six pending items; keys 1 and 2: one each
    let mut all = Vec::new();
    for i in 0..6 {
        all.push(entry(&format!("h{i}"), 0, 100 + i, now));
    }
    for k in 1..3 {
        all.push(entry(&format!("c{k}"), k, 50, now));
    }
    for e in &all {
        ingest(&store, std::slice::from_ref(e), now).await;
    }
    let leaves: Vec<Scope> = (0..3)
        .map(|k| Scope::parse(&key_scope(k)).unwrap())
        .collect();

    assert_eq!(store.roll_up(&leaves, now).await.unwrap(), 4, "the bound");
    for k in 1..3 {
        assert!(
            pending_sks(&sdk, &table, &key_scope(k)).await.is_empty(),
            "key {k} is rolled up in the same call as the runaway key"
        );
    }
    assert_eq!(pending_sks(&sdk, &table, &key_scope(0)).await.len(), 4);
    assert_eq!(store.roll_up(&leaves, now).await.unwrap(), 4);
    assert_eq!(store.roll_up(&leaves, now).await.unwrap(), 0);

    let linear = reference();
    ingest(linear.as_ref(), &all, now).await;
    let (months, hours) = counters_fed(&all);
    let want = read_all(linear.as_ref(), &months, &hours).await;
    if let Some(diff) = first_difference(&read_all(&store, &months, &hours).await, &want) {
        panic!("after the bounded roll-ups: {diff}");
    }
}

/// Two deployments in one account (two tables: staging and production, say) counting the same
/// record in the same second: each counts it. DynamoDB keeps a transaction's client token for
/// ten minutes per account and region, not per table; the ingest's token named only the
/// records and the second, so the second table's transaction was refused as
/// `IdempotentParameterMismatchException` (a 503 to the sender).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tables_counting_the_same_record_in_the_same_second_each_count_it() {
    let sdk = aws::sdk().await;
    let (staging, _) = aws::new_store(&sdk).await;
    let (production, _) = aws::new_store(&sdk).await;
    let now = at("2026-12-07T11:30:00Z");
    let record = entry("mirrored", 0, 125, now);
    for store in [&staging, &production] {
        let outcome = store
            .ingest_usage(
                std::slice::from_ref(&record),
                now,
                spendguard_domain::usage::USAGE_MARKER_TTL,
            )
            .await;
        assert_eq!(
            outcome.map(|o| o.accepted).map_err(|e| e.to_string()),
            Ok(vec!["mirrored".to_string()])
        );
    }
}

/// A record id replayed with another amount in the same second is a duplicate, as at any other
/// moment. (The ingest's client token named only the ids and the second: DynamoDB refuses a
/// token it saw within ten minutes with other parameters, so the replay was a 503.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_replayed_with_another_amount_in_the_same_second_is_a_duplicate() {
    let sdk = aws::sdk().await;
    let (store, _) = aws::new_store(&sdk).await;
    let now = at("2026-12-07T11:30:00Z");
    for cents in [125, 900] {
        let outcome = store
            .ingest_usage(
                &[entry("replayed", 0, cents, now)],
                now,
                spendguard_domain::usage::USAGE_MARKER_TTL,
            )
            .await
            .map_err(|e| e.to_string());
        let counted = outcome.map(|o| (o.accepted.len(), o.duplicates.len()));
        assert_eq!(
            counted,
            Ok(if cents == 125 { (1, 0) } else { (0, 1) }),
            "{cents} cents"
        );
    }
}

/// Review of a741783, B-4: a late-spend mark read by a check, then added to again by a move of
/// the same quarter-hour (a number set cannot tell), is not settled by that check: the spend
/// moved after the check's evaluation read its counters is evaluated by the next one. (Before,
/// the check deleted the quarter-hour it had read, and with it the later move's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_added_to_after_it_was_read_is_not_settled() {
    let sdk = aws::sdk().await;
    let (store, _) = aws::new_store(&sdk).await;
    let written = at("2026-12-07T23:59:00Z");
    let moved = at("2026-12-08T00:00:30Z");
    let leaf = Scope::parse(&key_scope(0)).unwrap();
    ingest(&store, &[entry("m1", 0, 100, written)], written).await;
    assert_eq!(
        store
            .roll_up(std::slice::from_ref(&leaf), moved)
            .await
            .unwrap(),
        1
    );
    let read = store.late_spend().await.unwrap();
    assert_eq!(read.since(), Some(at("2026-12-07T23:45:00Z")));
    // the same key's spend of the same quarter-hour, moved after the check read the mark
    ingest(&store, &[entry("m2", 0, 100, written)], written).await;
    assert_eq!(
        store
            .roll_up(std::slice::from_ref(&leaf), moved)
            .await
            .unwrap(),
        1
    );
    store.settle_late_spend(&read, moved).await.unwrap();
    assert_eq!(
        store.late_spend().await.unwrap().since(),
        Some(at("2026-12-07T23:45:00Z")),
        "the later move's quarter-hour is still owed"
    );
    // read again and settled with nothing moved since: gone
    let again = store.late_spend().await.unwrap();
    store.settle_late_spend(&again, moved).await.unwrap();
    let settled = store.late_spend().await.unwrap();
    assert!(
        settled.marks.iter().all(|m| m.quarters.is_empty()),
        "{settled:?}"
    );
    assert_eq!(settled.evaluated_until, Some(moved));
}
