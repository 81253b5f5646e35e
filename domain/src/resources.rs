//! The cloud resources a shutdown stops and a restore puts back: what they are, and the states
//! spendguard records and sets.

use crate::scope::Scope;
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
    IamRole,
    /// A GCP project's link to its billing account (`projects/<id>/billingInfo`).
    GcpBilling,
    /// A user-managed key of a GCP service account.
    GcpServiceAccountKey,
}

impl ResourceKind {
    /// The state a shutdown leaves the resource in.
    pub fn stopped(self) -> ResourceState {
        match self {
            ResourceKind::LambdaFunction => ResourceState::Concurrency { reserved: Some(0) },
            ResourceKind::EcsService => ResourceState::DesiredCount { count: 0 },
            ResourceKind::Ec2Instance => ResourceState::Instance { running: false },
            ResourceKind::IamRole => ResourceState::DenyPolicy { attached: true },
            ResourceKind::GcpBilling => ResourceState::Billing { account: None },
            ResourceKind::GcpServiceAccountKey => ResourceState::KeyDisabled { disabled: true },
        }
    }
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
    /// An ECS service's desired count.
    DesiredCount {
        count: i32,
    },
    /// An EC2 instance (pending counts as running; stopping, stopped and terminated do not).
    Instance {
        running: bool,
    },
    /// Whether the deny-all policy is on an IAM role.
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
}

impl std::fmt::Display for ResourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceState::Concurrency { reserved: Some(n) } => {
                write!(f, "reserved concurrency {n}")
            }
            ResourceState::Concurrency { reserved: None } => f.write_str("no reserved concurrency"),
            ResourceState::DesiredCount { count } => write!(f, "desired count {count}"),
            ResourceState::Instance { running: true } => f.write_str("running"),
            ResourceState::Instance { running: false } => f.write_str("not running"),
            ResourceState::DenyPolicy { attached: true } => f.write_str("deny-all policy on"),
            ResourceState::DenyPolicy { attached: false } => f.write_str("no deny-all policy"),
            ResourceState::Billing { account: Some(a) } => write!(f, "billing by {a}"),
            ResourceState::Billing { account: None } => f.write_str("billing unlinked"),
            ResourceState::KeyDisabled { disabled: true } => f.write_str("key disabled"),
            ResourceState::KeyDisabled { disabled: false } => f.write_str("key enabled"),
        }
    }
}
