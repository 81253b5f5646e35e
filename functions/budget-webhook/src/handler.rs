//! The routes. Every request is verified and validated completely before anything is written;
//! a 2xx is answered only after the durable write; a verified duplicate gets a 2xx and changes
//! nothing; 5xx means our fault, so the sender retries.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use spendguard_app::flows;
use spendguard_app::flows::authorize::AuthorizeError;
use spendguard_app::flows::check::{CheckOptions, Checker, KnownRaised};
use spendguard_app::flows::ingest::ingest_indexed;
use spendguard_app::flows::intake::{budgets_for_aws, budgets_for_gcp, record_aws, record_gcp};
use spendguard_app::policy_cache::PolicyCache;
use spendguard_app::ports::clock::Clock;
use spendguard_app::ports::store::{StateStore, StoreError};
use spendguard_app::refreshing::{OnFirstUse, Refreshing};
use spendguard_domain::authorize;
use spendguard_domain::period::Period;
use spendguard_domain::records::{AuditEntry, SwitchState};
use spendguard_domain::scope::Scope;
use spendguard_domain::secret::Secret;
use spendguard_domain::senders::{SENDER_HEADER, Sender, UsageSenders};
use spendguard_domain::settings::PolicySet;
use spendguard_domain::signals::{aws_budgets, gcp};
use spendguard_domain::standard_webhooks;
use spendguard_http::verify::gcp_oidc::GoogleOidcVerifier;
use spendguard_http::verify::sns::{SnsMessage, SnsVerifier};
use tracing::{error, info, warn};

use crate::http::{HttpRequest, HttpResponse};
use spendguard_domain::policy_index::parse_batch;

/// Largest body accepted on any route (a usage batch of 1,000 records fits comfortably).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a webhook message id is remembered (SNS and Pub/Sub redeliver within days).
const MESSAGE_MARKER_TTL: chrono::Duration = chrono::Duration::days(8);

/// Confirms SNS subscriptions through the API (never by fetching `SubscribeURL`).
#[async_trait::async_trait]
pub trait SubscriptionConfirmer: Send + Sync {
    async fn confirm(&self, topic_arn: &str, token: &str) -> Result<(), String>;
}

pub struct SnsApiConfirmer(pub aws_sdk_sns::Client);

#[async_trait::async_trait]
impl SubscriptionConfirmer for SnsApiConfirmer {
    async fn confirm(&self, topic_arn: &str, token: &str) -> Result<(), String> {
        self.0
            .confirm_subscription()
            .topic_arn(topic_arn)
            .token(token)
            .authenticate_on_unsubscribe("true")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sns::error::DisplayErrorContext(&e).to_string())
    }
}

/// The SNS route and trigger, with the allow-list inside the verifier.
pub struct SnsIntake {
    pub verifier: SnsVerifier,
    pub confirmer: Box<dyn SubscriptionConfirmer>,
    /// Whether a trigger's records are verified like HTTP deliveries: always when deployed;
    /// off only for the CLI's local invocations of recorded events, which no one else reaches.
    pub verify_trigger_signatures: bool,
}

pub struct Webhook {
    pub store: Arc<dyn StateStore>,
    /// The policy `/usage` counts and evaluates against, held by the warm process and checked
    /// against the store's version every few seconds (issue 28).
    pub policy: PolicyCache,
    /// Evaluates the budgets a signal affects, exactly as budget-check does.
    pub checker: Checker,
    /// The alerts this process saw raised: each crossing's claim is read once per process.
    pub known_raised: Arc<KnownRaised>,
    /// Who may report usage, with their secrets (re-read within minutes of a rotation).
    pub usage_senders: OnFirstUse<Refreshing<UsageSenders>>,
    /// The token applications read `/status` with (at least 32 bytes; re-read likewise).
    pub status_token: OnFirstUse<Refreshing<Secret>>,
    pub gcp: Option<GoogleOidcVerifier>,
    /// The one Pub/Sub subscription whose pushes are accepted, when pinned.
    pub gcp_subscription: Option<String>,
    pub sns: Option<SnsIntake>,
    pub clock: Arc<dyn Clock>,
    /// How long an `/authorize` hold counts unless its usage record reconciles it.
    pub reservation_ttl: chrono::Duration,
}

/// Every request is answered within this: below Pub/Sub's 10-second acknowledgement deadline
/// (a late answer is a redelivery, not a retry the sender can reason about) and the
/// function's timeout. Whatever was written stays: markers make the retry count it once.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

fn internal(e: StoreError) -> HttpResponse {
    warn!(error = %e, "store failed; the sender will retry");
    HttpResponse::error(503, "temporarily unavailable; retry", None)
}

/// A signed request for a scope its sender may not report for: 403, naming the field.
fn other_senders_scope(sender: &Sender, field: &str) -> HttpResponse {
    warn!(sender = %sender.id, "request for another sender's scope refused");
    HttpResponse::error(
        403,
        format!(
            "sender `{}` may report only for scopes under {}",
            sender.id,
            sender
                .scopes
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(field),
    )
}

/// Constant-time comparison of two byte strings of any length.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

impl Webhook {
    pub async fn http(&self, request: HttpRequest) -> HttpResponse {
        let response = match tokio::time::timeout(REQUEST_DEADLINE, self.route(&request)).await {
            Ok(response) => response,
            Err(_) => {
                // a clean answer the sender retries, before Pub/Sub's own deadline (finding #29)
                warn!(path = %request.path, "request deadline passed; answered 503");
                HttpResponse::error(503, "took too long; retry", None)
            }
        };
        info!(method = %request.method, path = %request.path, status = response.status, "request");
        response
    }

    async fn route(&self, request: &HttpRequest) -> HttpResponse {
        match (request.method.as_str(), request.path.as_str()) {
            (_, _) if request.body.len() > MAX_BODY_BYTES => HttpResponse::error(
                413,
                format!("body larger than {MAX_BODY_BYTES} bytes"),
                None,
            ),
            ("POST", "/usage") => self.usage(request).await,
            ("POST", "/authorize") => self.authorize(request).await,
            ("POST", "/gcp/pubsub") => self.gcp_push(request).await,
            ("POST", "/sns") => self.sns_http(request).await,
            ("GET", "/status") => self.status(request).await,
            (_, "/usage" | "/authorize" | "/gcp/pubsub" | "/sns" | "/status") => {
                HttpResponse::error(405, "method not allowed", None)
            }
            _ => HttpResponse::error(
                404,
                "no such route: use POST /usage, POST /authorize, POST /gcp/pubsub, POST /sns or GET /status",
                None,
            ),
        }
    }

    /// Evaluates `budgets` now, against the policy this request already read (the signal was
    /// written first; a failure here only delays the alert to the next scheduled check).
    /// Evaluates `budgets` after a signal; `fresh_pending`: the pending items of a usage batch
    /// just counted, whose spend the evaluation sees in every counter it feeds (ADR 031).
    async fn evaluate(
        &self,
        policy: &PolicySet,
        budgets: Vec<String>,
        actor: &str,
        fresh_pending: Vec<String>,
    ) -> usize {
        if budgets.is_empty() {
            return 0;
        }
        let options = CheckOptions {
            dry_run: false,
            only: budgets,
            actor: actor.into(),
            skip_unconfigured_sources: false,
            // one evaluation per request: the audit keeps those that did something (finding #24)
            audit_only_when_acted: true,
            known_raised: Some(self.known_raised.clone()),
            // the open alerts are read only when this may recover or escalate one
            follow_ups_only_when_needed: true,
            fresh_pending,
        };
        match self.checker.check_only(policy, &options).await {
            Ok(report) => {
                if !report.failures.is_empty() {
                    warn!(failures = ?report.failures, "evaluation after a signal was incomplete");
                }
                if !report.unevaluable.is_empty() {
                    warn!(windows = ?report.unevaluable, "windows cannot be evaluated; alerted once per period");
                }
                report.alerts.published
            }
            Err(e) => {
                warn!(error = %e, "evaluation after a signal failed; the scheduled check will catch up");
                0
            }
        }
    }

    async fn audit(&self, action: &str, detail: serde_json::Value, now: DateTime<Utc>) {
        let entry = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: now,
            actor: "budget-webhook".into(),
            action: action.into(),
            scope: None,
            detail,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            warn!(error = %e, action, "audit entry not written");
        }
    }

    // ---- POST /usage ----------------------------------------------------------------------

    /// The senders and their secrets, or the answer when they cannot be read: 503, naming no
    /// secret (the caller is not yet authenticated); the log names it for the operator.
    async fn usage_secrets(&self) -> Result<&Refreshing<UsageSenders>, HttpResponse> {
        self.usage_senders.get().await.map_err(|e| {
            error!(secret = %e.reference, reason = %e.message, "the usage secret cannot be read");
            HttpResponse::error(
                503,
                "the usage secret cannot be read: the webhook's log names the secret",
                None,
            )
        })
    }

    /// Whether `r` is signed by a sender: `Ok(None)` for the shared secrets, `Ok(Some(id,
    /// scopes))` for a sender of its own; the secrets are read again once on a mismatch.
    async fn usage_sender(
        &self,
        usage_senders: &Refreshing<UsageSenders>,
        r: &HttpRequest,
        now: DateTime<Utc>,
    ) -> Result<Option<Sender>, String> {
        let verify = |senders: &UsageSenders| -> Result<Option<Sender>, String> {
            let (sender, secrets) = senders
                .select(r.header(SENDER_HEADER))
                .map_err(|e| e.to_string())?;
            standard_webhooks::verify(
                secrets,
                r.header("webhook-id"),
                r.header("webhook-timestamp"),
                r.header("webhook-signature"),
                &r.body,
                now,
            )
            .map_err(|e| e.to_string())?;
            Ok(sender.cloned())
        };
        match verify(usage_senders.get().await.as_ref()) {
            Ok(sender) => Ok(sender),
            // a sender may sign with a secret rotated in after this value was read
            Err(first) => match usage_senders.after_miss().await {
                Some(fresh) => verify(fresh.as_ref()),
                None => Err(first),
            },
        }
    }

    async fn usage(&self, r: &HttpRequest) -> HttpResponse {
        let now = self.clock.now();
        let usage_senders = match self.usage_secrets().await {
            Ok(senders) => senders,
            Err(unavailable) => return unavailable,
        };
        let sender = match self.usage_sender(usage_senders, r, now).await {
            Ok(sender) => sender,
            Err(reason) => {
                warn!(%reason, "usage report refused");
                return HttpResponse::error(401, "authentication failed", None);
            }
        };
        let policy = match self.policy.get().await {
            Ok(p) => p,
            Err(e) => return internal(e),
        };
        let records = match parse_batch(&r.body, &policy, now) {
            Ok(records) => records,
            Err(e) => return HttpResponse::error(400, e.message, Some(&e.field)),
        };
        // a sender reports only for its own scopes: one record outside them refuses the batch
        if let Some(sender) = &sender
            && let Some(i) = records.iter().position(|rec| !sender.allows(&rec.scope))
        {
            return other_senders_scope(sender, &format!("records[{i}].scope"));
        }
        let outcome = match ingest_indexed(
            self.store.as_ref(),
            &policy,
            &records,
            sender.as_ref().map(|s| s.id.as_str()),
            now,
        )
        .await
        {
            Ok(o) => o,
            Err(e) => return internal(e),
        };
        let affected: Vec<String> = policy
            .usage_budgets(&records)
            .iter()
            .map(|b| b.id.clone())
            .collect();
        // a batch of only duplicates is usually a sender's retry after this function stopped
        // between counting and evaluating: evaluate again (alerts are claimed once per crossing)
        let published = if outcome.accepted.is_empty() && outcome.duplicates.is_empty() {
            0
        } else {
            // exactly what this request left pending: a retry's duplicates were counted by the
            // request that wrote them, and reach the ancestors through the roll-up
            self.evaluate(policy.set(), affected, "usage-report", outcome.pending)
                .await
        };
        HttpResponse::ok(json!({
            "accepted": outcome.accepted.len(),
            "duplicates": outcome.duplicates.len(),
            "alerts_published": published,
        }))
    }

    // ---- POST /authorize -------------------------------------------------------------------

    /// The pre-flight check (docs/webhook.md#authorize): signed like `/usage`, answered 200
    /// `allow` or `deny` with the tightest window's headroom; a replayed `request_id` gets the
    /// same answer and holds nothing more.
    async fn authorize(&self, r: &HttpRequest) -> HttpResponse {
        let now = self.clock.now();
        let usage_senders = match self.usage_secrets().await {
            Ok(senders) => senders,
            Err(unavailable) => return unavailable,
        };
        let sender = match self.usage_sender(usage_senders, r, now).await {
            Ok(sender) => sender,
            Err(reason) => {
                warn!(%reason, "authorize request refused");
                return HttpResponse::error(401, "authentication failed", None);
            }
        };
        let policy = match self.store.load_policy().await {
            Ok(p) => p,
            Err(e) => return internal(e),
        };
        let request = match authorize::parse_request(&r.body, &policy) {
            Ok(request) => request,
            Err(e) => return HttpResponse::error(400, e.message, Some(e.field)),
        };
        if let Some(sender) = &sender
            && !sender.allows(&request.scope)
        {
            return other_senders_scope(sender, "scope");
        }
        let reserved = match flows::authorize::authorize(
            &self.store,
            &policy,
            &request,
            sender.as_ref().map(|s| s.id.as_str()),
            self.reservation_ttl,
            now,
        )
        .await
        {
            Ok(reserved) => reserved,
            Err(AuthorizeError::Store(e)) => return internal(e),
            Err(AuthorizeError::Spend(why)) => {
                warn!(%why, "authorize: a window's spend cannot be read; answered 503");
                return HttpResponse::error(
                    503,
                    "the budgets' spend cannot be read right now; retry",
                    None,
                );
            }
        };
        let verdict = reserved.verdict;
        HttpResponse::ok(json!({
            "decision": verdict.decision,
            "request_id": request.request_id,
            "headroom": verdict.tightest.map(|h| json!({
                "budget": h.budget,
                "window": h.window,
                "period": Period::label_of_key(&h.period),
                "remaining": h.remaining.amount.normalize().to_string(),
                "currency": h.remaining.currency,
            })),
            "replayed": reserved.replayed,
        }))
    }

    // ---- POST /gcp/pubsub -----------------------------------------------------------------

    async fn gcp_push(&self, r: &HttpRequest) -> HttpResponse {
        let Some(verifier) = &self.gcp else {
            return HttpResponse::error(
                404,
                "the GCP push route is not enabled in this deployment",
                None,
            );
        };
        if let Err(e) = verifier.verify(r.header("authorization")).await {
            warn!(reason = %e, "Pub/Sub push refused");
            return if e.is_ours() {
                HttpResponse::error(503, "cannot verify right now; retry", None)
            } else if e.is_forbidden() {
                HttpResponse::error(403, "forbidden", None)
            } else {
                HttpResponse::error(401, "authentication failed", None)
            };
        }
        let now = self.clock.now();
        let notification = match gcp::parse_push(&r.body) {
            Ok(n) => n,
            Err(e) => {
                // it came with Google's token, so no retry will parse it: acknowledged (a 4xx would have
                // Pub/Sub redeliver it for days), audited, and said why (review finding #23)
                warn!(field = e.field, reason = %e.message, "verified Pub/Sub push not understood; acknowledged");
                self.audit(
                    "gcp_push_unparseable",
                    json!({"field": e.field, "error": e.message}),
                    now,
                )
                .await;
                return HttpResponse::ok(json!({
                    "acknowledged": "not a GCP budget notification spendguard understands; nothing recorded",
                    "field": e.field,
                    "error": e.message,
                }));
            }
        };
        let policy = match self.store.load_policy().await {
            Ok(p) => p,
            Err(e) => return internal(e),
        };
        if let Some(pinned) = &self.gcp_subscription
            && notification.subscription != *pinned
        {
            let subscription: String = notification.subscription.chars().take(200).collect();
            warn!(%subscription, "Pub/Sub push from another subscription refused");
            self.audit(
                "gcp_push_refused",
                json!({"subscription": subscription, "reason": "not the pinned subscription"}),
                now,
            )
            .await;
            return HttpResponse::error(
                403,
                "subscription: not the one this deployment accepts",
                Some("subscription"),
            );
        }
        let budgets: Vec<String> = budgets_for_gcp(&policy.budgets, &notification)
            .iter()
            .map(|b| b.id.clone())
            .collect();
        if budgets.is_empty() {
            warn!(gcp_budget = %notification.budget_id, "no budget uses this GCP budget; acknowledged");
            self.audit("gcp_notification_unrouted", json!({"gcp_budget_id": notification.budget_id, "message_id": notification.message_id}), now).await;
            return HttpResponse::ok(
                json!({"observations": 0, "ignored": "no budget uses this GCP budget"}),
            );
        }
        // Every effect below is idempotent (an upsert, alerts claimed once per crossing) and each
        // marker is written only after what it stands for: stopped at any point, the message is
        // redelivered and finished, nothing counted twice and no crossing left unevaluated.
        match self
            .store
            .has_marker("gcp-message", &notification.message_id, now)
            .await
        {
            Ok(false) => {}
            Ok(true) => return HttpResponse::ok(json!({"duplicate": true})),
            Err(e) => return internal(e),
        }
        let written = match record_gcp(self.store.as_ref(), &policy.budgets, &notification).await {
            Ok(n) => n,
            Err(e) => return internal(e),
        };
        let mut published = 0;
        if let Some(key) = notification.crossing_key() {
            match self.store.has_marker("gcp-crossing", &key, now).await {
                Ok(false) => {
                    published = self
                        .evaluate(&policy, budgets.clone(), "gcp-notification", Vec::new())
                        .await;
                    if let Err(e) = self
                        .store
                        .put_marker("gcp-crossing", &key, now, MESSAGE_MARKER_TTL)
                        .await
                    {
                        return internal(e);
                    }
                }
                Ok(true) => {}
                Err(e) => return internal(e),
            }
        }
        match self
            .store
            .put_marker(
                "gcp-message",
                &notification.message_id,
                now,
                MESSAGE_MARKER_TTL,
            )
            .await
        {
            Ok(true) => {}
            // a concurrent delivery of the same message finished first
            Ok(false) => return HttpResponse::ok(json!({"duplicate": true})),
            Err(e) => return internal(e),
        }
        self.audit(
            "gcp_notification",
            json!({
                "message_id": notification.message_id,
                "gcp_budget_id": notification.budget_id,
                "cost": notification.cost.to_string(),
                "currency": notification.currency,
                "crossing": notification.is_crossing(),
                "budgets": budgets,
            }),
            now,
        )
        .await;
        HttpResponse::ok(json!({
            "observations": written,
            "crossing": notification.is_crossing(),
            "alerts_published": published,
        }))
    }

    // ---- POST /sns and the SNS trigger ------------------------------------------------------

    async fn sns_http(&self, r: &HttpRequest) -> HttpResponse {
        let Some(sns) = &self.sns else {
            return HttpResponse::error(
                404,
                "the SNS route is not enabled in this deployment",
                None,
            );
        };
        let message: SnsMessage = match serde_json::from_slice(&r.body) {
            Ok(m) => m,
            Err(e) => {
                return HttpResponse::error(400, format!("not an SNS message: {e}"), Some("body"));
            }
        };
        let now = self.clock.now();
        if let Err(e) = sns.verifier.verify(&message, now).await {
            // the sender's own text: bounded in the log (review finding #19)
            let message_id: String = message.message_id.chars().take(100).collect();
            warn!(reason = %e, %message_id, "SNS message refused");
            return if e.is_ours() {
                HttpResponse::error(503, "cannot verify right now; retry", None)
            } else {
                HttpResponse::error(403, "message not verified", None)
            };
        }
        match message.kind.as_str() {
            "SubscriptionConfirmation" => {
                let token = message.token.as_deref().unwrap_or_default();
                match sns.confirmer.confirm(&message.topic_arn, token).await {
                    Ok(()) => {
                        info!(topic = %message.topic_arn, "SNS subscription confirmed");
                        HttpResponse::ok(json!({"confirmed": true}))
                    }
                    Err(e) => {
                        warn!(error = %e, "ConfirmSubscription failed");
                        HttpResponse::error(503, "could not confirm the subscription; retry", None)
                    }
                }
            }
            "UnsubscribeConfirmation" => {
                HttpResponse::ok(json!({"ignored": "unsubscribe confirmation"}))
            }
            _ => match self
                .sns_notification(&message.message_id, &message.topic_arn, &message.message)
                .await
            {
                Ok(body) => HttpResponse::ok(body),
                Err(e) => internal(e),
            },
        }
    }

    /// A verified SNS notification from an allowed topic (HTTP route or Lambda trigger).
    pub async fn sns_notification(
        &self,
        message_id: &str,
        topic_arn: &str,
        text: &str,
    ) -> Result<serde_json::Value, StoreError> {
        let now = self.clock.now();
        let notice = match aws_budgets::parse(text) {
            Ok(n) => n,
            Err(reason) => {
                // verified but not understood: keep the raw text, do not make SNS retry forever
                warn!(%reason, message_id, "SNS message is not an AWS Budgets notification");
                self.audit("sns_message_unparsed", json!({"message_id": message_id, "topic": topic_arn, "reason": reason, "raw": text}), now).await;
                return Ok(json!({"ignored": reason}));
            }
        };
        // as for Pub/Sub: the marker last, so a stopped invocation's redelivery finishes the job
        if self
            .store
            .has_marker("sns-message", message_id, now)
            .await?
        {
            return Ok(json!({"duplicate": true}));
        }
        let policy = self.store.load_policy().await?;
        let written = record_aws(self.store.as_ref(), &policy.budgets, &notice, now).await?;
        let budgets: Vec<String> = budgets_for_aws(&policy.budgets, &notice)
            .iter()
            .map(|b| b.id.clone())
            .collect();
        let published = self
            .evaluate(
                &policy,
                budgets.clone(),
                "aws-budgets-notification",
                Vec::new(),
            )
            .await;
        if !self
            .store
            .put_marker("sns-message", message_id, now, MESSAGE_MARKER_TTL)
            .await?
        {
            // a concurrent delivery of the same message finished first
            return Ok(json!({"duplicate": true}));
        }
        self.audit(
            "aws_budgets_notification",
            json!({"message_id": message_id, "topic": topic_arn, "budget_name": notice.budget_name, "budgets": budgets, "raw": text}),
            now,
        )
        .await;
        Ok(json!({"observations": written, "alerts_published": published}))
    }

    // ---- GET /status -----------------------------------------------------------------------

    async fn status(&self, r: &HttpRequest) -> HttpResponse {
        let presented = r
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        let matches = |token: &Secret| same(presented.as_bytes(), token.expose().as_bytes());
        let status_token = match self.status_token.get().await {
            Ok(token) => token,
            Err(e) => {
                // the operator's fix is at the secret: the log names it (never a value); the
                // caller, not yet authenticated, learns only that the switch cannot be read
                error!(secret = %e.reference, reason = %e.message, "the status token cannot be read");
                return HttpResponse::error(
                    503,
                    "the status token cannot be read: the webhook's log names the secret",
                    None,
                );
            }
        };
        if !matches(status_token.get().await.as_ref()) {
            // the token may have been rotated after this value was read
            let fresh = status_token.after_miss().await;
            if !fresh.is_some_and(|t| matches(&t)) {
                return HttpResponse::error(401, "authentication failed", None);
            }
        }
        let Some(text) = r.query_param("scope") else {
            return HttpResponse::error(
                400,
                "give the scope to read: /status?scope=openai/prod/key-1",
                Some("scope"),
            );
        };
        let scope = match Scope::parse(&text) {
            Ok(s) => s,
            Err(e) => return HttpResponse::error(400, e.to_string(), Some("scope")),
        };
        let switches = match self.store.kill_switches(&scope.rollup()).await {
            Ok(s) => s,
            Err(e) => return internal(e),
        };
        // the most restrictive switch on the path applies; a restore in progress still stops
        let engaged = switches.iter().find(|s| s.value.state.stops());
        let factor = switches
            .iter()
            .map(|s| s.value.limit_factor)
            .min()
            .unwrap_or(Decimal::ONE);
        let body = match engaged {
            Some(s) => json!({
                "scope": scope,
                "state": "engaged",
                "limit_factor": "0",
                "switch_scope": s.value.scope,
                "detail": s.value.state,
            }),
            None => {
                let restoring = switches
                    .iter()
                    .find(|s| matches!(s.value.state, SwitchState::Restoring { .. }));
                json!({
                    "scope": scope,
                    "state": if restoring.is_some() { "restoring" } else { "open" },
                    "limit_factor": factor.normalize().to_string(),
                })
            }
        };
        HttpResponse::ok(body)
    }
}
