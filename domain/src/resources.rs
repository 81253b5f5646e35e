//! The cloud resources a shutdown stops and a restore puts back: what they are, and the states
//! spendguard records and sets.

use std::collections::BTreeMap;

use crate::budget::SourceSpec;
use crate::keys::ProviderKind;
use crate::scope::Scope;
use crate::settings::PolicySet;
use serde::{Deserialize, Serialize};

/// The tag an AWS resource carries to opt in; its value is the scope whose shutdown stops it.
/// Fixed, because the IAM policies in template.yaml and terraform/ are conditioned on it.
pub const SHUTDOWN_TAG: &str = "spendguard:shutdown";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    LambdaFunction,
    EcsService,
    Ec2Instance,
    /// An EC2 Auto Scaling group (tagged itself: the tagging API does not list groups).
    AutoScalingGroup,
    IamRole,
    /// A GCP project's link to its billing account (`projects/<id>/billingInfo`).
    GcpBilling,
    /// A user-managed key of a GCP service account.
    GcpServiceAccountKey,
    /// OpenAI's hard spend limit of a project or of the organisation: part of stopping the
    /// keys of a scope that covers it (ADR 020), not only of a `shutdown`.
    OpenaiSpendLimit,
    /// Anthropic's monthly spend limit of a workspace or of the organisation (early access,
    /// opt-in): stopped like OpenAI's.
    AnthropicSpendLimit,
}

impl ResourceKind {
    /// The state a shutdown leaves the resource in.
    pub fn stopped(self) -> ResourceState {
        match self {
            ResourceKind::LambdaFunction => ResourceState::Concurrency { reserved: Some(0) },
            ResourceKind::EcsService => ResourceState::DesiredCount {
                count: 0,
                scaling: None,
            },
            ResourceKind::Ec2Instance => ResourceState::Instance { running: false },
            ResourceKind::AutoScalingGroup => ResourceState::Group {
                min_size: 0,
                desired_capacity: 0,
                suspended: GROUP_PROCESSES.map(str::to_string).to_vec(),
            },
            ResourceKind::IamRole => ResourceState::DenyAll { attached: true },
            ResourceKind::GcpBilling => ResourceState::Billing { account: None },
            ResourceKind::GcpServiceAccountKey => ResourceState::KeyDisabled { disabled: true },
            // the lowest limit OpenAI takes: at most any month-to-date spend, and below what
            // OpenAI has recorded however far its records lag behind spendguard's
            ResourceKind::OpenaiSpendLimit => ResourceState::SpendLimit {
                cents: Some(MIN_OPENAI_LIMIT_CENTS),
            },
            // Anthropic takes any non-negative amount: nothing more may be spent
            ResourceKind::AnthropicSpendLimit => ResourceState::SpendLimit { cents: Some(0) },
        }
    }

    /// The state a shutdown leaves a resource in that is `now` in `now`: an ECS service with
    /// a scalable target also has its target suspended; every other kind's is [`Self::stopped`].
    pub fn stopped_from(self, now: &ResourceState) -> ResourceState {
        match now {
            ResourceState::DesiredCount {
                scaling: Some(_), ..
            } => ResourceState::DesiredCount {
                count: 0,
                scaling: Some(Scaling::SUSPENDED),
            },
            _ => self.stopped(),
        }
    }
}

/// The Auto Scaling processes a shutdown suspends (sorted): those that launch instances or
/// change the group's capacity. `Terminate` stays, so the group can shrink to 0; `HealthCheck`
/// and `AddToLoadBalancer` stay, as they launch nothing.
pub const GROUP_PROCESSES: [&str; 5] = [
    "AZRebalance",
    "AlarmNotification",
    "Launch",
    "ReplaceUnhealthy",
    "ScheduledActions",
];

/// An ECS service's scalable target (Application Auto Scaling): its minimum capacity and which
/// of its scaling is suspended. Its maximum is never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaling {
    pub min_capacity: i32,
    pub dynamic_in_suspended: bool,
    pub dynamic_out_suspended: bool,
    pub scheduled_suspended: bool,
}

impl Scaling {
    /// What a shutdown sets: nothing scales the service out again, and 0 is within its range.
    pub const SUSPENDED: Scaling = Scaling {
        min_capacity: 0,
        dynamic_in_suspended: true,
        dynamic_out_suspended: true,
        scheduled_suspended: true,
    };
}

impl ResourceState {
    /// The state read now, as comparable with `recorded`: an ECS service recorded without a
    /// scalable target (none was there, or a version before December 2026 recorded it) is
    /// compared, and put back, by its desired count alone — its target is not spendguard's.
    /// Whether this state lies between `stopped` and `previous` part by part (each of its
    /// parts is one or the other), without being either: what a stop or restore that failed
    /// halfway leaves, which the next restore finishes. Single-part states never are.
    pub fn partly_between(&self, stopped: &ResourceState, previous: &ResourceState) -> bool {
        if self == stopped || self == previous {
            return false;
        }
        let either = |now: i32, a: i32, b: i32| now == a || now == b;
        match (self, stopped, previous) {
            (
                ResourceState::DesiredCount { count, scaling },
                ResourceState::DesiredCount {
                    count: c1,
                    scaling: s1,
                },
                ResourceState::DesiredCount {
                    count: c2,
                    scaling: s2,
                },
            ) => {
                let scaling = match (scaling, s1, s2) {
                    (None, None, None) => true,
                    (Some(n), Some(a), Some(b)) => {
                        either(n.min_capacity, a.min_capacity, b.min_capacity)
                            && [
                                (
                                    n.dynamic_in_suspended,
                                    a.dynamic_in_suspended,
                                    b.dynamic_in_suspended,
                                ),
                                (
                                    n.dynamic_out_suspended,
                                    a.dynamic_out_suspended,
                                    b.dynamic_out_suspended,
                                ),
                                (
                                    n.scheduled_suspended,
                                    a.scheduled_suspended,
                                    b.scheduled_suspended,
                                ),
                            ]
                            .iter()
                            .all(|(n, a, b)| n == a || n == b)
                    }
                    _ => false,
                };
                either(*count, *c1, *c2) && scaling
            }
            (
                ResourceState::Group {
                    min_size,
                    desired_capacity,
                    suspended,
                },
                ResourceState::Group {
                    min_size: m1,
                    desired_capacity: d1,
                    suspended: p1,
                },
                ResourceState::Group {
                    min_size: m2,
                    desired_capacity: d2,
                    suspended: p2,
                },
            ) => {
                let has = |list: &[String], p: &str| list.iter().any(|s| s == p);
                either(*min_size, *m1, *m2)
                    && either(*desired_capacity, *d1, *d2)
                    && GROUP_PROCESSES
                        .iter()
                        .all(|p| has(suspended, p) == has(p1, p) || has(suspended, p) == has(p2, p))
            }
            _ => false,
        }
    }

    pub fn seen_as(self, recorded: &ResourceState) -> ResourceState {
        match (self, recorded) {
            (
                ResourceState::DesiredCount { count, .. },
                ResourceState::DesiredCount { scaling: None, .. },
            ) => ResourceState::DesiredCount {
                count,
                scaling: None,
            },
            (now, _) => now,
        }
    }
}

/// OpenAI's smallest hard spend limit (`threshold_amount` is in cents, at least 1).
pub const MIN_OPENAI_LIMIT_CENTS: u64 = 1;

/// The id of an OpenAI spend limit resource: `openai:organization` or `openai:project:<id>`.
pub fn openai_limit_id(project: Option<&str>) -> String {
    match project {
        Some(p) => format!("openai:project:{p}"),
        None => "openai:organization".into(),
    }
}

/// The id of an Anthropic spend limit resource: `anthropic:organization` or
/// `anthropic:workspace:<id>`.
pub fn anthropic_limit_id(workspace: Option<&str>) -> String {
    match workspace {
        Some(w) => format!("anthropic:workspace:{w}"),
        None => "anthropic:organization".into(),
    }
}

/// The Anthropic workspace a spend limit resource is on (`None`: the organisation's).
pub fn anthropic_limit_workspace(resource: &Resource) -> Option<&str> {
    resource.id.strip_prefix("anthropic:workspace:")
}

/// The OpenAI project a spend limit resource is on (`None`: the organisation's).
pub fn openai_limit_project(resource: &Resource) -> Option<&str> {
    resource.id.strip_prefix("openai:project:")
}

/// The OpenAI project or Anthropic workspace whose own rate limits a throttle of the scope
/// over `resource` lowers (an organisation's are not the throttle's to change).
pub fn rate_limited(resource: &Resource) -> Option<(ProviderKind, &str)> {
    openai_limit_project(resource)
        .map(|p| (ProviderKind::Openai, p))
        .or_else(|| anthropic_limit_workspace(resource).map(|w| (ProviderKind::Anthropic, w)))
}

/// The provider-side spend limits a stop can set: one per OpenAI project that a budget reads
/// (`source = { kind = "openai", project_id }`) or a registered key belongs to, and the
/// organisation's when a budget reads the whole organisation's costs. Each is on the scope
/// that covers every place naming it, so only a stop covering all of them sets it: stopping
/// one key of a project never stops the project's other keys, and the organisation's limit
/// (which stops every project) is set only by a stop covering every OpenAI project and key.
pub fn provider_limits(policy: &PolicySet) -> Vec<Resource> {
    let mut named: BTreeMap<String, Scope> = BTreeMap::new();
    let mut name = |id: String, scope: &Scope| {
        named
            .entry(id)
            .and_modify(|s| *s = common_ancestor(s, scope))
            .or_insert_with(|| scope.clone());
    };
    let organisation = openai_limit_id(None);
    let mut openai_scopes = Vec::new();
    let mut anthropic_scopes = Vec::new();
    for budget in &policy.budgets {
        match &budget.source {
            SourceSpec::Openai { project_id } => {
                name(openai_limit_id(project_id.as_deref()), &budget.scope);
                openai_scopes.push(&budget.scope);
            }
            SourceSpec::Anthropic { workspace_id } => {
                name(anthropic_limit_id(workspace_id.as_deref()), &budget.scope);
                anthropic_scopes.push(&budget.scope);
            }
            _ => {}
        }
    }
    for key in &policy.keys {
        if key.provider == ProviderKind::Openai {
            if let Some(project) = &key.project_id {
                name(openai_limit_id(Some(project)), &key.scope);
            }
            openai_scopes.push(&key.scope);
        }
        if key.provider == ProviderKind::Anthropic {
            anthropic_scopes.push(&key.scope);
        }
    }
    // an organisation's limit stops every project (workspace) and key of the provider
    for (org, scopes) in [
        (organisation, openai_scopes),
        (anthropic_limit_id(None), anthropic_scopes),
    ] {
        if let Some(o) = named.get_mut(&org) {
            for scope in scopes {
                *o = common_ancestor(o, scope);
            }
        }
    }
    named
        .into_iter()
        .map(|(id, scope)| Resource {
            kind: if id.starts_with("anthropic:") {
                ResourceKind::AnthropicSpendLimit
            } else {
                ResourceKind::OpenaiSpendLimit
            },
            id,
            scope,
        })
        .collect()
}

/// The most specific scope containing both.
fn common_ancestor(a: &Scope, b: &Scope) -> Scope {
    a.rollup()
        .into_iter()
        .find(|s| s.contains(b))
        .unwrap_or_else(Scope::root)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: ResourceKind,
    /// The ARN, or the GCP resource name.
    pub id: String,
    /// The scope its opt-in names.
    pub scope: Scope,
}

/// What a shutdown changes and a restore puts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ResourceState {
    /// A Lambda function's reserved concurrency (`None`: it draws on the account's pool).
    Concurrency {
        reserved: Option<i32>,
    },
    /// An ECS service's desired count, and its scalable target if it has one (Application
    /// Auto Scaling would otherwise undo a count of 0 at its next scale-out; finding #30).
    DesiredCount {
        count: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scaling: Option<Scaling>,
    },
    /// An Auto Scaling group: its minimum and desired capacity, and which of
    /// [`GROUP_PROCESSES`] are suspended (in that order). Its maximum is never changed, and
    /// other processes are not spendguard's.
    Group {
        min_size: i32,
        desired_capacity: i32,
        suspended: Vec<String>,
    },
    /// An EC2 instance (pending counts as running; stopping, stopped and terminated do not).
    Instance {
        running: bool,
    },
    /// Whether AWS's managed deny-all policy (`arn:<partition>:iam::aws:policy/AWSDenyAll`) is
    /// attached to an IAM role: what a shutdown sets. Recorded before the stop, so that restore
    /// detaches it only when the stop attached it.
    DenyAll {
        attached: bool,
    },
    /// Whether the inline deny-all policy `spendguard-shutdown-deny` is on an IAM role: what
    /// versions before December 2026 put (findings #8 and #10 of the security review). Never
    /// set by a stop any more; it is read only from the records of those versions' stops, whose
    /// restore removes that inline policy if its document is still the one spendguard wrote.
    DenyPolicy {
        attached: bool,
    },
    /// The billing account a GCP project is linked to (`None`: billing is off).
    Billing {
        account: Option<String>,
    },
    KeyDisabled {
        disabled: bool,
    },
    /// A provider's hard spend limit in cents (`None`: no limit is set).
    SpendLimit {
        cents: Option<u64>,
    },
}

impl std::fmt::Display for ResourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceState::Concurrency { reserved: Some(n) } => {
                write!(f, "reserved concurrency {n}")
            }
            ResourceState::Concurrency { reserved: None } => f.write_str("no reserved concurrency"),
            ResourceState::DesiredCount {
                count,
                scaling: None,
            } => write!(f, "desired count {count}"),
            ResourceState::DesiredCount {
                count,
                scaling: Some(s),
            } => {
                let suspended: Vec<&str> = [
                    (s.dynamic_in_suspended, "dynamic scale-in"),
                    (s.dynamic_out_suspended, "dynamic scale-out"),
                    (s.scheduled_suspended, "scheduled scaling"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                write!(
                    f,
                    "desired count {count}, scalable target min {} ({} suspended)",
                    s.min_capacity,
                    if suspended.is_empty() {
                        "nothing".to_string()
                    } else {
                        suspended.join(", ")
                    }
                )
            }
            ResourceState::Group {
                min_size,
                desired_capacity,
                suspended,
            } => write!(
                f,
                "min size {min_size}, desired capacity {desired_capacity}, suspended: {}",
                if suspended.is_empty() {
                    "none".to_string()
                } else {
                    suspended.join(", ")
                }
            ),
            ResourceState::Instance { running: true } => f.write_str("running"),
            ResourceState::Instance { running: false } => f.write_str("not running"),
            ResourceState::DenyAll { attached: true } => f.write_str("AWSDenyAll attached"),
            ResourceState::DenyAll { attached: false } => f.write_str("AWSDenyAll not attached"),
            ResourceState::DenyPolicy { attached: true } => {
                f.write_str("inline deny-all policy on (earlier versions)")
            }
            ResourceState::DenyPolicy { attached: false } => {
                f.write_str("no inline deny-all policy (earlier versions)")
            }
            ResourceState::Billing { account: Some(a) } => write!(f, "billing by {a}"),
            ResourceState::Billing { account: None } => f.write_str("billing unlinked"),
            ResourceState::KeyDisabled { disabled: true } => f.write_str("key disabled"),
            ResourceState::KeyDisabled { disabled: false } => f.write_str("key enabled"),
            ResourceState::SpendLimit { cents: Some(c) } => {
                write!(f, "spend limit {}.{:02} USD", c / 100, c % 100)
            }
            ResourceState::SpendLimit { cents: None } => f.write_str("no spend limit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeySpec;

    #[test]
    fn a_halfway_state_is_between_stopped_and_before_part_by_part_and_a_hand_change_is_not() {
        let group = |min, desired, suspended: &[&str]| ResourceState::Group {
            min_size: min,
            desired_capacity: desired,
            suspended: suspended.iter().map(|s| s.to_string()).collect(),
        };
        let before = group(1, 2, &["AZRebalance"]);
        let stopped = ResourceKind::AutoScalingGroup.stopped_from(&before);
        assert_eq!(stopped, group(0, 0, &GROUP_PROCESSES));
        // resized, processes not yet resumed: halfway
        assert!(group(1, 2, &GROUP_PROCESSES).partly_between(&stopped, &before));
        assert!(group(0, 2, &["AZRebalance", "Launch"]).partly_between(&stopped, &before));
        // either end is not "between"; a size or a resumed process nobody set is a hand change
        assert!(!stopped.partly_between(&stopped, &before));
        assert!(!before.partly_between(&stopped, &before));
        assert!(!group(1, 5, &GROUP_PROCESSES).partly_between(&stopped, &before));
        assert!(!group(1, 2, &[]).partly_between(&stopped, &before));

        let scaling = |min, flags: [bool; 3]| Scaling {
            min_capacity: min,
            dynamic_in_suspended: flags[0],
            dynamic_out_suspended: flags[1],
            scheduled_suspended: flags[2],
        };
        let service = |count, s| ResourceState::DesiredCount {
            count,
            scaling: Some(s),
        };
        let before = service(3, scaling(2, [true, false, false]));
        let stopped = ResourceKind::EcsService.stopped_from(&before);
        assert!(service(3, Scaling::SUSPENDED).partly_between(&stopped, &before));
        assert!(!service(4, Scaling::SUSPENDED).partly_between(&stopped, &before));
        // the target's scale-in resumed by hand although it was suspended before: not ours
        assert!(!service(3, scaling(2, [false, false, false])).partly_between(&stopped, &before));
        let instance = ResourceState::Instance { running: true };
        assert!(!instance.partly_between(&ResourceState::Instance { running: false }, &instance));
    }

    fn openai_key(id: &str, project: &str, scope: &str) -> KeySpec {
        KeySpec {
            id: id.into(),
            provider: ProviderKind::Openai,
            scope: Scope::parse(scope).unwrap(),
            secret_arn: None,
            key_id: Some(format!("key_{id}")),
            project_id: Some(project.into()),
            user: None,
            rotation: None,
            allow_delete: false,
        }
    }

    fn limits(policy: &PolicySet) -> Vec<(String, String)> {
        provider_limits(policy)
            .into_iter()
            .map(|r| (r.id, r.scope.to_string()))
            .collect()
    }

    #[test]
    fn a_project_limit_sits_on_the_scope_covering_every_key_and_budget_naming_the_project() {
        let mut policy = PolicySet {
            keys: vec![
                openai_key("a", "proj_p", "openai/prod/key-a"),
                openai_key("b", "proj_p", "openai/prod/key-b"),
                openai_key("d", "proj_d", "openai/dev/key-d"),
                KeySpec {
                    provider: ProviderKind::Anthropic,
                    ..openai_key("x", "proj_x", "anthropic/x")
                },
            ],
            ..PolicySet::default()
        };
        assert_eq!(
            limits(&policy),
            [
                ("openai:project:proj_d".into(), "openai/dev/key-d".into()),
                ("openai:project:proj_p".into(), "openai/prod".into()),
            ],
            "a key's stop covers its project only when no other key of it is elsewhere"
        );
        let file = crate::budgets_file::parse_budgets(
            "budgets.toml",
            r#"
            version = 1
            [[budget]]
            id = "org"
            scope = "openai"
            source = { kind = "openai" }
            [[budget.window]]
            period = "monthly"
            limit = "100"
            tiers = [{ name = "emergency", percent = 100, actions = ["disable_keys"] }]

            [[budget]]
            id = "team"
            scope = "teams/red"
            source = { kind = "openai", project_id = "proj_d" }
            [[budget.window]]
            period = "monthly"
            limit = "100"
            tiers = [{ name = "emergency", percent = 100, actions = ["disable_keys"] }]
            "#,
        )
        .unwrap();
        policy.budgets = file.budgets;
        assert_eq!(
            limits(&policy),
            [
                ("openai:organization".into(), "*".into()),
                ("openai:project:proj_d".into(), "*".into()),
                ("openai:project:proj_p".into(), "openai/prod".into()),
            ],
            "a project named under two unrelated scopes is set only by a stop of everything, \
             and so is the organisation's limit, which would stop that project too"
        );
        policy.budgets.retain(|b| b.id == "org");
        assert_eq!(
            limits(&policy)[0],
            ("openai:organization".into(), "openai".into()),
            "with every OpenAI key under `openai`, a stop of `openai` sets the organisation's"
        );
    }

    #[test]
    fn an_ecs_service_with_a_scalable_target_stops_it_too_and_one_recorded_without_is_seen_without()
    {
        let scaled = ResourceState::DesiredCount {
            count: 3,
            scaling: Some(Scaling {
                min_capacity: 2,
                dynamic_in_suspended: true,
                dynamic_out_suspended: false,
                scheduled_suspended: false,
            }),
        };
        let stopped = ResourceKind::EcsService.stopped_from(&scaled);
        assert_eq!(
            stopped.to_string(),
            "desired count 0, scalable target min 0 (dynamic scale-in, dynamic scale-out, scheduled scaling suspended)"
        );
        assert_eq!(
            scaled.to_string(),
            "desired count 3, scalable target min 2 (dynamic scale-in suspended)"
        );
        let plain = ResourceState::DesiredCount {
            count: 3,
            scaling: None,
        };
        assert_eq!(
            ResourceKind::EcsService.stopped_from(&plain),
            ResourceKind::EcsService.stopped()
        );
        // a record of an earlier version: the count alone
        let old: ResourceState =
            serde_json::from_str(r#"{"state":"desired_count","count":3}"#).unwrap();
        assert_eq!(old, plain);
        assert_eq!(
            stopped.clone().seen_as(&old),
            ResourceKind::EcsService.stopped()
        );
        assert_eq!(stopped.clone().seen_as(&scaled), stopped);
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"state": "desired_count", "count": 3})
        );
    }

    #[test]
    fn an_auto_scaling_group_stops_at_zero_with_its_launching_processes_suspended() {
        assert_eq!(
            ResourceKind::AutoScalingGroup.stopped().to_string(),
            "min size 0, desired capacity 0, suspended: AZRebalance, AlarmNotification, Launch, ReplaceUnhealthy, ScheduledActions"
        );
        let mut sorted = GROUP_PROCESSES;
        sorted.sort();
        assert_eq!(sorted, GROUP_PROCESSES);
    }

    #[test]
    fn a_spend_limit_reads_in_dollars_and_stops_at_one_cent() {
        assert_eq!(
            ResourceKind::OpenaiSpendLimit.stopped(),
            ResourceState::SpendLimit { cents: Some(1) }
        );
        assert_eq!(
            ResourceState::SpendLimit {
                cents: Some(50_005)
            }
            .to_string(),
            "spend limit 500.05 USD"
        );
        assert_eq!(
            ResourceState::SpendLimit { cents: None }.to_string(),
            "no spend limit"
        );
    }
}
