//! A secret the webhook holds for every request, re-read so a rotation takes effect within
//! minutes (review finding #14): at most [`TTL`] old, and re-read at once — at most every
//! [`MISS_INTERVAL`] — when a request's credentials do not match what is held (the sender may
//! already use the new value). A re-read that fails, or yields a value that does not parse,
//! keeps the value held and is logged.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tracing::warn;

use crate::ports::clock::Clock;
use crate::ports::secrets::{SecretError, SecretVault};

/// The longest a value is used before it is read again.
pub const TTL: Duration = Duration::minutes(5);
/// The shortest time between two re-reads forced by mismatching requests (a flood of bad
/// signatures must not become a flood of Secrets Manager calls).
pub const MISS_INTERVAL: Duration = Duration::seconds(30);
/// A re-read that takes longer is given up (the value held is kept): a hanging vault must not
/// hold every request until its deadline.
const REREAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Refreshing<T> {
    vault: Arc<dyn SecretVault>,
    reference: String,
    parse: fn(&str) -> Result<T, String>,
    clock: Arc<dyn Clock>,
    held: Mutex<Held<T>>,
}

struct Held<T> {
    value: Arc<T>,
    read_at: DateTime<Utc>,
    forced_at: Option<DateTime<Utc>>,
}

impl<T> Refreshing<T> {
    /// Reads the secret now: a missing or unparsable value fails the start.
    pub async fn load(
        vault: Arc<dyn SecretVault>,
        reference: &str,
        parse: fn(&str) -> Result<T, String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SecretError> {
        let value = Self::read(vault.as_ref(), reference, parse).await?;
        let read_at = clock.now();
        Ok(Refreshing {
            vault,
            reference: reference.into(),
            parse,
            clock,
            held: Mutex::new(Held {
                value: Arc::new(value),
                read_at,
                forced_at: None,
            }),
        })
    }

    async fn read(
        vault: &dyn SecretVault,
        reference: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, SecretError> {
        let secret = vault.read(reference).await?;
        parse(secret.expose()).map_err(|message| SecretError {
            reference: reference.into(),
            message,
        })
    }

    /// The value, read again first if it is older than [`TTL`].
    pub async fn get(&self) -> Arc<T> {
        let now = self.clock.now();
        let mut held = self.held.lock().await;
        if now - held.read_at >= TTL {
            self.reread(&mut held, now).await;
        }
        held.value.clone()
    }

    /// After credentials did not match: the value read again, if one may be read now (not
    /// within [`MISS_INTERVAL`] of the last such read) and it succeeds.
    pub async fn after_miss(&self) -> Option<Arc<T>> {
        let now = self.clock.now();
        let mut held = self.held.lock().await;
        if held.forced_at.is_some_and(|at| now - at < MISS_INTERVAL) {
            return None;
        }
        held.forced_at = Some(now);
        self.reread(&mut held, now)
            .await
            .then(|| held.value.clone())
    }

    async fn reread(&self, held: &mut Held<T>, now: DateTime<Utc>) -> bool {
        // the next attempt waits a full TTL whatever happens to this one (a request cancelled
        // by its deadline included)
        held.read_at = now;
        let read = Self::read(self.vault.as_ref(), &self.reference, self.parse);
        match tokio::time::timeout(REREAD_TIMEOUT, read).await {
            Ok(Ok(value)) => {
                held.value = Arc::new(value);
                true
            }
            Ok(Err(e)) => {
                // the value held still works for senders that did not rotate
                warn!(error = %e, "secret not re-read; keeping the value held");
                false
            }
            Err(_) => {
                warn!(reference = %self.reference, "secret re-read timed out; keeping the value held");
                false
            }
        }
    }
}

/// A read over the network that a start need not wait for: begun at once in a task of its own
/// ([`OnFirstUse::prefetch`], for what the first event needs: the read overlaps the runtime's
/// wait for that event) or on the first request that needs it ([`OnFirstUse::new`], for what
/// few requests need, like the webhook's `/status` token). The first request awaits the read;
/// one that succeeded is never made again. One that failed is that request's error (a
/// [`SecretError`] names the secret, never a value) and is made again on a later request, at
/// most every [`MISS_INTERVAL`].
pub struct OnFirstUse<T, E = SecretError> {
    read: Reader<T, E>,
    clock: Arc<dyn Clock>,
    loaded: tokio::sync::OnceCell<T>,
    /// the read under way or the last one that failed; also makes concurrent first reads wait
    /// for one another
    attempt: Mutex<Attempt<T, E>>,
}

type Reader<T, E> = Box<dyn Fn() -> BoxFuture<'static, Result<T, E>> + Send + Sync>;

enum Attempt<T, E> {
    NotYet,
    Reading(DateTime<Utc>, tokio::task::JoinHandle<Result<T, E>>),
    Failed(DateTime<Utc>, E),
}

impl<T, E> OnFirstUse<T, E>
where
    T: Send + Sync + 'static,
    E: Clone + Send + 'static,
{
    /// Read on the first [`get`](Self::get).
    pub fn new(
        read: impl Fn() -> BoxFuture<'static, Result<T, E>> + Send + Sync + 'static,
        clock: Arc<dyn Clock>,
    ) -> Self {
        OnFirstUse {
            read: Box::new(read),
            clock,
            loaded: tokio::sync::OnceCell::new(),
            attempt: Mutex::new(Attempt::NotYet),
        }
    }

    /// Read from now on, in a task of the current tokio runtime: the first
    /// [`get`](Self::get) awaits it.
    pub fn prefetch(
        read: impl Fn() -> BoxFuture<'static, Result<T, E>> + Send + Sync + 'static,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let started = clock.now();
        let task = tokio::spawn(read());
        OnFirstUse {
            read: Box::new(read),
            clock,
            loaded: tokio::sync::OnceCell::new(),
            attempt: Mutex::new(Attempt::Reading(started, task)),
        }
    }

    /// The value, once read; read now (or the read under way awaited) if it was not yet.
    pub async fn get(&self) -> Result<&T, E> {
        if let Some(loaded) = self.loaded.get() {
            return Ok(loaded);
        }
        let mut attempt = self.attempt.lock().await;
        if let Some(loaded) = self.loaded.get() {
            return Ok(loaded);
        }
        let now = self.clock.now();
        let (started, read) = match std::mem::replace(&mut *attempt, Attempt::NotYet) {
            Attempt::Reading(started, task) => match task.await {
                Ok(read) => (started, read),
                // the task never finished (its runtime stopped, or it panicked): read here
                Err(_) => (now, (self.read)().await),
            },
            Attempt::Failed(at, error) if now - at < MISS_INTERVAL => {
                *attempt = Attempt::Failed(at, error.clone());
                return Err(error);
            }
            Attempt::Failed(..) | Attempt::NotYet => (now, (self.read)().await),
        };
        match read {
            Ok(value) => Ok(self.loaded.get_or_init(|| async { value }).await),
            Err(error) => {
                *attempt = Attempt::Failed(started, error.clone());
                Err(error)
            }
        }
    }
}

/// How an [`OnFirstUse`] reads a secret: the one at `reference`, parsed by `parse`, then kept
/// fresh ([`Refreshing`]).
pub fn secret_reader<T: Send + Sync + 'static>(
    vault: Arc<dyn SecretVault>,
    reference: &str,
    parse: fn(&str) -> Result<T, String>,
    clock: Arc<dyn Clock>,
) -> impl Fn() -> BoxFuture<'static, Result<Refreshing<T>, SecretError>> + Send + Sync + 'static {
    let reference = reference.to_string();
    move || {
        let (vault, reference, clock) = (vault.clone(), reference.clone(), clock.clone());
        Box::pin(async move { Refreshing::load(vault, &reference, parse, clock).await })
    }
}

impl<T, E> Drop for OnFirstUse<T, E> {
    fn drop(&mut self) {
        if let Attempt::Reading(_, task) = self.attempt.get_mut() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::clock::FixedClock;
    use async_trait::async_trait;
    use spendguard_domain::secret::Secret;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers "first" once, then hangs on every read.
    struct HangsAfterFirst(AtomicUsize);

    #[async_trait]
    impl SecretVault for HangsAfterFirst {
        async fn read(&self, _reference: &str) -> Result<Secret, SecretError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                return Ok(Secret::new("first"));
            }
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_hanging_vault_keeps_the_value_held_and_is_not_asked_again_at_once() {
        let vault = Arc::new(HangsAfterFirst(AtomicUsize::new(0)));
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let held = Refreshing::load(vault.clone(), "s", |t| Ok(t.to_string()), clock.clone())
            .await
            .unwrap();
        clock.advance(TTL + Duration::seconds(1));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), held.get())
            .await
            .expect("the re-read gives up");
        assert_eq!(got.as_str(), "first");
        // within the TTL of that attempt: no second read
        let again = tokio::time::timeout(std::time::Duration::from_millis(500), held.get())
            .await
            .expect("no new read");
        assert_eq!(again.as_str(), "first");
        assert_eq!(vault.0.load(Ordering::SeqCst), 2);
    }

    /// Fails every read until told otherwise, counting them.
    struct Flaky {
        reads: AtomicUsize,
        value: std::sync::Mutex<Option<&'static str>>,
    }

    #[async_trait]
    impl SecretVault for Flaky {
        async fn read(&self, reference: &str) -> Result<Secret, SecretError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            match *self.value.lock().unwrap() {
                Some(value) => Ok(Secret::new(value)),
                None => Err(SecretError {
                    reference: reference.into(),
                    message: "ResourceNotFoundException".into(),
                }),
            }
        }
    }

    #[tokio::test]
    async fn a_secret_read_on_first_use_fails_that_use_naming_it_and_is_read_again_later() {
        let vault = Arc::new(Flaky {
            reads: AtomicUsize::new(0),
            value: std::sync::Mutex::new(None),
        });
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let token = OnFirstUse::new(
            secret_reader(
                vault.clone(),
                "arn:status",
                |t| Ok(t.to_string()),
                clock.clone(),
            ),
            clock.clone(),
        );
        assert_eq!(
            vault.reads.load(Ordering::SeqCst),
            0,
            "nothing is read before the first use"
        );

        let error = token.get().await.err().expect("the secret is missing");
        assert_eq!(error.reference, "arn:status");
        // within MISS_INTERVAL the failure is answered without asking the vault again
        *vault.value.lock().unwrap() = Some("the-token");
        assert!(token.get().await.is_err());
        assert_eq!(vault.reads.load(Ordering::SeqCst), 1);

        clock.advance(MISS_INTERVAL);
        let held = token
            .get()
            .await
            .expect("read again once the interval passed");
        assert_eq!(held.get().await.as_str(), "the-token");
        assert!(token.get().await.is_ok());
        assert_eq!(
            vault.reads.load(Ordering::SeqCst),
            2,
            "read once it succeeded"
        );
    }

    #[tokio::test]
    async fn a_prefetched_read_is_awaited_by_the_first_use_and_a_failed_one_is_made_again_later() {
        let vault = Arc::new(Flaky {
            reads: AtomicUsize::new(0),
            value: std::sync::Mutex::new(None),
        });
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let usage = OnFirstUse::prefetch(
            secret_reader(
                vault.clone(),
                "arn:usage",
                |t| Ok(t.to_string()),
                clock.clone(),
            ),
            clock.clone(),
        );
        // the first use takes the read begun at start: its failure, not a read of its own
        let error = usage.get().await.err().expect("the secret is missing");
        assert_eq!(error.reference, "arn:usage");
        assert_eq!(vault.reads.load(Ordering::SeqCst), 1);
        *vault.value.lock().unwrap() = Some("the-secret");
        assert!(usage.get().await.is_err(), "not asked again at once");
        assert_eq!(vault.reads.load(Ordering::SeqCst), 1);

        clock.advance(MISS_INTERVAL);
        let held = usage
            .get()
            .await
            .expect("read again once the interval passed");
        assert_eq!(held.get().await.as_str(), "the-secret");
        assert!(usage.get().await.is_ok());
        assert_eq!(vault.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_prefetched_read_that_succeeded_is_not_made_again() {
        let vault = Arc::new(Flaky {
            reads: AtomicUsize::new(0),
            value: std::sync::Mutex::new(Some("the-secret")),
        });
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let usage = OnFirstUse::prefetch(
            secret_reader(
                vault.clone(),
                "arn:usage",
                |t| Ok(t.to_string()),
                clock.clone(),
            ),
            clock.clone(),
        );
        for _ in 0..3 {
            let held = usage.get().await.expect("read at start");
            assert_eq!(held.get().await.as_str(), "the-secret");
        }
        assert_eq!(vault.reads.load(Ordering::SeqCst), 1);
    }
}
