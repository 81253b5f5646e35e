//! The markers-and-cache capability: expiry decided in code.

use super::*;
use chrono::Duration;

pub async fn markers_expire_in_code(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    assert!(!store.has_marker("gcp", "msg-1", now).await.unwrap());
    assert!(
        store
            .put_marker("gcp", "msg-1", now, Duration::hours(1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_marker(
                "gcp",
                "msg-1",
                now + Duration::minutes(30),
                Duration::hours(1)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .has_marker("gcp", "msg-1", now + Duration::minutes(59))
            .await
            .unwrap()
    );
    assert!(
        !store
            .has_marker("gcp", "msg-1", now + Duration::hours(1))
            .await
            .unwrap(),
        "expired"
    );
    assert!(!store.has_marker("sns", "msg-1", now).await.unwrap());
    assert!(
        store
            .put_marker("sns", "msg-1", now, Duration::hours(1))
            .await
            .unwrap(),
        "namespaces are separate"
    );
    assert!(
        store
            .put_marker("gcp", "msg-1", now + Duration::hours(2), Duration::hours(1))
            .await
            .unwrap()
    );
}

pub async fn cache_entries_expire(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    store
        .put_cached("ce:1", "{\"a\":1}", now + Duration::hours(6))
        .await
        .unwrap();
    assert_eq!(
        store.get_cached("ce:1", now).await.unwrap().as_deref(),
        Some("{\"a\":1}")
    );
    assert_eq!(
        store
            .get_cached("ce:1", now + Duration::hours(7))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_cached("ce:missing", now).await.unwrap(), None);
}
