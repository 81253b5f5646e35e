//! The alerts capability: open alerts and digest queues.

use super::*;
use spendguard_app::ports::store::AckOutcome;
use spendguard_domain::records::{Acknowledgement, OpenAlert};

pub async fn open_alerts_are_acknowledged_escalated_and_closed(store: Store) {
    let event: spendguard_domain::alert::AlertEvent =
        serde_json::from_str(include_str!("../../../events/alert-fanout/emergency.json"))
            .map(|e: serde_json::Value| {
                serde_json::from_str(e["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap()
            })
            .unwrap();
    let open = OpenAlert {
        event: event.clone(),
        acknowledged: None,
        escalation_level: 0,
    };
    store.put_open_alert(&open).await.unwrap();
    assert_eq!(store.open_alerts().await.unwrap(), vec![open.clone()]);
    store
        .set_escalation_level(&event.alert_id, 2)
        .await
        .unwrap();
    store
        .set_escalation_level(&event.alert_id, 1)
        .await
        .unwrap(); // never lowered
    let ack = Acknowledgement {
        actor: "alice".into(),
        at: at("2026-11-22T10:10:00Z"),
    };
    let first = store
        .acknowledge_alert(&event.alert_id, &ack)
        .await
        .unwrap();
    match first {
        AckOutcome::Acknowledged(alert) => {
            assert_eq!(alert.acknowledged.as_ref(), Some(&ack));
            assert_eq!(alert.event.alert_id, event.alert_id);
        }
        other => panic!("the first acknowledgement counts: {other:?}"),
    }
    let later = Acknowledgement {
        actor: "bob".into(),
        at: at("2026-11-22T11:00:00Z"),
    };
    assert_eq!(
        store
            .acknowledge_alert(&event.alert_id, &later)
            .await
            .unwrap(),
        AckOutcome::AlreadyAcknowledged(ack.clone()),
        "acknowledging twice is fine, and says who did first"
    );
    let stored = &store.open_alerts().await.unwrap()[0];
    assert_eq!(
        (stored.escalation_level, stored.acknowledged.as_ref()),
        (2, Some(&ack)),
        "the first acknowledgement stands"
    );
    assert_eq!(
        store
            .acknowledge_alert("no-such-alert", &ack)
            .await
            .unwrap(),
        AckOutcome::Unknown
    );
    store.close_alert(&event.alert_id).await.unwrap();
    assert!(store.open_alerts().await.unwrap().is_empty());
}

pub async fn digest_queues_keep_each_alert_once(store: Store) {
    let mut event: spendguard_domain::alert::AlertEvent =
        serde_json::from_str::<serde_json::Value>(include_str!(
            "../../../events/alert-fanout/warning.json"
        ))
        .map(|e| serde_json::from_str(e["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap())
        .unwrap();
    let first = event.clone();
    store
        .queue_digest("ops-slack", &first, at("2026-11-22T10:00:00Z"))
        .await
        .unwrap();
    store
        .queue_digest("ops-slack", &first, at("2026-11-22T10:30:00Z"))
        .await
        .unwrap(); // replay
    event.alert_id = "another-alert".into();
    store
        .queue_digest("ops-slack", &event, at("2026-11-22T10:05:00Z"))
        .await
        .unwrap();
    store
        .queue_digest("finance-email", &event, at("2026-11-22T10:06:00Z"))
        .await
        .unwrap();
    let queue = store.digest_queue("ops-slack").await.unwrap();
    assert_eq!(
        queue
            .iter()
            .map(|(t, e)| (t.to_rfc3339(), e.alert_id.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                "2026-11-22T10:00:00+00:00".to_string(),
                first.alert_id.clone()
            ),
            (
                "2026-11-22T10:05:00+00:00".to_string(),
                "another-alert".to_string()
            ),
        ]
    );
    store
        .remove_from_digest(
            "ops-slack",
            &[first.alert_id.clone(), "another-alert".into()],
        )
        .await
        .unwrap();
    assert!(store.digest_queue("ops-slack").await.unwrap().is_empty());
    assert_eq!(store.digest_queue("finance-email").await.unwrap().len(), 1);
}
