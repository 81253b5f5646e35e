//! Alerts published but not yet delivered, kept in the store's SQLite file: `spendguard serve`
//! writes each alert here before any subscriber sees it and deletes a subscriber's row only
//! after that subscriber handled it, so a crash in between loses no alert (at-least-once; the
//! subscribers are idempotent by their claims). A delivery that fails waits longer each time
//! ([`Retry`]) and is set aside in `outbox_dead` once it is as old as the deployment lets an
//! event get before its failed-events queue takes it (an hour): a person's decision then.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use spendguard_app::ports::store::{StoreError, StoreResult};
use spendguard_domain::alert::AlertEvent;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, subscriber TEXT NOT NULL, doc TEXT NOT NULL,
    created_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_by_subscriber ON outbox (subscriber, seq);
CREATE TABLE IF NOT EXISTS outbox_dead (
    seq INTEGER PRIMARY KEY, subscriber TEXT NOT NULL, doc TEXT NOT NULL, reason TEXT NOT NULL);";

/// Columns added after the first release of `serve`: an outbox written by it gains them (its
/// rows count their age from their first failure).
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("created_at", "INTEGER"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("next_at", "INTEGER NOT NULL DEFAULT 0"),
];

/// When a failed delivery is tried again, and when it is given up.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// The wait after the first failure; it doubles after each further one…
    pub first: chrono::Duration,
    /// …up to this.
    pub longest: chrono::Duration,
    /// A row this old that fails again is set aside.
    pub give_up_after: chrono::Duration,
}

impl Retry {
    /// The wait after the `attempts`-th failure (1 for the first).
    pub fn wait_after(&self, attempts: u32) -> chrono::Duration {
        let doublings = attempts.saturating_sub(1).min(16);
        self.first
            .checked_mul(1 << doublings)
            .map_or(self.longest, |d| d.min(self.longest))
    }
}

/// What became of a row whose delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// Tried again from `at` (unix seconds).
    RetryAt { attempts: u32, at: i64 },
    /// Moved to `outbox_dead`.
    GaveUp { attempts: u32, reason: String },
    /// The row was no longer there (delivered meanwhile).
    Gone,
}

/// The outbox table, on a connection of its own to the store's file (WAL lets it write
/// between the store's transactions).
pub struct Outbox {
    conn: Mutex<Connection>,
}

/// One alert waiting for one subscriber.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: i64,
    pub alert: AlertEvent,
}

/// A row that cannot be read as an alert, moved to `outbox_dead` so the rows after it go.
#[derive(Debug, Clone)]
pub struct SetAside {
    pub seq: i64,
    pub reason: String,
}

/// What a subscriber has to handle, and what was set aside on the way.
#[derive(Debug, Default)]
pub struct Due {
    pub pending: Vec<Pending>,
    pub set_aside: Vec<SetAside>,
}

/// How much is waiting.
#[derive(Debug, Default)]
pub struct Backlog {
    pub pending: std::collections::BTreeMap<String, i64>,
    pub dead_lettered: i64,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("outbox: {e}"))
}

impl Outbox {
    pub fn open(path: &Path) -> StoreResult<Outbox> {
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let existing: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('outbox')")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(db)?;
        for (column, definition) in ADDED_COLUMNS {
            if !existing.iter().any(|c| c == column) {
                conn.execute_batch(&format!(
                    "ALTER TABLE outbox ADD COLUMN {column} {definition}"
                ))
                .map_err(db)?;
            }
        }
        Ok(Outbox {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Unavailable("outbox connection poisoned".into()))
    }

    /// Keeps `alert` for each of `subscribers`, in one transaction, written at `now` (unix
    /// seconds). Returns each row's number, in the order of `subscribers`.
    pub fn put(&self, alert: &AlertEvent, subscribers: &[&str], now: i64) -> StoreResult<Vec<i64>> {
        let doc = serde_json::to_string(alert)
            .map_err(|e| StoreError::Corrupt(format!("outbox: {e}")))?;
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db)?;
        let mut seqs = Vec::with_capacity(subscribers.len());
        for subscriber in subscribers {
            tx.execute(
                "INSERT INTO outbox (subscriber, doc, created_at) VALUES (?1, ?2, ?3)",
                params![subscriber, doc, now],
            )
            .map_err(db)?;
            seqs.push(tx.last_insert_rowid());
        }
        tx.commit().map_err(db)?;
        Ok(seqs)
    }

    /// What `subscriber` has not handled yet and is due by `now` (unix seconds), oldest first.
    /// A row that is not an alert is moved to `outbox_dead` (kept for a person to read) and
    /// reported, never in the way.
    pub fn pending(&self, subscriber: &str, now: i64) -> StoreResult<Due> {
        let mut conn = self.conn()?;
        let rows = {
            let mut stmt = conn
                .prepare(
                    "SELECT seq, doc FROM outbox WHERE subscriber = ?1 AND next_at <= ?2 ORDER BY seq",
                )
                .map_err(db)?;
            stmt.query_map(params![subscriber, now], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?
        };
        let mut due = Due::default();
        for (seq, doc) in rows {
            match serde_json::from_str(&doc) {
                Ok(alert) => due.pending.push(Pending { seq, alert }),
                Err(e) => {
                    let reason = format!("not an alert: {e}");
                    let tx = conn.transaction().map_err(db)?;
                    tx.execute(
                        "INSERT OR REPLACE INTO outbox_dead (seq, subscriber, doc, reason) VALUES (?1, ?2, ?3, ?4)",
                        params![seq, subscriber, doc, reason],
                    )
                    .map_err(db)?;
                    tx.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])
                        .map_err(db)?;
                    tx.commit().map_err(db)?;
                    due.set_aside.push(SetAside { seq, reason });
                }
            }
        }
        Ok(due)
    }

    /// Rows waiting, by subscriber, and rows set aside in `outbox_dead`.
    pub fn backlog(&self) -> StoreResult<Backlog> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT subscriber, COUNT(*) FROM outbox GROUP BY subscriber")
            .map_err(db)?;
        let pending = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        let dead_lettered = conn
            .query_row("SELECT COUNT(*) FROM outbox_dead", [], |r| r.get(0))
            .map_err(db)?;
        Ok(Backlog {
            pending,
            dead_lettered,
        })
    }

    /// The delivery of row `seq` failed at `now` with `error`: it waits as `retry` says, or is
    /// moved to `outbox_dead` once it is older than `retry.give_up_after`.
    pub fn failed(&self, seq: i64, now: i64, error: &str, retry: &Retry) -> StoreResult<Failed> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db)?;
        let row: Option<(Option<i64>, i64)> = tx
            .query_row(
                "SELECT created_at, attempts FROM outbox WHERE seq = ?1",
                params![seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        let Some((created_at, attempts)) = row else {
            return Ok(Failed::Gone);
        };
        let created_at = created_at.unwrap_or(now);
        let attempts = u32::try_from(attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let outcome = if now.saturating_sub(created_at) >= retry.give_up_after.num_seconds() {
            let reason = format!(
                "gave up after {attempts} failed deliveries over {} s: {error}",
                now.saturating_sub(created_at)
            );
            tx.execute(
                "INSERT OR REPLACE INTO outbox_dead (seq, subscriber, doc, reason) SELECT seq, subscriber, doc, ?2 FROM outbox WHERE seq = ?1",
                params![seq, reason],
            )
            .map_err(db)?;
            tx.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])
                .map_err(db)?;
            Failed::GaveUp { attempts, reason }
        } else {
            let at = now.saturating_add(retry.wait_after(attempts).num_seconds());
            tx.execute(
                "UPDATE outbox SET created_at = ?2, attempts = ?3, next_at = ?4 WHERE seq = ?1",
                params![seq, created_at, attempts, at],
            )
            .map_err(db)?;
            Failed::RetryAt { attempts, at }
        };
        tx.commit().map_err(db)?;
        Ok(outcome)
    }

    /// The subscriber handled row `seq`.
    pub fn delivered(&self, seq: i64) -> StoreResult<()> {
        self.conn()?
            .execute("DELETE FROM outbox WHERE seq = ?1", params![seq])
            .map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spendguard_domain::alert::AlertEvent;

    /// An emergency alert as the alerts topic carries it (events/alert-fanout/emergency.json).
    fn alert(id: &str) -> AlertEvent {
        let event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/alert-fanout/emergency.json"))
                .unwrap();
        let message = event["Records"][0]["Sns"]["Message"].as_str().unwrap();
        let mut alert: AlertEvent = serde_json::from_str(message).unwrap();
        alert.alert_id = id.into();
        alert
    }

    const NOW: i64 = 1_796_000_000;

    const RETRY: Retry = Retry {
        first: chrono::Duration::seconds(30),
        longest: chrono::Duration::seconds(300),
        give_up_after: chrono::Duration::seconds(3600),
    };

    fn due(outbox: &Outbox, at: i64) -> Vec<i64> {
        let due = outbox.pending("fanout", at).unwrap();
        due.pending.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn a_failing_delivery_waits_longer_each_time_and_is_set_aside_after_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("state.db")).unwrap();
        let seq = outbox.put(&alert("a1"), &["fanout"], NOW).unwrap()[0];
        let mut at = NOW;
        let mut waits = Vec::new();
        loop {
            assert_eq!(due(&outbox, at), [seq], "due at {at}");
            match outbox.failed(seq, at, "slack: 500", &RETRY).unwrap() {
                Failed::RetryAt { at: next, .. } => {
                    assert!(due(&outbox, next - 1).is_empty(), "not due before {next}");
                    waits.push(next - at);
                    at = next;
                }
                Failed::GaveUp { attempts, reason } => {
                    assert_eq!(attempts as usize, waits.len() + 1);
                    assert!(reason.contains("slack: 500"), "{reason}");
                    break;
                }
                Failed::Gone => panic!("the row went"),
            }
        }
        assert_eq!(&waits[..5], [30, 60, 120, 240, 300]);
        assert!(waits[5..].iter().all(|w| *w == 300), "{waits:?}");
        assert!(
            at - NOW >= 3600 && at - NOW < 3600 + 300,
            "gave up at +{}",
            at - NOW
        );
        assert!(due(&outbox, at + 86_400).is_empty());
        let backlog = outbox.backlog().unwrap();
        assert_eq!(backlog.dead_lettered, 1);
        assert_eq!(backlog.pending.get("fanout"), None);
        assert_eq!(
            outbox.failed(seq, at, "again", &RETRY).unwrap(),
            Failed::Gone
        );
    }

    #[test]
    fn an_outbox_written_before_retries_were_counted_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let doc = serde_json::to_string(&alert("old")).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, subscriber TEXT NOT NULL, doc TEXT NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO outbox (subscriber, doc) VALUES ('fanout', ?1)",
            params![doc],
        )
        .unwrap();
        drop(conn);

        let outbox = Outbox::open(&path).unwrap();
        let seqs = due(&outbox, NOW);
        assert_eq!(seqs.len(), 1);
        // its age counts from its first failure, not from 1970
        assert_eq!(
            outbox.failed(seqs[0], NOW, "down", &RETRY).unwrap(),
            Failed::RetryAt {
                attempts: 1,
                at: NOW + 30
            }
        );
    }

    #[test]
    fn what_is_not_delivered_outlives_the_process_and_goes_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let outbox = Outbox::open(&path).unwrap();
        let first = outbox
            .put(&alert("a1"), &["key-guard", "fanout"], NOW)
            .unwrap();
        outbox.put(&alert("a2"), &["fanout"], NOW).unwrap();
        outbox.delivered(first[0]).unwrap();
        drop(outbox);

        let reopened = Outbox::open(&path).unwrap();
        assert!(
            reopened
                .pending("key-guard", NOW)
                .unwrap()
                .pending
                .is_empty()
        );
        let fanout: Vec<String> = reopened
            .pending("fanout", NOW)
            .unwrap()
            .pending
            .into_iter()
            .map(|p| p.alert.alert_id)
            .collect();
        assert_eq!(fanout, ["a1", "a2"]);
    }
}
