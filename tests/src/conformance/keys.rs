//! The keys-and-switches capability: versioned key statuses and kill switches.

use super::*;
use rust_decimal::Decimal;
use spendguard_app::ports::store::StoreError;
use spendguard_domain::period::YearMonth;
use spendguard_domain::records::{AuditEntry, KillSwitch, SwitchState};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

/// A key's status is written by compare-and-set: of two writers holding the same version,
/// exactly one wins; the loser gets `Conflict` and nothing of it is written.
pub async fn key_status_uses_optimistic_versions(store: Store) {
    use spendguard_domain::keys::{KeySpec, KeyStatus, Measure, ProviderKind};
    let spec = KeySpec {
        id: "k".into(),
        provider: ProviderKind::Anthropic,
        scope: Scope::parse("anthropic/x").unwrap(),
        secret_arn: None,
        key_id: Some("apikey_k".into()),
        project_id: None,
        user: None,
        rotation: None,
        allow_delete: false,
    };
    store
        .put_policy(&PolicySet {
            keys: vec![spec],
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let fresh = store.key("k").await.unwrap().unwrap();
    assert_eq!((fresh.version, &fresh.status), (0, &KeyStatus::Active));
    assert_eq!(store.key("missing").await.unwrap(), None);
    let stopping = KeyStatus::Disabling {
        incidents: vec!["i1".into()],
        at: at("2026-11-22T10:00:00Z"),
        measures: Vec::new(),
    };
    let joined = KeyStatus::Disabling {
        incidents: vec!["i1".into(), "i2".into()],
        at: at("2026-11-22T10:00:00Z"),
        measures: Vec::new(),
    };
    assert_eq!(store.put_key_status("k", &stopping, 0).await.unwrap(), 1);
    assert!(matches!(
        store.put_key_status("k", &KeyStatus::Active, 0).await,
        Err(StoreError::Conflict(_))
    ));
    let stopped = KeyStatus::DisabledBySpendguard {
        incidents: vec!["i1".into()],
        at: at("2026-11-22T10:00:01Z"),
        measures: vec![Measure::ProviderDisabled],
    };
    let (a, b) = tokio::join!(
        store.put_key_status("k", &joined, 1),
        store.put_key_status("k", &stopped, 1)
    );
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count(),
        1,
        "exactly one of two writers at version 1 wins: {a:?} {b:?}"
    );
    let now = store.key("k").await.unwrap().unwrap();
    assert_eq!(now.version, 2);
    assert_eq!(now.status, if a.is_ok() { joined } else { stopped });
}

/// Every write of a kill switch carries its audit entry in the same transaction: a written
/// switch has its entry, a refused write leaves neither.
pub async fn kill_switch_writes_carry_their_audit_entry(store: Store) {
    let scope = Scope::parse("openai/prod").unwrap();
    let now = at("2026-11-22T10:00:00Z");
    let engaged = KillSwitch {
        scope: scope.clone(),
        state: SwitchState::Engaged {
            reason: "budget".into(),
            actor: "key-guard".into(),
            at: now,
            incident: "inc-1".into(),
            incidents: vec!["inc-1".into()],
        },
        limit_factor: Decimal::ZERO,
        updated_at: now,
        released: Vec::new(),
    };
    let entry = |id: &str| AuditEntry {
        id: id.into(),
        at: now,
        actor: "key-guard".into(),
        action: "kill_switch_engaged".into(),
        scope: Some(scope.clone()),
        detail: serde_json::json!({"incident": "inc-1"}),
    };
    store
        .put_kill_switch(&engaged, None, &entry("a1"))
        .await
        .unwrap();
    assert!(matches!(
        store.put_kill_switch(&engaged, None, &entry("a2")).await,
        Err(StoreError::Conflict(_))
    ));
    let log: Vec<String> = store
        .audit_log(YearMonth::of(now.date_naive()), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(log, ["a1"], "the refused write left no entry");
}

pub async fn active_switches_are_listed_in_one_read(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let switch = |scope: &str, state: SwitchState| KillSwitch {
        scope: Scope::parse(scope).unwrap(),
        state,
        limit_factor: Decimal::ONE,
        updated_at: now,
        released: Vec::new(),
    };
    store
        .put_kill_switch(&switch("a", SwitchState::Open), None, &audit("s1"))
        .await
        .unwrap();
    let v = store
        .put_kill_switch(
            &switch(
                "b",
                SwitchState::Restoring {
                    step: 0,
                    since: now,
                },
            ),
            None,
            &audit("s2"),
        )
        .await
        .unwrap();
    store
        .put_kill_switch(
            &switch(
                "c",
                SwitchState::Engaged {
                    reason: "r".into(),
                    actor: "x".into(),
                    at: now,
                    incident: "i".into(),
                    incidents: vec!["i".into()],
                },
            ),
            None,
            &audit("s3"),
        )
        .await
        .unwrap();
    let mut active: Vec<String> = store
        .active_kill_switches()
        .await
        .unwrap()
        .iter()
        .map(|s| s.value.scope.to_string())
        .collect();
    active.sort();
    assert_eq!(active, ["b", "c"]);
    // back to open: no longer listed
    store
        .put_kill_switch(&switch("b", SwitchState::Open), Some(v), &audit("s4"))
        .await
        .unwrap();
    let active: Vec<String> = store
        .active_kill_switches()
        .await
        .unwrap()
        .iter()
        .map(|s| s.value.scope.to_string())
        .collect();
    assert_eq!(active, ["c"]);
}

pub async fn kill_switch_uses_optimistic_versions(store: Store) {
    let scope = Scope::parse("openai/prod").unwrap();
    assert_eq!(store.kill_switch(&scope).await.unwrap(), None);
    let open = KillSwitch {
        scope: scope.clone(),
        state: SwitchState::Open,
        limit_factor: Decimal::ONE,
        updated_at: at("2026-11-22T10:00:00Z"),
        released: Vec::new(),
    };
    assert_eq!(
        store
            .put_kill_switch(&open, None, &audit("v1"))
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store.put_kill_switch(&open, None, &audit("v2")).await,
        Err(StoreError::Conflict(_))
    ));
    let engaged = KillSwitch {
        state: SwitchState::Engaged {
            reason: "budget".into(),
            actor: "key-guard".into(),
            at: at("2026-11-22T10:05:00Z"),
            incident: "test".into(),
            incidents: vec!["test".into()],
        },
        limit_factor: Decimal::ZERO,
        ..open.clone()
    };
    assert_eq!(
        store
            .put_kill_switch(&engaged, Some(1), &audit("v3"))
            .await
            .unwrap(),
        2
    );
    // a writer holding the old version loses
    assert!(matches!(
        store.put_kill_switch(&open, Some(1), &audit("v4")).await,
        Err(StoreError::Conflict(_))
    ));
    let stored = store.kill_switch(&scope).await.unwrap().unwrap();
    assert_eq!((stored.value, stored.version), (engaged.clone(), 2));
    // several scopes in one read: absent ones are left out
    let scopes = Scope::parse("openai/prod/key-1").unwrap().rollup();
    let found = store.kill_switches(&scopes).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].value, engaged);
}
