//! The reservation capability: the pre-flight check's holds, decided atomically, once per id,
//! expiring in code, reconciled by the usage record with the same id.

use super::*;
use futures::future::join_all;
use spendguard_app::ports::store::{ReservationRequest, Reserved};
use spendguard_domain::authorize::{Decision, Hold};
use spendguard_domain::usage::USAGE_MARKER_TTL;

const WINDOW: &str = "b1#daily#D#2026-11-20";
const TTL: Duration = Duration::minutes(15);

fn now() -> DateTime<Utc> {
    at("2026-11-20T10:00:00Z")
}

/// A request holding `amount` dollars on [`WINDOW`], whose limit minus spend is `cap`.
fn request(id: &str, amount: i64, cap: i64, at: DateTime<Utc>) -> ReservationRequest {
    ReservationRequest {
        id: id.into(),
        holds: vec![Hold {
            window: WINDOW.into(),
            budget: "b1".into(),
            scope: spendguard_domain::scope::Scope::parse("openai/prod").unwrap(),
            kind: WindowKind::Daily,
            period: "D#2026-11-20".into(),
            currency: Currency::USD,
            amount: Decimal::from(amount),
            cap: Decimal::from(cap),
        }],
        expires_at: at + TTL,
        outstanding_seen: vec![Decimal::ZERO],
    }
}

async fn outstanding(store: &Store, at: DateTime<Utc>) -> Decimal {
    store.outstanding(&[WINDOW.to_string()], at).await.unwrap()[0]
}

fn allowed(answers: &[Reserved]) -> usize {
    answers
        .iter()
        .filter(|a| a.verdict.decision == Decision::Allow)
        .count()
}

pub async fn concurrent_reservations_never_exceed_the_headroom(store: Store) {
    // 50 callers at once, 1 dollar each, against 10 dollars of headroom
    let answers: Vec<Reserved> = join_all((0..50).map(|i| {
        let store = store.clone();
        async move {
            store
                .reserve(&request(&format!("call-{i}"), 1, 10, now()), now())
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(allowed(&answers), 10);
    assert!(answers.iter().all(|a| !a.replayed));
    assert_eq!(outstanding(&store, now()).await, Decimal::from(10));
    // every denial says the window is full
    for a in answers
        .iter()
        .filter(|a| a.verdict.decision == Decision::Deny)
    {
        let tightest = a.verdict.tightest.as_ref().unwrap();
        assert_eq!(
            (tightest.budget.as_str(), tightest.remaining.amount),
            ("b1", Decimal::ZERO)
        );
    }
    // the usage records of the allowed calls reconcile them: 80 cents each really spent
    let ids: Vec<String> = (0..50)
        .map(|i| format!("call-{i}"))
        .zip(&answers)
        .filter(|(_, a)| a.verdict.decision == Decision::Allow)
        .map(|(id, _)| id)
        .collect();
    let records: Vec<UsageRecord> = ids
        .iter()
        .map(|id| record(id, "openai/prod", 80, now()))
        .collect();
    let batch = entries(&records, &[Zone::UTC]);
    let counted = store
        .ingest_usage(&batch, now(), USAGE_MARKER_TTL)
        .await
        .unwrap();
    assert_eq!(counted.accepted.len(), 10);
    assert_eq!(outstanding(&store, now()).await, Decimal::ZERO);
    assert_eq!(
        month_total(&*store, "openai/prod", Zone::UTC, NOV, USD_COST).await,
        Decimal::from(8)
    );
    // a replayed usage batch reconciles nothing a second time
    let again = store
        .ingest_usage(&batch, now(), USAGE_MARKER_TTL)
        .await
        .unwrap();
    assert_eq!(again.duplicates.len(), 10);
    let next = store
        .reserve(&request("after", 2, 2, now()), now())
        .await
        .unwrap();
    assert_eq!(next.verdict.decision, Decision::Allow);
    assert_eq!(outstanding(&store, now()).await, Decimal::from(2));
}

pub async fn a_replayed_request_answers_the_same_and_holds_once(store: Store) {
    let first = store
        .reserve(&request("r-1", 3, 10, now()), now())
        .await
        .unwrap();
    assert_eq!(first.verdict.decision, Decision::Allow);
    assert_eq!(
        first.verdict.tightest.as_ref().unwrap().remaining.amount,
        Decimal::from(7)
    );
    let later = now() + Duration::minutes(1);
    let again = store
        .reserve(&request("r-1", 3, 10, later), later)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.verdict, first.verdict);
    assert_eq!(outstanding(&store, later).await, Decimal::from(3));
    // a denial is remembered too, even once the room it lacked is there
    let denied = store
        .reserve(&request("r-2", 8, 10, now()), now())
        .await
        .unwrap();
    assert_eq!(denied.verdict.decision, Decision::Deny);
    let with_room = store
        .reserve(&request("r-2", 8, 100, later), later)
        .await
        .unwrap();
    assert!(with_room.replayed);
    assert_eq!(with_room.verdict, denied.verdict);
    assert_eq!(outstanding(&store, later).await, Decimal::from(3));
}

pub async fn expired_holds_stop_counting(store: Store) {
    let held = store
        .reserve(&request("e-1", 1, 1, now()), now())
        .await
        .unwrap();
    assert_eq!(held.verdict.decision, Decision::Allow);
    let minute_later = now() + Duration::minutes(1);
    let full = store
        .reserve(&request("e-2", 1, 1, minute_later), minute_later)
        .await
        .unwrap();
    assert_eq!(full.verdict.decision, Decision::Deny);
    // the caller never reported: its hold stops counting when it expires (in code: neither
    // DynamoDB's TTL nor moto deletes it in time)
    let after = now() + TTL + Duration::seconds(1);
    let freed = store
        .reserve(&request("e-3", 1, 1, after), after)
        .await
        .unwrap();
    assert_eq!(freed.verdict.decision, Decision::Allow);
    assert_eq!(outstanding(&store, after).await, Decimal::ONE);
}
