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
