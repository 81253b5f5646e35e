//! The audit log capability.

use super::*;
use spendguard_domain::period::YearMonth;
use spendguard_domain::records::AuditEntry;

pub async fn audit_log_is_newest_first(store: Store) {
    for (i, t) in [
        "2026-11-01T10:00:00Z",
        "2026-11-03T10:00:00Z",
        "2026-11-02T10:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        store
            .append_audit(&AuditEntry {
                id: format!("e{i}"),
                at: at(t),
                actor: "test".into(),
                action: "budget_check".into(),
                scope: None,
                detail: serde_json::json!({"n": i}),
            })
            .await
            .unwrap();
    }
    let entries = store.audit_log(NOV, 10).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", "e0"]
    );
    assert_eq!(store.audit_log(NOV, 2).await.unwrap().len(), 2);
    assert!(
        store
            .audit_log(
                YearMonth {
                    year: 2026,
                    month: 10
                },
                10
            )
            .await
            .unwrap()
            .is_empty()
    );
}
