//! Embedded store: one SQLite file. The default for local runs and small cron installs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rust_decimal::Decimal;

use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::ClaimStore;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::MarkerStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_app::ports::store::SpendStore;
use spendguard_app::ports::store::{AckOutcome, AlertStore};
use spendguard_app::ports::store::{ReservationRequest, ReservationStore, Reserved};
use spendguard_app::ports::store::{StoreError, StoreResult, from_doc, to_doc};
use spendguard_domain::aggregate::DailySummary;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::authorize::{DECISION_MEMORY, Decision, Verdict, decide};
use spendguard_domain::budget::Budget;
use spendguard_domain::keys::{KeyRecord, KeyStatus};
use spendguard_domain::money::{checked_add, parse_decimal};
use spendguard_domain::period::YearMonth;
use spendguard_domain::records::{
    Acknowledgement, AuditEntry, Claim, ClaimOutcome, ClaimSpace, KillSwitch, Observation,
    OpenAlert, SourceDay, SwitchState, Versioned,
};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::{PolicySet, Settings};
use spendguard_domain::usage::{
    CounterKey, HOUR_COUNTER_RETENTION, HourCounters, HourKey, IngestOutcome, Metric,
    MonthCounters, Tally, UsageEntry, presum, presum_hours,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS budgets (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (id INTEGER PRIMARY KEY CHECK (id = 1), doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS usage_markers (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL, zone TEXT NOT NULL, month TEXT NOT NULL, day INTEGER NOT NULL,
    metric TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (scope, zone, month, day, metric));
CREATE TABLE IF NOT EXISTS hour_counters (
    scope TEXT NOT NULL, hour TEXT NOT NULL, bucket TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (scope, hour, bucket));
CREATE TABLE IF NOT EXISTS observations (
    budget_id TEXT NOT NULL, source TEXT NOT NULL, window TEXT NOT NULL, period_key TEXT NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (budget_id, source, window, period_key));
CREATE TABLE IF NOT EXISTS source_days (
    budget_id TEXT NOT NULL, date TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (budget_id, date));
CREATE TABLE IF NOT EXISTS claims (
    space TEXT NOT NULL, claim_key TEXT NOT NULL, owner TEXT NOT NULL,
    state TEXT NOT NULL, lease_until INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (space, claim_key));
CREATE TABLE IF NOT EXISTS open_alerts (alert_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL, status_version INTEGER NOT NULL DEFAULT 0);
-- `zone` is the summary's series key: the zone, then `#<source>` for a provider's series
CREATE TABLE IF NOT EXISTS summaries (
    scope TEXT NOT NULL, zone TEXT NOT NULL, date TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (scope, date, zone));
CREATE TABLE IF NOT EXISTS digest_queue (
    channel TEXT NOT NULL, alert_id TEXT NOT NULL, queued_at INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (channel, alert_id));
CREATE TABLE IF NOT EXISTS kill_switches (scope TEXT PRIMARY KEY, doc TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (month TEXT NOT NULL, sort_key TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (month, sort_key));
CREATE TABLE IF NOT EXISTS markers (namespace TEXT NOT NULL, id TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (namespace, id));
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, verdict TEXT NOT NULL, forget_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS holds (
    reservation TEXT NOT NULL, window_key TEXT NOT NULL, amount TEXT NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (reservation, window_key));
CREATE INDEX IF NOT EXISTS holds_by_window ON holds (window_key, expires_at);
-- moved by every write of what `load_policy` reads, whoever writes it (`policy_version`)
CREATE TABLE IF NOT EXISTS policy_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT OR IGNORE INTO policy_version (id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS budgets_inserted AFTER INSERT ON budgets BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS budgets_updated AFTER UPDATE ON budgets BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS budgets_deleted AFTER DELETE ON budgets BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS settings_inserted AFTER INSERT ON settings BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS settings_updated AFTER UPDATE ON settings BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS keys_inserted AFTER INSERT ON keys BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS keys_respecified AFTER UPDATE OF spec ON keys BEGIN UPDATE policy_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS keys_deleted AFTER DELETE ON keys BEGIN UPDATE policy_version SET version = version + 1; END;
"#;

/// A SQLite file shared safely by threads (one connection behind a mutex) and by processes
/// (SQLite's file locking, `BEGIN IMMEDIATE` for every write).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn db(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(format!("sqlite busy: {e}"))
        }
        other => StoreError::Unavailable(format!("sqlite: {other}")),
    }
}

fn decimal(what: &str, text: &str) -> StoreResult<Decimal> {
    parse_decimal(text)
        .map_err(|_| StoreError::Corrupt(format!("{what}: `{text}` is not a decimal")))
}

impl SqliteStore {
    /// Opens (creating if needed) the store file at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(db)?;
        Self::init(conn)
    }

    /// A private store in memory (tests, dry runs).
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db)?)
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(StdDuration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        // files made before key statuses were versioned
        let versioned: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('keys') WHERE name = 'status_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db)?
            > 0;
        if !versioned {
            conn.execute_batch(
                "ALTER TABLE keys ADD COLUMN status_version INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(db)?;
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| {
                StoreError::Unavailable("sqlite connection poisoned by a panic".into())
            })?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite task failed: {e}")))?
    }

    /// Deletes the rows whose time has passed, as DynamoDB's TTL deletes their items: usage
    /// and message markers, cache entries, claims, reservations and holds past their expiry,
    /// hour counters past [`HOUR_COUNTER_RETENTION`]. Nothing reads them once expired; without
    /// this a long-running store keeps a row for every usage record it ever counted. Deleted
    /// [`PRUNE_CHUNK`] rows per transaction, so that writers wait at most one chunk. Returns
    /// how many rows were deleted.
    pub async fn prune_expired(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let epoch = rusqlite::types::Value::Integer(now.timestamp());
        let oldest_hour = HourKey {
            scope: Scope::root(),
            hour: now - HOUR_COUNTER_RETENTION,
        };
        let expired: [(&str, &str, rusqlite::types::Value); 7] = [
            ("usage_markers", "expires_at <= ?1", epoch.clone()),
            ("markers", "expires_at <= ?1", epoch.clone()),
            ("cache", "expires_at <= ?1", epoch.clone()),
            ("claims", "expires_at <= ?1", epoch.clone()),
            ("reservations", "forget_at <= ?1", epoch.clone()),
            ("holds", "expires_at <= ?1", epoch),
            // hour labels (`yyyy-mm-ddThh`) sort as their hours do
            ("hour_counters", "hour < ?1", oldest_hour.label().into()),
        ];
        let mut deleted = 0;
        for (table, condition, bound) in expired {
            let statement = format!(
                "DELETE FROM {table} WHERE rowid IN \
                 (SELECT rowid FROM {table} WHERE {condition} LIMIT {PRUNE_CHUNK})"
            );
            loop {
                let (statement, bound) = (statement.clone(), bound.clone());
                let chunk = self
                    .run(move |conn| conn.execute(&statement, [bound]).map_err(db))
                    .await?;
                deleted += chunk as u64;
                if chunk < PRUNE_CHUNK {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

/// Rows deleted per transaction by [`SqliteStore::prune_expired`].
const PRUNE_CHUNK: usize = 5_000;

fn write_budget(tx: &rusqlite::Transaction<'_>, budget: &Budget) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO budgets (id, doc) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
        params![budget.id, to_doc(budget)?],
    )
    .map_err(db)?;
    Ok(())
}

fn write_settings(tx: &rusqlite::Transaction<'_>, settings: &Settings) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO settings (id, doc) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
        params![to_doc(settings)?],
    )
    .map_err(db)?;
    Ok(())
}

fn immediate(conn: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)
}

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn put_policy(&self, set: &PolicySet) -> StoreResult<()> {
        let set = set.clone();
        self.run(move |c| {
            let tx = immediate(c)?;
            let keep: BTreeSet<String> = set.budgets.iter().map(|b| b.id.clone()).collect();
            let existing: Vec<String> = {
                let mut st = tx.prepare("SELECT id FROM budgets").map_err(db)?;
                let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            for id in existing.iter().filter(|id| !keep.contains(*id)) {
                tx.execute("DELETE FROM budgets WHERE id = ?1", params![id])
                    .map_err(db)?;
            }
            for b in &set.budgets {
                write_budget(&tx, b)?;
            }
            write_settings(&tx, &set.settings)?;
            let keep_keys: BTreeSet<String> = set.keys.iter().map(|k| k.id.clone()).collect();
            let existing_keys: Vec<String> = {
                let mut st = tx.prepare("SELECT id FROM keys").map_err(db)?;
                let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            for id in existing_keys.iter().filter(|id| !keep_keys.contains(*id)) {
                tx.execute("DELETE FROM keys WHERE id = ?1", params![id])
                    .map_err(db)?;
            }
            let active = to_doc(&KeyStatus::Active)?;
            for k in &set.keys {
                // a key's status survives re-applying the budgets file
                tx.execute(
                    "INSERT INTO keys (id, spec, status) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET spec = excluded.spec",
                    params![k.id, to_doc(k)?, active],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn load_policy(&self) -> StoreResult<PolicySet> {
        self.run(|c| {
            let mut st = c
                .prepare("SELECT id, doc FROM budgets ORDER BY id")
                .map_err(db)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?;
            let mut budgets = Vec::new();
            for row in rows {
                let (id, doc) = row.map_err(db)?;
                budgets.push(from_doc(&format!("budget {id}"), &doc)?);
            }
            let settings = c
                .query_row("SELECT doc FROM settings WHERE id = 1", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(db)?;
            let settings = match settings {
                Some(doc) => from_doc("settings", &doc)?,
                None => Settings::default(),
            };
            let mut st = c.prepare("SELECT spec FROM keys ORDER BY id").map_err(db)?;
            let keys = st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(db)?
                .map(|r| from_doc("key", &r.map_err(db)?))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(PolicySet {
                settings,
                budgets,
                keys,
            })
        })
        .await
    }

    async fn policy_version(&self) -> StoreResult<String> {
        self.run(|c| {
            c.query_row("SELECT version FROM policy_version WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v.to_string())
            .map_err(db)
        })
        .await
    }

    async fn settings(&self) -> StoreResult<Settings> {
        self.run(|c| {
            let doc = c
                .query_row("SELECT doc FROM settings WHERE id = 1", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(db)?;
            doc.map_or(Ok(Settings::default()), |d| from_doc("settings", &d))
        })
        .await
    }

    async fn put_budget(&self, budget: &Budget) -> StoreResult<()> {
        let budget = budget.clone();
        self.run(move |c| {
            let tx = immediate(c)?;
            write_budget(&tx, &budget)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn get_budget(&self, id: &str) -> StoreResult<Option<Budget>> {
        let id = id.to_string();
        self.run(move |c| {
            let doc = c
                .query_row("SELECT doc FROM budgets WHERE id = ?1", params![id], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(db)?;
            doc.map(|d| from_doc(&format!("budget {id}"), &d))
                .transpose()
        })
        .await
    }

    async fn delete_budget(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.run(move |c| {
            let n = c
                .execute("DELETE FROM budgets WHERE id = ?1", params![id])
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_settings(&self, settings: &Settings) -> StoreResult<()> {
        let settings = settings.clone();
        self.run(move |c| {
            let tx = immediate(c)?;
            write_settings(&tx, &settings)?;
            tx.commit().map_err(db)
        })
        .await
    }
}

/// Claims each id's usage marker, in order: true for a new id (or one whose marker expired),
/// which counts; false for a live marker, written earlier or by this batch.
fn claim_markers<'a>(
    tx: &rusqlite::Transaction<'_>,
    ids: impl Iterator<Item = &'a str>,
    now: DateTime<Utc>,
    marker_ttl: Duration,
) -> StoreResult<Vec<bool>> {
    let mut claim = tx
        .prepare_cached(
            "INSERT INTO usage_markers (id, expires_at) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET expires_at = excluded.expires_at
             WHERE usage_markers.expires_at <= ?3",
        )
        .map_err(db)?;
    let expires_at = (now + marker_ttl).timestamp();
    ids.map(|id| {
        claim
            .execute(params![id, expires_at, now.timestamp()])
            .map(|claimed| claimed > 0)
            .map_err(db)
    })
    .collect()
}

/// The records of reserved requests: their holds stop counting as their costs start to (one
/// statement for the batch).
fn reconcile_holds(tx: &rusqlite::Transaction<'_>, accepted: &[String]) -> StoreResult<()> {
    if accepted.is_empty() {
        return Ok(());
    }
    let accepted = serde_json::to_string(accepted)
        .map_err(|e| StoreError::Corrupt(format!("usage ids: {e}")))?;
    tx.prepare_cached("DELETE FROM holds WHERE reservation IN (SELECT value FROM json_each(?1))")
        .map_err(db)?
        .execute(params![accepted])
        .map_err(db)?;
    Ok(())
}

fn out_of_range(e: spendguard_domain::money::OutOfRange) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Adds a batch's summed increments to the stored hour and month counters.
fn write_counters(
    tx: &rusqlite::Transaction<'_>,
    hours: &BTreeMap<HourKey, HourCounters>,
    months: &BTreeMap<CounterKey, BTreeMap<u32, Tally>>,
) -> StoreResult<()> {
    let mut read_hour = tx
        .prepare_cached("SELECT value FROM hour_counters WHERE scope=?1 AND hour=?2 AND bucket=?3")
        .map_err(db)?;
    let mut write_hour = tx
        .prepare_cached(
            "INSERT INTO hour_counters (scope, hour, bucket, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(scope, hour, bucket) DO UPDATE SET value = excluded.value",
        )
        .map_err(db)?;
    for (key, counters) in hours {
        let hour = key.label();
        for (bucket, value) in counters.buckets() {
            let current: Option<String> = read_hour
                .query_row(params![key.scope.as_str(), hour, bucket], |r| r.get(0))
                .optional()
                .map_err(db)?;
            let total = match current {
                Some(t) => checked_add(decimal("hour counter", &t)?, value, "hour counter")
                    .map_err(out_of_range)?,
                None => value,
            };
            write_hour
                .execute(params![
                    key.scope.as_str(),
                    hour,
                    bucket,
                    total.normalize().to_string()
                ])
                .map_err(db)?;
        }
    }
    // one read per counter day (all its metrics), not one per metric
    let mut read_day = tx
        .prepare_cached(
            "SELECT metric, value FROM counters WHERE scope=?1 AND zone=?2 AND month=?3 AND day=?4",
        )
        .map_err(db)?;
    let mut write_counter = tx
        .prepare_cached(
            "INSERT INTO counters (scope, zone, month, day, metric, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(scope, zone, month, day, metric) DO UPDATE SET value = excluded.value",
        )
        .map_err(db)?;
    for (key, days) in months {
        let month = key.month.to_string();
        for (day, tally) in days {
            let stored: Vec<(String, String)> = read_day
                .query_map(
                    params![key.scope.as_str(), key.zone.name(), month, day],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)?
                .collect::<Result<_, _>>()
                .map_err(db)?;
            for (metric, value) in &tally.0 {
                let name = metric.name();
                let total = match stored.iter().find(|(stored, _)| *stored == name) {
                    Some((_, t)) => checked_add(decimal("counter", t)?, *value, "counter")
                        .map_err(out_of_range)?,
                    None => *value,
                };
                write_counter
                    .execute(params![
                        key.scope.as_str(),
                        key.zone.name(),
                        month,
                        day,
                        name,
                        total.normalize().to_string()
                    ])
                    .map_err(db)?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl SpendStore for SqliteStore {
    async fn ingest_usage(
        &self,
        entries: &[UsageEntry],
        now: DateTime<Utc>,
        marker_ttl: Duration,
    ) -> StoreResult<IngestOutcome> {
        // Usually every record is new: the batch's sums are worked out here and moved into the
        // blocking task, which costs less than copying every entry's increments into it.
        if let (Ok(hours), Ok(months)) = (presum_hours(entries), presum(entries)) {
            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            let counted = self
                .run(move |c| {
                    let tx = immediate(c)?;
                    let claimed =
                        claim_markers(&tx, ids.iter().map(String::as_str), now, marker_ttl)?;
                    if claimed.contains(&false) {
                        // the sums include records counted before: rolled back, and counted
                        // below from the new records alone
                        return Ok(None);
                    }
                    reconcile_holds(&tx, &ids)?;
                    write_counters(&tx, &hours, &months)?;
                    tx.commit().map_err(db)?;
                    Ok(Some(IngestOutcome {
                        accepted: ids,
                        duplicates: Vec::new(),
                        pending: Vec::new(),
                    }))
                })
                .await?;
            if let Some(outcome) = counted {
                return Ok(outcome);
            }
        }
        let entries = entries.to_vec();
        self.run(move |c| {
            let tx = immediate(c)?;
            let claimed =
                claim_markers(&tx, entries.iter().map(|e| e.id.as_str()), now, marker_ttl)?;
            let mut outcome = IngestOutcome::default();
            let mut fresh = Vec::new();
            for (entry, claimed) in entries.iter().zip(claimed) {
                if claimed {
                    outcome.accepted.push(entry.id.clone());
                    fresh.push(entry);
                } else {
                    outcome.duplicates.push(entry.id.clone());
                }
            }
            reconcile_holds(&tx, &outcome.accepted)?;
            let hours = presum_hours(fresh.iter().copied()).map_err(out_of_range)?;
            let months = presum(fresh).map_err(out_of_range)?;
            write_counters(&tx, &hours, &months)?;
            tx.commit().map_err(db)?;
            Ok(outcome)
        })
        .await
    }

    async fn scopes_with_counters(&self, month: YearMonth) -> StoreResult<Vec<Scope>> {
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT DISTINCT scope FROM counters WHERE month = ?1 ORDER BY scope")
                .map_err(db)?;
            let rows = st
                .query_map(params![month.to_string()], |r| r.get::<_, String>(0))
                .map_err(db)?;
            rows.map(|r| {
                Scope::parse(&r.map_err(db)?).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
        })
        .await
    }

    async fn put_summaries(&self, summaries: &[DailySummary]) -> StoreResult<()> {
        let summaries = summaries.to_vec();
        self.run(move |c| {
            let tx = immediate(c)?;
            for s in &summaries {
                tx.execute(
                    "INSERT INTO summaries (scope, zone, date, doc) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(scope, date, zone) DO UPDATE SET doc = excluded.doc",
                    params![
                        s.scope.as_str(),
                        s.series_key(),
                        s.date.to_string(),
                        to_doc(s)?
                    ],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn summaries(
        &self,
        scope: &Scope,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<DailySummary>> {
        let scope = scope.clone();
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT doc FROM summaries WHERE scope = ?1 AND date >= ?2 AND date <= ?3 ORDER BY date, zone")
                .map_err(db)?;
            let rows = st
                .query_map(params![scope.as_str(), from.to_string(), to.to_string()], |r| r.get::<_, String>(0))
                .map_err(db)?;
            rows.map(|r| from_doc("summary", &r.map_err(db)?)).collect()
        })
        .await
    }

    async fn read_counters(
        &self,
        keys: &[CounterKey],
    ) -> StoreResult<BTreeMap<CounterKey, MonthCounters>> {
        let keys = keys.to_vec();
        self.run(move |c| {
            let mut out = BTreeMap::new();
            let mut st = c
                .prepare_cached("SELECT day, metric, value FROM counters WHERE scope=?1 AND zone=?2 AND month=?3")
                .map_err(db)?;
            for key in keys {
                let rows = st
                    .query_map(params![key.scope.as_str(), key.zone.name(), key.month.to_string()], |r| {
                        Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                    })
                    .map_err(db)?;
                let mut month = MonthCounters::default();
                for row in rows {
                    let (day, name, value) = row.map_err(db)?;
                    match Metric::parse(&name) {
                        Some(metric) => month.read(day, metric, &name, &value),
                        None => {
                            month.unreadable.entry(day).or_insert(format!("unknown counter metric `{name}`"));
                        }
                    }
                }
                if !month.days.is_empty() || !month.unreadable.is_empty() {
                    out.insert(key, month);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn read_hours(&self, keys: &[HourKey]) -> StoreResult<BTreeMap<HourKey, HourCounters>> {
        let keys = keys.to_vec();
        self.run(move |c| {
            let mut out = BTreeMap::new();
            let mut st = c
                .prepare_cached(
                    "SELECT bucket, value FROM hour_counters WHERE scope=?1 AND hour=?2",
                )
                .map_err(db)?;
            for key in keys {
                let rows = st
                    .query_map(params![key.scope.as_str(), key.label()], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(db)?;
                let mut counters = HourCounters::default();
                let mut found = false;
                for row in rows {
                    let (bucket, value) = row.map_err(db)?;
                    counters.read_bucket(&bucket, &value);
                    found = true;
                }
                if found {
                    out.insert(key, counters);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_observations(&self, observations: &[Observation]) -> StoreResult<()> {
        let observations = observations.to_vec();
        self.run(move |c| {
            let tx = immediate(c)?;
            for o in &observations {
                tx.execute(
                    "INSERT INTO observations (budget_id, source, window, period_key, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(budget_id, source, window, period_key) DO UPDATE SET doc = excluded.doc",
                    params![o.budget_id, o.source, o.window.as_str(), o.period_key, to_doc(o)?],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn observations(&self, budget_id: &str) -> StoreResult<Vec<Observation>> {
        let budget_id = budget_id.to_string();
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT doc FROM observations WHERE budget_id = ?1 ORDER BY source, window, period_key")
                .map_err(db)?;
            let rows = st.query_map(params![budget_id], |r| r.get::<_, String>(0)).map_err(db)?;
            rows.map(|r| from_doc("observation", &r.map_err(db)?)).collect()
        })
        .await
    }

    async fn put_source_days(&self, days: &[SourceDay]) -> StoreResult<()> {
        let days = days.to_vec();
        self.run(move |c| {
            let tx = immediate(c)?;
            for day in &days {
                tx.execute(
                    "INSERT INTO source_days (budget_id, date, doc) VALUES (?1, ?2, ?3)
                     ON CONFLICT(budget_id, date) DO UPDATE SET doc = excluded.doc",
                    params![day.budget_id, day.date.to_string(), to_doc(day)?],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn source_days(
        &self,
        budget_id: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Vec<SourceDay>> {
        let budget_id = budget_id.to_string();
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT doc FROM source_days WHERE budget_id = ?1 AND date >= ?2 AND date <= ?3 ORDER BY date")
                .map_err(db)?;
            let rows = st
                .query_map(params![budget_id, from.to_string(), to.to_string()], |r| r.get::<_, String>(0))
                .map_err(db)?;
            rows.map(|r| from_doc("source day", &r.map_err(db)?)).collect()
        })
        .await
    }
}

#[async_trait]
impl ClaimStore for SqliteStore {
    async fn claim(&self, claim: &Claim, now: DateTime<Utc>) -> StoreResult<ClaimOutcome> {
        let claim = claim.clone();
        self.run(move |c| {
            let tx = immediate(c)?;
            let space = space_key(&claim.space);
            let existing: Option<(String, i64)> = tx
                .query_row(
                    "SELECT state, lease_until FROM claims WHERE space = ?1 AND claim_key = ?2",
                    params![space, claim.key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            let outcome = match existing {
                Some((state, _)) if state == "done" => ClaimOutcome::AlreadyRaised,
                Some((_, lease_until)) if lease_until >= now.timestamp() => ClaimOutcome::HeldByOther,
                _ => {
                    tx.execute(
                        "INSERT INTO claims (space, claim_key, owner, state, lease_until, expires_at)
                         VALUES (?1, ?2, ?3, 'claimed', ?4, ?5)
                         ON CONFLICT(space, claim_key) DO UPDATE SET owner = excluded.owner,
                            state = 'claimed', lease_until = excluded.lease_until",
                        params![space, claim.key, claim.owner, (now + claim.lease).timestamp(), claim.expires_at.timestamp()],
                    )
                    .map_err(db)?;
                    ClaimOutcome::Won
                }
            };
            tx.commit().map_err(db)?;
            Ok(outcome)
        })
        .await
    }

    async fn claims_done(&self, claims: &[Claim]) -> StoreResult<Vec<bool>> {
        let claims = claims.to_vec();
        self.run(move |c| {
            let mut state = c
                .prepare_cached("SELECT state FROM claims WHERE space = ?1 AND claim_key = ?2")
                .map_err(db)?;
            claims
                .iter()
                .map(|claim| {
                    let found: Option<String> = state
                        .query_row(params![space_key(&claim.space), claim.key], |r| r.get(0))
                        .optional()
                        .map_err(db)?;
                    Ok(found.as_deref() == Some("done"))
                })
                .collect()
        })
        .await
    }

    async fn finish_claim(&self, claim: &Claim) -> StoreResult<()> {
        let claim = claim.clone();
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE claims SET state = 'done' WHERE space = ?1 AND claim_key = ?2 AND owner = ?3",
                    params![space_key(&claim.space), claim.key, claim.owner],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("claim {} is held by another run", claim.key)));
            }
            Ok(())
        })
        .await
    }

    async fn release_claim(&self, claim: &Claim) -> StoreResult<()> {
        let claim = claim.clone();
        self.run(move |c| {
            c.execute(
                "DELETE FROM claims WHERE space = ?1 AND claim_key = ?2 AND owner = ?3 AND state = 'claimed'",
                params![space_key(&claim.space), claim.key, claim.owner],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn put_open_alert(&self, alert: &OpenAlert) -> StoreResult<()> {
        let (id, doc) = (alert.event.alert_id.clone(), to_doc(alert)?);
        self.run(move |c| {
            c.execute(
                "INSERT INTO open_alerts (alert_id, doc) VALUES (?1, ?2) ON CONFLICT(alert_id) DO UPDATE SET doc = excluded.doc",
                params![id, doc],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn open_alerts(&self) -> StoreResult<Vec<OpenAlert>> {
        self.run(|c| {
            let mut st = c
                .prepare("SELECT doc FROM open_alerts ORDER BY alert_id")
                .map_err(db)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
            rows.map(|r| from_doc("open alert", &r.map_err(db)?))
                .collect()
        })
        .await
    }

    async fn acknowledge_alert(
        &self,
        alert_id: &str,
        ack: &Acknowledgement,
    ) -> StoreResult<AckOutcome> {
        let (alert_id, ack) = (alert_id.to_string(), ack.clone());
        self.run(move |c| {
            let tx = immediate(c)?;
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM open_alerts WHERE alert_id = ?1",
                    params![alert_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(doc) = doc else {
                return Ok(AckOutcome::Unknown);
            };
            let mut alert: OpenAlert = from_doc("open alert", &doc)?;
            if let Some(earlier) = alert.acknowledged {
                return Ok(AckOutcome::AlreadyAcknowledged(earlier));
            }
            alert.acknowledged = Some(ack);
            tx.execute(
                "UPDATE open_alerts SET doc = ?2 WHERE alert_id = ?1",
                params![alert_id, to_doc(&alert)?],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(AckOutcome::Acknowledged(Box::new(alert)))
        })
        .await
    }

    async fn set_escalation_level(&self, alert_id: &str, level: u32) -> StoreResult<()> {
        let alert_id = alert_id.to_string();
        self.run(move |c| {
            let tx = immediate(c)?;
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM open_alerts WHERE alert_id = ?1",
                    params![alert_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if let Some(doc) = doc {
                let mut alert: OpenAlert = from_doc("open alert", &doc)?;
                if level > alert.escalation_level {
                    alert.escalation_level = level;
                    tx.execute(
                        "UPDATE open_alerts SET doc = ?2 WHERE alert_id = ?1",
                        params![alert_id, to_doc(&alert)?],
                    )
                    .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn close_alert(&self, alert_id: &str) -> StoreResult<()> {
        let alert_id = alert_id.to_string();
        self.run(move |c| {
            c.execute(
                "DELETE FROM open_alerts WHERE alert_id = ?1",
                params![alert_id],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn queue_digest(
        &self,
        channel: &str,
        event: &AlertEvent,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (channel, id, doc) = (channel.to_string(), event.alert_id.clone(), to_doc(event)?);
        self.run(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO digest_queue (channel, alert_id, queued_at, doc) VALUES (?1, ?2, ?3, ?4)",
                params![channel, id, now.timestamp_millis(), doc],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn digest_queue(&self, channel: &str) -> StoreResult<Vec<(DateTime<Utc>, AlertEvent)>> {
        let channel = channel.to_string();
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT queued_at, doc FROM digest_queue WHERE channel = ?1 ORDER BY queued_at, alert_id")
                .map_err(db)?;
            let rows = st
                .query_map(params![channel], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?;
            rows.map(|r| {
                let (at, doc) = r.map_err(db)?;
                let at = DateTime::from_timestamp_millis(at).ok_or_else(|| StoreError::Corrupt("digest time".into()))?;
                Ok((at, from_doc("digest entry", &doc)?))
            })
            .collect()
        })
        .await
    }

    async fn remove_from_digest(&self, channel: &str, alert_ids: &[String]) -> StoreResult<()> {
        let (channel, ids) = (channel.to_string(), alert_ids.to_vec());
        self.run(move |c| {
            let tx = immediate(c)?;
            for id in &ids {
                tx.execute(
                    "DELETE FROM digest_queue WHERE channel = ?1 AND alert_id = ?2",
                    params![channel, id],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.run(|c| {
            let mut st = c
                .prepare("SELECT spec, status, status_version FROM keys ORDER BY id")
                .map_err(db)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|r| {
                let (spec, status, version) = r.map_err(db)?;
                key_record(&spec, &status, version)
            })
            .collect()
        })
        .await
    }

    async fn key(&self, key_id: &str) -> StoreResult<Option<KeyRecord>> {
        let id = key_id.to_string();
        self.run(move |c| {
            let row: Option<(String, String, i64)> = c
                .query_row(
                    "SELECT spec, status, status_version FROM keys WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(spec, status, version)| key_record(&spec, &status, version))
                .transpose()
        })
        .await
    }

    async fn put_key_status(
        &self,
        key_id: &str,
        status: &KeyStatus,
        expected: u64,
    ) -> StoreResult<u64> {
        let (id, status) = (key_id.to_string(), to_doc(status)?);
        self.run(move |c| {
            let tx = immediate(c)?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT status_version FROM keys WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            match current {
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "no key `{id}` in the registry"
                    )));
                }
                Some(v) if v as u64 != expected => {
                    return Err(StoreError::Conflict(format!("status of key {id}")));
                }
                Some(_) => {}
            }
            tx.execute(
                "UPDATE keys SET status = ?2, status_version = ?3 WHERE id = ?1",
                params![id, status, (expected + 1) as i64],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(expected + 1)
        })
        .await
    }

    async fn active_kill_switches(&self) -> StoreResult<Vec<Versioned<KillSwitch>>> {
        self.run(|c| {
            let mut st = c
                .prepare("SELECT doc, version FROM kill_switches ORDER BY scope")
                .map_err(db)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db)?;
            let mut out = Vec::new();
            for r in rows {
                let (doc, version) = r.map_err(db)?;
                let value: KillSwitch = from_doc("kill switch", &doc)?;
                if value.state != SwitchState::Open {
                    out.push(Versioned {
                        value,
                        version: version as u64,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn kill_switch(&self, scope: &Scope) -> StoreResult<Option<Versioned<KillSwitch>>> {
        let scope = scope.clone();
        self.run(move |c| {
            let row: Option<(String, i64)> = c
                .query_row(
                    "SELECT doc, version FROM kill_switches WHERE scope = ?1",
                    params![scope.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            row.map(|(doc, version)| {
                Ok(Versioned {
                    value: from_doc(&format!("kill switch {scope}"), &doc)?,
                    version: version as u64,
                })
            })
            .transpose()
        })
        .await
    }

    async fn kill_switches(&self, scopes: &[Scope]) -> StoreResult<Vec<Versioned<KillSwitch>>> {
        let mut out = Vec::new();
        for scope in scopes {
            if let Some(s) = self.kill_switch(scope).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn put_kill_switch(
        &self,
        switch: &KillSwitch,
        expected: Option<u64>,
        audit: &AuditEntry,
    ) -> StoreResult<u64> {
        let switch = switch.clone();
        let audit = audit.clone();
        self.run(move |c| {
            let tx = immediate(c)?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT version FROM kill_switches WHERE scope = ?1",
                    params![switch.scope.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if current.map(|v| v as u64) != expected {
                return Err(StoreError::Conflict(format!(
                    "kill switch {}",
                    switch.scope
                )));
            }
            let version = expected.map_or(1, |v| v + 1);
            tx.execute(
                "INSERT INTO kill_switches (scope, doc, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT(scope) DO UPDATE SET doc = excluded.doc, version = excluded.version",
                params![switch.scope.as_str(), to_doc(&switch)?, version as i64],
            )
            .map_err(db)?;
            insert_audit(&tx, &audit)?;
            tx.commit().map_err(db)?;
            Ok(version)
        })
        .await
    }
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.run(move |c| insert_audit(c, &entry)).await
    }

    async fn audit_log(&self, month: YearMonth, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT doc FROM audit WHERE month = ?1 ORDER BY sort_key DESC LIMIT ?2")
                .map_err(db)?;
            let rows = st
                .query_map(params![month.to_string(), limit as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(db)?;
            rows.map(|r| from_doc("audit entry", &r.map_err(db)?))
                .collect()
        })
        .await
    }
}

/// The total of a window's holds that have not expired at `now` (summed exactly, in Rust).
fn outstanding_in(conn: &Connection, window: &str, now: DateTime<Utc>) -> StoreResult<Decimal> {
    let mut read = conn
        .prepare_cached("SELECT amount FROM holds WHERE window_key = ?1 AND expires_at > ?2")
        .map_err(db)?;
    let amounts = read
        .query_map(params![window, now.timestamp()], |r| r.get::<_, String>(0))
        .map_err(db)?;
    let mut total = Decimal::ZERO;
    for amount in amounts {
        let amount = decimal("hold", &amount.map_err(db)?)?;
        total = checked_add(total, amount, "outstanding holds")
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    }
    Ok(total)
}

#[async_trait]
impl ReservationStore for SqliteStore {
    async fn outstanding(
        &self,
        windows: &[String],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Decimal>> {
        let windows = windows.to_vec();
        self.run(move |c| windows.iter().map(|w| outstanding_in(c, w, now)).collect())
            .await
    }

    async fn reserve(
        &self,
        request: &ReservationRequest,
        now: DateTime<Utc>,
    ) -> StoreResult<Reserved> {
        let request = request.clone();
        self.run(move |c| {
            // the write lock first: every decision sees the holds of the ones before it
            let tx = immediate(c)?;
            let known: Option<(String, i64)> = tx
                .query_row(
                    "SELECT verdict, forget_at FROM reservations WHERE id = ?1",
                    params![request.id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            if let Some((verdict, forget_at)) = known
                && forget_at > now.timestamp()
            {
                return Ok(Reserved {
                    verdict: from_doc("reservation verdict", &verdict)?,
                    replayed: true,
                });
            }
            // expired holds are dropped as their windows are decided on: the table stays small
            for h in &request.holds {
                tx.execute(
                    "DELETE FROM holds WHERE window_key = ?1 AND expires_at <= ?2",
                    params![h.window, now.timestamp()],
                )
                .map_err(db)?;
            }
            let outstanding = request
                .holds
                .iter()
                .map(|h| outstanding_in(&tx, &h.window, now))
                .collect::<StoreResult<Vec<_>>>()?;
            let verdict: Verdict = decide(&request.holds, &outstanding);
            tx.execute(
                "INSERT INTO reservations (id, verdict, forget_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET verdict = excluded.verdict, forget_at = excluded.forget_at",
                params![
                    request.id,
                    to_doc(&verdict)?,
                    (now + DECISION_MEMORY).timestamp()
                ],
            )
            .map_err(db)?;
            // an id decided so long ago that it was forgotten holds only what it holds now
            tx.execute(
                "DELETE FROM holds WHERE reservation = ?1",
                params![request.id],
            )
            .map_err(db)?;
            if verdict.decision == Decision::Allow {
                for h in &request.holds {
                    tx.execute(
                        "INSERT INTO holds (reservation, window_key, amount, expires_at) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            request.id,
                            h.window,
                            h.amount.normalize().to_string(),
                            request.expires_at.timestamp()
                        ],
                    )
                    .map_err(db)?;
                }
            }
            tx.commit().map_err(db)?;
            Ok(Reserved {
                verdict,
                replayed: false,
            })
        })
        .await
    }
}

#[async_trait]
impl MarkerStore for SqliteStore {
    async fn put_marker(
        &self,
        namespace: &str,
        id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.run(move |c| {
            let n = c
                .execute(
                    "INSERT INTO markers (namespace, id, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(namespace, id) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE markers.expires_at <= ?4",
                    params![namespace, id, (now + ttl).timestamp(), now.timestamp()],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn has_marker(&self, namespace: &str, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.run(move |c| {
            c.query_row(
                "SELECT 1 FROM markers WHERE namespace = ?1 AND id = ?2 AND expires_at > ?3",
                params![namespace, id, now.timestamp()],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(db)
        })
        .await
    }

    async fn get_cached(&self, key: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        let key = key.to_string();
        self.run(move |c| {
            c.query_row(
                "SELECT value FROM cache WHERE key = ?1 AND expires_at > ?2",
                params![key, now.timestamp()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn put_cached(
        &self,
        key: &str,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO cache (key, value, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                params![key, value, expires_at.timestamp()],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}

fn space_key(space: &ClaimSpace) -> String {
    match space {
        ClaimSpace::Alert { budget_id } => format!("alert:{budget_id}"),
        ClaimSpace::Delivery { alert_id } => format!("delivery:{alert_id}"),
        ClaimSpace::Key { key_id } => format!("key:{key_id}"),
    }
}

/// Audit entries sort by time, then id (both adapters use the same key).
fn insert_audit(conn: &Connection, entry: &AuditEntry) -> StoreResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO audit (month, sort_key, doc) VALUES (?1, ?2, ?3)",
        params![
            YearMonth::of(entry.at.date_naive()).to_string(),
            entry.sort_key(),
            to_doc(entry)?
        ],
    )
    .map_err(db)?;
    Ok(())
}

fn key_record(spec: &str, status: &str, version: i64) -> StoreResult<KeyRecord> {
    Ok(KeyRecord {
        spec: from_doc("key", spec)?,
        status: from_doc("key status", status)?,
        version: version as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(store: &SqliteStore, table: &str) -> i64 {
        let conn = store.conn.lock().unwrap();
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// A store that runs for months (`spendguard serve`) keeps what is live and drops what has
    /// expired, table by table; before, every usage record left its marker row forever.
    #[tokio::test]
    async fn pruning_deletes_what_has_expired_and_keeps_what_is_live() {
        let store = SqliteStore::in_memory().unwrap();
        let now: DateTime<Utc> = "2026-12-07T12:00:00Z".parse().unwrap();
        let (past, future) = (
            (now - Duration::seconds(1)).timestamp(),
            (now + Duration::days(1)).timestamp(),
        );
        let old_hour = HourKey {
            scope: Scope::parse("openai/p/k").unwrap(),
            hour: now - HOUR_COUNTER_RETENTION - Duration::hours(1),
        };
        let kept_hour = HourKey {
            scope: old_hour.scope.clone(),
            hour: now - HOUR_COUNTER_RETENTION + Duration::hours(1),
        };
        {
            let conn = store.conn.lock().unwrap();
            for (id, expires) in [("gone", past), ("live", future)] {
                conn.execute(
                    "INSERT INTO usage_markers (id, expires_at) VALUES (?1, ?2)",
                    params![id, expires],
                )
                .unwrap();
                conn.execute("INSERT INTO claims (space, claim_key, owner, state, lease_until, expires_at) VALUES ('alert', ?1, 'o', 'done', 0, ?2)", params![id, expires]).unwrap();
                conn.execute(
                    "INSERT INTO reservations (id, verdict, forget_at) VALUES (?1, '{}', ?2)",
                    params![id, expires],
                )
                .unwrap();
                conn.execute("INSERT INTO holds (reservation, window_key, amount, expires_at) VALUES (?1, 'w', '1', ?2)", params![id, expires]).unwrap();
            }
            for hour in [&old_hour, &kept_hour] {
                conn.execute("INSERT INTO hour_counters (scope, hour, bucket, value) VALUES (?1, ?2, 'cost', '1')", params![hour.scope.as_str(), hour.label()]).unwrap();
            }
        }
        let a_day_ago = now - Duration::days(1);
        store
            .put_marker("sns", "gone", a_day_ago, Duration::hours(1))
            .await
            .unwrap();
        store
            .put_marker("sns", "live", now, Duration::days(1))
            .await
            .unwrap();
        store
            .put_cached("gone", "v", now - Duration::seconds(1))
            .await
            .unwrap();
        store
            .put_cached("live", "v", now + Duration::days(1))
            .await
            .unwrap();

        let deleted = store.prune_expired(now).await.unwrap();
        for table in [
            "usage_markers",
            "claims",
            "reservations",
            "holds",
            "hour_counters",
            "markers",
            "cache",
        ] {
            assert_eq!(rows(&store, table), 1, "{table} keeps only its live row");
        }
        assert_eq!(deleted, 7);
        assert!(store.has_marker("sns", "live", now).await.unwrap());
        assert_eq!(
            store.prune_expired(now).await.unwrap(),
            0,
            "nothing left to prune"
        );
    }
}
