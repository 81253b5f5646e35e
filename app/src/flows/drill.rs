//! The stop-path drill (`{"action": "drill"}`, daily and `spendguard drill`): proves that every
//! configured stop could be carried out now, without carrying out any. Only reads: each admin
//! key authenticates against the read endpoint of what it would write, each registered key is
//! found at its provider, each secret to withhold is readable, each opted-in resource and
//! provider limit is found, the GCP token mints. Each problem becomes one critical alert per
//! day, naming what is broken and the fix.

use crate::flows::throttle::throttled_under;
use chrono::Duration;
use futures::future::join_all;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::drill::{DrillProblem, DrillReport, drill_channels};
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::records::{Claim, Lease};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

use crate::flows::guard::KeyGuard;
use crate::lease::{Once, once};
use crate::ports::bus::AlertBus;

/// How long a drill alert's claim blocks another publisher of it (a crashed one).
const CLAIM_LEASE: Duration = Duration::minutes(5);

fn problem(subject: String, scope: &Scope, problem: String, fix: &str) -> DrillProblem {
    DrillProblem {
        subject,
        scope: scope.clone(),
        problem,
        fix: fix.into(),
    }
}

/// The admin-key setting a provider's stops need.
fn admin_setting(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => {
            "set SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN to an Anthropic admin key"
        }
        ProviderKind::Openai => "set SPENDGUARD_OPENAI_ADMIN_KEY_ARN to an OpenAI admin key",
        ProviderKind::AwsIam => {
            "deploy key-guard with the key's user in GuardedIamUserArns / guarded_iam_user_arns"
        }
        ProviderKind::SecretOnly => "give the key a secret_arn",
    }
}

/// What stopping `spec` needs, checked by reading: `(checks made, problems)`.
async fn check_key(guard: &KeyGuard, spec: &KeySpec) -> (usize, Vec<DrillProblem>) {
    let subject = format!("key {}", spec.id);
    let mut checks = 0;
    let mut found = Vec::new();
    let needs_provider = match spec.provider {
        ProviderKind::Anthropic | ProviderKind::AwsIam => true,
        ProviderKind::Openai => spec.allow_delete,
        ProviderKind::SecretOnly => false,
    };
    match guard.provider(spec.provider) {
        Some(provider) => {
            checks += 1;
            match provider.is_active(spec).await {
                // OpenAI keys have no "off": absent means deleted
                Ok(false) if spec.provider == ProviderKind::Openai => found.push(problem(
                    subject.clone(),
                    &spec.scope,
                    format!(
                        "OpenAI has no key {} in project {} any more",
                        spec.key_id.as_deref().unwrap_or("?"),
                        spec.project_id.as_deref().unwrap_or("?")
                    ),
                    "remove it from the budgets file, or register the key that replaced it",
                )),
                Ok(_) => {}
                Err(e) => found.push(problem(
                    subject.clone(),
                    &spec.scope,
                    format!("its provider refused a read: {e}"),
                    "check the admin key (revoked or expired?) and that the key still exists",
                )),
            }
            if let (Some(credentials), Some(user)) = (provider.user_credentials(), &spec.user) {
                checks += 1;
                if let Err(e) = credentials.active_service_credentials(user).await {
                    found.push(problem(
                        subject.clone(),
                        &spec.scope,
                        format!("the Bedrock API keys of user {user} cannot be listed: {e}"),
                        "grant key-guard the IamUserCredentials statement on this user",
                    ));
                }
            }
        }
        None if needs_provider => {
            checks += 1;
            found.push(problem(
                subject.clone(),
                &spec.scope,
                format!(
                    "no {} admin access is configured: the key cannot be stopped at its provider",
                    spec.provider
                ),
                admin_setting(spec.provider),
            ));
        }
        None => {}
    }
    if let Some(arn) = &spec.secret_arn {
        checks += 1;
        match &guard.secrets {
            Some(secrets) => {
                if let Err(e) = secrets.current(arn).await {
                    found.push(problem(
                        subject.clone(),
                        &spec.scope,
                        format!("its secret cannot be read, so it cannot be withheld: {e}"),
                        "check secret_arn and that key-guard may read it (GuardedKeys)",
                    ));
                }
            }
            None => found.push(problem(
                subject,
                &spec.scope,
                "withholding a secret needs Secrets Manager, which this run does not administer"
                    .into(),
                "run the drill where key-guard is deployed (or the CLI with --aws)",
            )),
        }
    }
    (checks, found)
}

/// Reads everything a stop would write, under `policy`. Changes nothing.
pub async fn drill(guard: &KeyGuard, policy: &PolicySet) -> DrillReport {
    let root = Scope::root();
    // each key as a stop would act on it: after a rotation, the key its secret names
    let keys = join_all(
        policy
            .keys
            .iter()
            .map(|spec| async move { check_key(guard, &guard.live(spec).await).await }),
    );
    let resources = join_all(guard.shutdown_targets.iter().map(|target| {
        let root = &root;
        async move {
            let listed = match target.opted_in(policy, root).await {
                Ok(listed) => listed,
                Err(e) => {
                    return (
                        1,
                        vec![problem(
                            "opted-in resources".into(),
                            root,
                            format!("they cannot be listed: {e}"),
                            "check the credentials and permissions of key-guard's shutdown targets (docs/shutdown.md)",
                        )],
                    );
                }
            };
            let states = join_all(listed.iter().map(|resource| async move {
                if target.protected(resource).await.is_some() {
                    return None;
                }
                target.state(resource).await.err().map(|e| {
                    problem(
                        format!("resource {}", resource.id),
                        &resource.scope,
                        format!("its state cannot be read: {e}"),
                        "check that it still exists, its opt-in (tag or budgets file) and the admin access for it",
                    )
                })
            }))
            .await;
            (1 + listed.len(), states.into_iter().flatten().collect())
        }
    }));
    let throttles = join_all(
        throttled_under(&guard.rate_limits, policy, &Scope::root())
            .into_iter()
            .map(|(resource, project, target)| async move {
                target.rate_limits(&project).await.err().map(|e| {
                    problem(
                        format!("rate limits of {}", resource.id),
                        &resource.scope,
                        format!("they cannot be read: {e}"),
                        match target.provider() {
                            ProviderKind::Anthropic => {
                                "check the Anthropic admin key and the workspace id"
                            }
                            _ => "check the OpenAI admin key and the project id",
                        },
                    )
                })
            }),
    );
    let (keys, resources, throttles) = futures::join!(keys, resources, throttles);
    let mut report = DrillReport::default();
    for (checks, found) in keys.into_iter().chain(resources) {
        report.checked += checks;
        report.problems.extend(found);
    }
    report.checked += throttles.len();
    report.problems.extend(throttles.into_iter().flatten());
    report
}

/// Publishes one critical alert per problem and UTC day (claimed, so a second drill the same
/// day, or a retried one, publishes nothing again). Returns the ids published by this call.
pub async fn raise(
    guard: &KeyGuard,
    policy: &PolicySet,
    report: &DrillReport,
    bus: &dyn AlertBus,
) -> Result<Vec<String>, String> {
    let now = guard.clock.now();
    let channels = drill_channels(policy);
    let mut published = Vec::new();
    for p in &report.problems {
        let event: AlertEvent = p.alert(channels.clone(), now);
        let claim = Claim::alert(
            &event,
            Lease::new(
                uuid::Uuid::new_v4().to_string(),
                CLAIM_LEASE,
                now + Duration::days(2),
            ),
        );
        match once(guard.store.as_ref(), claim, now, || bus.publish(&event)).await {
            Ok(Once::Did(())) => published.push(event.alert_id.clone()),
            Ok(Once::Done | Once::Busy) => {}
            Err(e) => return Err(format!("{}: {e}", p.subject)),
        }
    }
    Ok(published)
}
