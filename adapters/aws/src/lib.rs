//! spendguard-aws: the AWS adapters, one feature per service so that each function compiles
//! only the SDKs it calls — DynamoDB (the state store), SNS (the alert bus), Secrets Manager
//! (secrets, withheld keys, rotation), SES (e-mail), AWS Budgets and Cost Explorer (spend
//! sources), IAM (access keys) and the resources a shutdown stops (Lambda, ECS, EC2, IAM roles).

pub mod sdk;

#[cfg(all(feature = "dynamodb", feature = "secrets"))]
pub mod backends;
#[cfg(feature = "budgets")]
pub mod budgets;
#[cfg(feature = "cost-explorer")]
pub mod cost_explorer;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
#[cfg(feature = "ses")]
pub mod email;
#[cfg(feature = "iam")]
pub mod iam;
#[cfg(feature = "secrets")]
pub mod secret_versions;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "shutdown")]
pub mod shutdown;
#[cfg(feature = "sns")]
pub mod sns;
#[cfg(all(feature = "budgets", feature = "cost-explorer"))]
pub mod sources;
