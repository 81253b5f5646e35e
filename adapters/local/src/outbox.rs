//! Alerts published but not yet delivered, kept in the store's SQLite file: `spendguard serve`
//! writes each alert here before any subscriber sees it and deletes a subscriber's row only
//! after that subscriber handled it, so a crash in between loses no alert (at-least-once; the
//! subscribers are idempotent by their claims).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, params};
use spendguard_app::ports::store::{StoreError, StoreResult};
use spendguard_domain::alert::AlertEvent;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, subscriber TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_by_subscriber ON outbox (subscriber, seq);
CREATE TABLE IF NOT EXISTS outbox_dead (
    seq INTEGER PRIMARY KEY, subscriber TEXT NOT NULL, doc TEXT NOT NULL, reason TEXT NOT NULL);";

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
        Ok(Outbox {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Unavailable("outbox connection poisoned".into()))
    }

    /// Keeps `alert` for each of `subscribers`, in one transaction. Returns each row's number,
    /// in the order of `subscribers`.
    pub fn put(&self, alert: &AlertEvent, subscribers: &[&str]) -> StoreResult<Vec<i64>> {
        let doc = serde_json::to_string(alert)
            .map_err(|e| StoreError::Corrupt(format!("outbox: {e}")))?;
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db)?;
        let mut seqs = Vec::with_capacity(subscribers.len());
        for subscriber in subscribers {
            tx.execute(
                "INSERT INTO outbox (subscriber, doc) VALUES (?1, ?2)",
                params![subscriber, doc],
            )
            .map_err(db)?;
            seqs.push(tx.last_insert_rowid());
        }
        tx.commit().map_err(db)?;
        Ok(seqs)
    }

    /// What `subscriber` has not handled yet, oldest first. A row that is not an alert is
    /// moved to `outbox_dead` (kept for a person to read) and reported, never in the way.
    pub fn pending(&self, subscriber: &str) -> StoreResult<Due> {
        let mut conn = self.conn()?;
        let rows = {
            let mut stmt = conn
                .prepare("SELECT seq, doc FROM outbox WHERE subscriber = ?1 ORDER BY seq")
                .map_err(db)?;
            stmt.query_map(params![subscriber], |r| {
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

    #[test]
    fn what_is_not_delivered_outlives_the_process_and_goes_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let outbox = Outbox::open(&path).unwrap();
        let first = outbox.put(&alert("a1"), &["key-guard", "fanout"]).unwrap();
        outbox.put(&alert("a2"), &["fanout"]).unwrap();
        outbox.delivered(first[0]).unwrap();
        drop(outbox);

        let reopened = Outbox::open(&path).unwrap();
        assert!(reopened.pending("key-guard").unwrap().pending.is_empty());
        let fanout: Vec<String> = reopened
            .pending("fanout")
            .unwrap()
            .pending
            .into_iter()
            .map(|p| p.alert.alert_id)
            .collect();
        assert_eq!(fanout, ["a1", "a2"]);
    }
}
