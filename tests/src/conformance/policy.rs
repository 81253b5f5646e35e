//! The policy capability: budgets, settings and the key registry as the budgets file loads them.

use super::*;
use rust_decimal::Decimal;
use spendguard_app::ports::store::StoreError;
use spendguard_domain::period::WindowKind;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::{ChannelKind, ChannelSpec, PolicySet, Settings};

pub async fn budgets_crud(store: Store) {
    let mut settings = Settings::default();
    settings.channels.insert(
        "ops".into(),
        ChannelSpec {
            kind: ChannelKind::Slack,
            secret: Some("arn:aws:secretsmanager:x".into()),
            digest_minutes: None,
        },
    );
    let a = budget("a", "openai/prod", WindowKind::Monthly, 100);
    let b = budget("b", "anthropic", WindowKind::Daily, 10);
    store
        .put_policy(&PolicySet {
            settings: settings.clone(),
            budgets: vec![a.clone(), b.clone()],
            keys: Vec::new(),
        })
        .await
        .unwrap();
    let loaded = store.load_policy().await.unwrap();
    assert_eq!(loaded.settings, settings);
    let mut ids: Vec<_> = loaded.budgets.iter().map(|x| x.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(store.get_budget("a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_budget("zz").await.unwrap(), None);

    let mut edited = a.clone();
    edited.windows[0].limit = Decimal::from(250);
    store.put_budget(&edited).await.unwrap();
    assert_eq!(
        store.get_budget("a").await.unwrap().unwrap().windows[0].limit,
        Decimal::from(250)
    );

    assert!(store.delete_budget("b").await.unwrap());
    assert!(!store.delete_budget("b").await.unwrap());

    // applying a policy replaces the whole set
    store
        .put_policy(&PolicySet {
            settings: Settings::default(),
            budgets: vec![b.clone()],
            keys: Vec::new(),
        })
        .await
        .unwrap();
    let loaded = store.load_policy().await.unwrap();
    assert_eq!(loaded.budgets, vec![b]);
    assert_eq!(loaded.settings, Settings::default());
}

pub async fn key_status_survives_reapplying_the_budgets_file(store: Store) {
    use spendguard_domain::keys::{KeySpec, KeyStatus, Measure, ProviderKind};
    let spec = |id: &str| KeySpec {
        id: id.into(),
        provider: ProviderKind::Anthropic,
        scope: Scope::parse("anthropic/x").unwrap(),
        secret_arn: None,
        key_id: Some(format!("apikey_{id}")),
        project_id: None,
        user: None,
        rotation: None,
        allow_delete: false,
    };
    let policy = |keys: Vec<KeySpec>| PolicySet {
        keys,
        ..PolicySet::default()
    };
    store
        .put_policy(&policy(vec![spec("a"), spec("b")]))
        .await
        .unwrap();
    let disabled = KeyStatus::DisabledBySpendguard {
        incidents: vec!["i1".into()],
        at: at("2026-11-22T10:00:00Z"),
        measures: vec![Measure::ProviderDisabled],
    };
    store.put_key_status("a", &disabled, 0).await.unwrap();
    // the file is applied again (with a changed spec for `a`, and `b` removed)
    let mut changed = spec("a");
    changed.key_id = Some("apikey_rotated".into());
    store
        .put_policy(&policy(vec![changed.clone()]))
        .await
        .unwrap();
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((&keys[0].spec, &keys[0].status), (&changed, &disabled));
    assert_eq!(store.load_policy().await.unwrap().keys, vec![changed]);
    assert_eq!(keys[0].version, 1, "re-applying keeps the status's version");
    assert!(matches!(
        store.put_key_status("b", &KeyStatus::Active, 0).await,
        Err(StoreError::Corrupt(_))
    ));
}

/// Every write of what `load_policy` returns moves the policy's version (what a process that
/// holds the policy checks); reading, and writing anything else, does not.
pub async fn every_policy_write_moves_its_version(store: Store) {
    let mut seen = vec![store.policy_version().await.unwrap()];
    let mut changed = |version: String, what: &str| {
        assert!(
            !seen.contains(&version),
            "{what}: the version {version} was seen before ({seen:?})"
        );
        seen.push(version);
    };
    let a = budget("a", "openai/prod", WindowKind::Monthly, 100);
    store
        .put_policy(&PolicySet {
            budgets: vec![a.clone()],
            ..PolicySet::default()
        })
        .await
        .unwrap();
    changed(store.policy_version().await.unwrap(), "put_policy");
    let mut edited = a.clone();
    edited.windows[0].limit = Decimal::from(250);
    store.put_budget(&edited).await.unwrap();
    changed(store.policy_version().await.unwrap(), "put_budget");
    let settings = Settings {
        runbook_url: Some("https://runbooks.example/spend".into()),
        ..Settings::default()
    };
    store.put_settings(&settings).await.unwrap();
    changed(store.policy_version().await.unwrap(), "put_settings");
    assert!(store.delete_budget("a").await.unwrap());
    changed(store.policy_version().await.unwrap(), "delete_budget");

    let still = store.policy_version().await.unwrap();
    store.load_policy().await.unwrap();
    store
        .ingest_usage(
            &[UsageEntry::of(
                &record("r1", "openai/prod", 100, at("2026-11-22T10:00:00Z")),
                &[Zone::UTC],
            )],
            at("2026-11-22T10:00:00Z"),
            Duration::days(35),
        )
        .await
        .unwrap();
    assert_eq!(store.policy_version().await.unwrap(), still);
}

/// A process holding the policy (`PolicyCache`) serves it without a read for its TTL and sees
/// a `budgets apply` once the TTL has passed; a version that did not move keeps what is held.
pub async fn a_held_policy_sees_an_apply_within_its_ttl(store: Store) {
    use spendguard_app::policy_cache::{PolicyCache, TTL};
    use spendguard_app::ports::clock::FixedClock;
    let clock = Arc::new(FixedClock::new(at("2026-11-22T10:00:00Z")));
    let held = PolicyCache::new(store.clone(), clock.clone());
    let apply = |budgets: Vec<Budget>| {
        let store = store.clone();
        async move {
            store
                .put_policy(&PolicySet {
                    budgets,
                    ..PolicySet::default()
                })
                .await
                .unwrap()
        }
    };
    let ids = |p: &spendguard_domain::policy_index::IndexedPolicy| -> Vec<String> {
        p.set().budgets.iter().map(|b| b.id.clone()).collect()
    };
    apply(vec![budget("a", "openai/prod", WindowKind::Monthly, 100)]).await;
    let first = held.get().await.unwrap();
    assert_eq!(ids(&first), ["a"]);

    apply(vec![budget("b", "anthropic", WindowKind::Daily, 10)]).await;
    clock.advance(TTL - Duration::seconds(1));
    assert!(
        Arc::ptr_eq(&held.get().await.unwrap(), &first),
        "within the TTL the policy held is served"
    );
    clock.advance(Duration::seconds(1));
    let applied = held.get().await.unwrap();
    assert_eq!(
        ids(&applied),
        ["b"],
        "the apply is seen once the TTL has passed"
    );

    clock.advance(TTL);
    assert!(
        Arc::ptr_eq(&held.get().await.unwrap(), &applied),
        "an unchanged version keeps the policy held (no new read)"
    );
}
