//! The claims capability: one winner, leases that run out, finished claims read in one batch.

use super::*;
use chrono::Duration;
use spendguard_app::ports::store::StoreError;
use spendguard_domain::ids::{AlertId, ChannelName};
use spendguard_domain::period::{Period, WindowKind, Zone};
use spendguard_domain::records::Lease;
use spendguard_domain::records::{Claim, ClaimOutcome};

pub async fn alert_claims_have_exactly_one_winner(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let period = Period::containing(WindowKind::Monthly, Zone::UTC, now);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (store, c) = (
            store.clone(),
            claim("warning", &period, &format!("run-{i}")),
        );
        tasks.push(tokio::spawn(async move {
            (store.claim(&c, now).await.unwrap(), c)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (outcome, c) = t.await.unwrap();
        match outcome {
            ClaimOutcome::Won => winners.push(c),
            ClaimOutcome::HeldByOther => {}
            ClaimOutcome::AlreadyRaised => panic!("nothing was published yet"),
        }
    }
    assert_eq!(winners.len(), 1);
    store.finish_claim(&winners[0]).await.unwrap();
    assert_eq!(
        store
            .claim(&claim("warning", &period, "late"), now)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyRaised
    );
    // another tier is its own crossing
    assert_eq!(
        store
            .claim(&claim("critical", &period, "late"), now)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    // re-armed in the next period
    let next = period.next();
    assert_eq!(
        store
            .claim(&claim("warning", &next, "december"), next.start)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
}

pub async fn abandoned_claims_can_be_taken_over(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let period = Period::containing(WindowKind::Monthly, Zone::UTC, now);
    let crashed = claim("warning", &period, "crashed-run");
    assert_eq!(store.claim(&crashed, now).await.unwrap(), ClaimOutcome::Won);
    // the lease still runs: others wait
    assert_eq!(
        store
            .claim(&claim("warning", &period, "b"), now + Duration::minutes(4))
            .await
            .unwrap(),
        ClaimOutcome::HeldByOther
    );
    // lease over: taken over, and the crashed run can no longer finish it
    let taker = claim("warning", &period, "c");
    assert_eq!(
        store
            .claim(&taker, now + Duration::minutes(6))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert!(matches!(
        store.finish_claim(&crashed).await,
        Err(StoreError::Conflict(_))
    ));
    // a released claim (publish failed) is free at once
    store.release_claim(&taker).await.unwrap();
    let retry = claim("warning", &period, "d");
    assert_eq!(
        store
            .claim(&retry, now + Duration::minutes(6))
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    store.finish_claim(&retry).await.unwrap();
    // releasing a published claim does nothing
    store.release_claim(&retry).await.unwrap();
    assert_eq!(
        store
            .claim(&claim("warning", &period, "e"), now + Duration::hours(1))
            .await
            .unwrap(),
        ClaimOutcome::AlreadyRaised
    );
}

pub async fn finished_claims_are_read_in_one_batch(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let period = Period::containing(WindowKind::Monthly, Zone::UTC, now);
    let done = claim("warning", &period, "a");
    let held = claim("critical", &period, "a");
    let released = claim("emergency", &period, "a");
    let never = claim("forecast", &period, "a");
    for c in [&done, &held, &released] {
        assert_eq!(store.claim(c, now).await.unwrap(), ClaimOutcome::Won);
    }
    store.finish_claim(&done).await.unwrap();
    store.release_claim(&released).await.unwrap();
    // asked twice, in any order, and alongside others
    let asked = [never.clone(), done.clone(), held, released, done];
    assert_eq!(
        store.claims_done(&asked).await.unwrap(),
        [false, true, false, false, true]
    );
    assert!(store.claims_done(&[]).await.unwrap().is_empty());
    // more than one BatchGetItem holds
    let many: Vec<Claim> = (0..150)
        .map(|i| claim(&format!("t{i}"), &period, "m"))
        .collect();
    for c in many.iter().step_by(3) {
        store.claim(c, now).await.unwrap();
        store.finish_claim(c).await.unwrap();
    }
    let answers = store.claims_done(&many).await.unwrap();
    assert_eq!(answers.len(), 150);
    assert!(answers.iter().enumerate().all(|(i, d)| *d == (i % 3 == 0)));
}

pub async fn delivery_claims_are_per_alert_and_channel(store: Store) {
    let now = at("2026-11-22T10:00:00Z");
    let exp = now + Duration::days(35);
    let slack = |owner: &str| delivery("alert-1", "ops-slack", owner, exp);
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (store, c) = (store.clone(), slack(&format!("invocation-{i}")));
        tasks.push(tokio::spawn(async move {
            (store.claim(&c, now).await.unwrap(), c)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        let (o, c) = t.await.unwrap();
        if o == ClaimOutcome::Won {
            won.push(c);
        }
    }
    assert_eq!(won.len(), 1);
    // a failed send is released: the retry delivers
    store.release_claim(&won[0]).await.unwrap();
    let retry = slack("retry");
    assert_eq!(store.claim(&retry, now).await.unwrap(), ClaimOutcome::Won);
    store.finish_claim(&retry).await.unwrap();
    assert_eq!(
        store.claim(&slack("late"), now).await.unwrap(),
        ClaimOutcome::AlreadyRaised
    );
    // other channels and other alerts are independent
    assert_eq!(
        store
            .claim(&delivery("alert-1", "pager", "x", exp), now)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
    assert_eq!(
        store
            .claim(&delivery("alert-2", "ops-slack", "x", exp), now)
            .await
            .unwrap(),
        ClaimOutcome::Won
    );
}

/// Delivering `alert` to `channel` once, held by `owner` for two minutes.
fn delivery(alert: &str, channel: &str, owner: &str, exp: DateTime<Utc>) -> Claim {
    Claim::delivery(
        &AlertId::new(alert),
        &ChannelName::new(channel),
        Lease::new(owner, Duration::minutes(2), exp),
    )
}
