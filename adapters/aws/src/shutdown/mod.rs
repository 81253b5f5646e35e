//! AWS behind [`ShutdownTarget`]: Lambda functions, ECS services and EC2 instances opt in by the
//! `spendguard:shutdown` tag (found with the Resource Groups Tagging API), Auto Scaling groups
//! by the same tag (found with their own API, which the tagging API does not cover), in every
//! region of `[shutdown] regions`; IAM roles are named in the budgets file and must carry the
//! tag too. Each resource is read and changed in the region of its ARN. EC2, Auto Scaling and
//! Application Auto Scaling are called directly, signed here (ADRs 017 and 023).

mod scaling;
mod signed;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_resourcegroupstagging::types::TagFilter;

use signed::xml_text;
pub use signed::{ApplicationAutoScaling, AutoScalingQuery, Ec2Query};

use spendguard_app::flows::shutdown::DENY_POLICY_NAME;

use spendguard_domain::resources::{Resource, ResourceKind, ResourceState, SHUTDOWN_TAG};

use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};

use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

/// The inline deny-all policy that versions before December 2026 put on opted-in roles (under
/// [`DENY_POLICY_NAME`]): its restore deletes that policy only if its document is still this.
const OLD_INLINE_DENY_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#;

/// spendguard's functions, by the suffix of their names (`<stack>-<function>`).
const SPENDGUARD_FUNCTIONS: [&str; 5] = [
    "budget-check",
    "alert-fanout",
    "key-guard",
    "budget-webhook",
    "daily-aggregate",
];

pub struct AwsShutdown {
    sdk: SdkConfig,
    http: reqwest::Client,
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    /// The clients of each region, built on first use.
    regions: Mutex<BTreeMap<String, Arc<Regional>>>,
    /// The names of spendguard's own functions, never stopped.
    own_functions: Vec<String>,
    /// The role key-guard runs as (looked up once), never denied.
    own_role: tokio::sync::OnceCell<Result<Option<String>, String>>,
}

/// The clients of one region: everything but IAM (global) is regional.
struct Regional {
    tagging: aws_sdk_resourcegroupstagging::Client,
    lambda: aws_sdk_lambda::Client,
    ecs: aws_sdk_ecs::Client,
    ec2: Ec2Query,
    autoscaling: AutoScalingQuery,
    scaling: ApplicationAutoScaling,
}

impl Regional {
    fn new(sdk: &SdkConfig, http: &reqwest::Client) -> Self {
        Regional {
            tagging: aws_sdk_resourcegroupstagging::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
            ecs: aws_sdk_ecs::Client::new(sdk),
            ec2: Ec2Query {
                sdk: sdk.clone(),
                http: http.clone(),
            },
            autoscaling: AutoScalingQuery {
                sdk: sdk.clone(),
                http: http.clone(),
            },
            scaling: ApplicationAutoScaling {
                sdk: sdk.clone(),
                http: http.clone(),
            },
        }
    }

    /// The region's tagged Lambda functions, ECS services and EC2 instances, and its tagged
    /// Auto Scaling groups.
    async fn opted_in(&self) -> Result<Vec<Resource>, ShutdownError> {
        let (mut tagged, groups) =
            tokio::try_join!(self.tagged(), scaling::tagged_groups(&self.autoscaling))?;
        tagged.extend(groups);
        Ok(tagged)
    }

    async fn tagged(&self) -> Result<Vec<Resource>, ShutdownError> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .tagging
                .get_resources()
                .tag_filters(TagFilter::builder().key(SHUTDOWN_TAG).build())
                .resource_type_filters("lambda:function")
                .resource_type_filters("ecs:service")
                .resource_type_filters("ec2:instance")
                .resources_per_page(100)
                .set_pagination_token(token.clone())
                .send()
                .await
                .map_err(|e| sdk_error("tag:GetResources", e))?;
            for mapping in page.resource_tag_mapping_list() {
                let Some(arn) = mapping.resource_arn() else {
                    continue;
                };
                let Some(kind) = kind_of(arn) else { continue };
                let value = mapping
                    .tags()
                    .iter()
                    .find(|t| t.key() == SHUTDOWN_TAG)
                    .map(|t| t.value());
                if let Some(scope) = value.and_then(|v| Scope::parse(v).ok()) {
                    found.push(Resource {
                        kind,
                        id: arn.to_string(),
                        scope,
                    });
                } else {
                    tracing::warn!(
                        resource = arn,
                        "the {SHUTDOWN_TAG} tag names no scope: left alone"
                    );
                }
            }
            token = page
                .pagination_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
    }
}

impl AwsShutdown {
    /// `own_function`: the name key-guard runs under (`AWS_LAMBDA_FUNCTION_NAME`); it and the
    /// stack's other functions are protected from shutdowns.
    pub fn new(sdk: &SdkConfig, http: reqwest::Client, own_function: Option<&str>) -> Self {
        let own_functions = own_function
            .and_then(|name| name.strip_suffix("key-guard"))
            .map(|prefix| {
                SPENDGUARD_FUNCTIONS
                    .iter()
                    .map(|f| format!("{prefix}{f}"))
                    .collect()
            })
            .unwrap_or_else(|| own_function.map(str::to_string).into_iter().collect());
        AwsShutdown {
            sdk: sdk.clone(),
            http,
            iam: aws_sdk_iam::Client::new(sdk),
            sts: aws_sdk_sts::Client::new(sdk),
            regions: Mutex::new(BTreeMap::new()),
            own_functions,
            own_role: tokio::sync::OnceCell::new(),
        }
    }

    /// The clients of `region` (the SDK's configuration otherwise: credentials, endpoint,
    /// timeouts and retries).
    fn regional(&self, region: &str) -> Arc<Regional> {
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        regions
            .entry(region.to_string())
            .or_insert_with(|| {
                let sdk = self
                    .sdk
                    .to_builder()
                    .region(aws_config::Region::new(region.to_string()))
                    .build();
                Arc::new(Regional::new(&sdk, &self.http))
            })
            .clone()
    }

    /// The clients of the region in the resource's ARN.
    fn region_of(&self, resource: &Resource) -> Result<Arc<Regional>, ShutdownError> {
        match resource.id.split(':').nth(3).filter(|r| !r.is_empty()) {
            Some(region) => Ok(self.regional(region)),
            None => Err(ShutdownError(format!(
                "{}: its ARN names no region",
                resource.id
            ))),
        }
    }

    /// The regions searched: `[shutdown] regions`, or key-guard's own.
    fn searched(&self, policy: &PolicySet) -> Result<Vec<String>, ShutdownError> {
        let listed = &policy.settings.shutdown.regions;
        if !listed.is_empty() {
            return Ok(listed.clone());
        }
        match self.sdk.region() {
            Some(own) => Ok(vec![own.to_string()]),
            None => Err(ShutdownError(
                "no AWS region is configured and [shutdown] regions names none".into(),
            )),
        }
    }

    async fn own_role(&self) -> &Result<Option<String>, String> {
        self.own_role
            .get_or_init(|| async {
                let identity = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| sdk_error("sts:GetCallerIdentity", e).0)?;
                Ok(identity.arn().and_then(assumed_role).map(str::to_string))
            })
            .await
    }

    async fn role(&self, name: &str) -> Result<Option<Resource>, ShutdownError> {
        let out = match self.iam.get_role().role_name(name).send().await {
            Ok(out) => out,
            // nothing to stop: a shutdown is not held up by a role that is gone
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                tracing::warn!(
                    role = name,
                    "named in [shutdown] deny_roles but does not exist: skipped"
                );
                return Ok(None);
            }
            Err(e) => return Err(sdk_error("iam:GetRole", e)),
        };
        let Some(role) = out.role() else {
            return Ok(None);
        };
        let scope = role
            .tags()
            .iter()
            .find(|t| t.key() == SHUTDOWN_TAG)
            .and_then(|t| Scope::parse(t.value()).ok());
        Ok(scope.map(|scope| Resource {
            kind: ResourceKind::IamRole,
            id: role.arn().to_string(),
            scope,
        }))
    }
    /// Whether AWS's `AWSDenyAll` (of the role's partition) is attached to the role: by its
    /// ARN, so an inline policy or a customer managed policy of any name is not taken for it.
    async fn deny_all_attached(&self, role_arn: &str) -> Result<bool, ShutdownError> {
        let wanted = deny_all_arn(role_arn);
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .iam
                .list_attached_role_policies()
                .role_name(last_segment(role_arn))
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| sdk_error("iam:ListAttachedRolePolicies", e))?;
            if page
                .attached_policies()
                .iter()
                .any(|p| p.policy_arn() == Some(wanted.as_str()))
            {
                return Ok(true);
            }
            marker = page
                .marker()
                .filter(|m| page.is_truncated() && !m.is_empty())
                .map(str::to_string);
            if marker.is_none() {
                return Ok(false);
            }
        }
    }

    /// The restore of a stop recorded by an earlier version: deletes the inline policy
    /// [`DENY_POLICY_NAME`] if its document is still the deny-all spendguard wrote; anything
    /// else under that name is someone else's and stays. The deployments no longer grant
    /// `iam:DeleteRolePolicy` (finding #8): then the error says what to run by hand.
    async fn remove_old_inline_deny(&self, role_arn: &str) -> Result<(), ShutdownError> {
        let role = last_segment(role_arn);
        let answer = self
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name(DENY_POLICY_NAME)
            .send()
            .await;
        let document = match answer {
            Ok(out) => out.policy_document,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(sdk_error("iam:GetRolePolicy", e)),
        };
        if !same_policy(&document, OLD_INLINE_DENY_ALL) {
            tracing::warn!(
                role,
                "the inline policy {DENY_POLICY_NAME} is not the deny-all spendguard wrote: left alone"
            );
            return Ok(());
        }
        self.iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(DENY_POLICY_NAME)
            .send()
            .await
            .map_err(|e| {
                let ShutdownError(m) = sdk_error("iam:DeleteRolePolicy", e);
                ShutdownError(format!(
                    "{m} (an earlier version's inline deny is still on the role; if spendguard may \
                     no longer delete inline policies, run `aws iam delete-role-policy --role-name \
                     {role} --policy-name {DENY_POLICY_NAME}` and restore again)"
                ))
            })?;
        Ok(())
    }
}

/// AWS's managed deny-all policy in the partition of `role_arn` (`arn:<partition>:iam::...`).
fn deny_all_arn(role_arn: &str) -> String {
    let partition = role_arn
        .split(':')
        .nth(1)
        .filter(|p| !p.is_empty())
        .unwrap_or("aws");
    format!("arn:{partition}:iam::aws:policy/AWSDenyAll")
}

/// Whether a policy document as IAM answers it (URL-encoded, RFC 3986) is `expected`, as JSON.
fn same_policy(document: &str, expected: &str) -> bool {
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    let found = parse(document).or_else(|| percent_decoded(document).as_deref().and_then(parse));
    found.is_some() && found == parse(expected)
}

fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The role of an assumed-role session ARN (`arn:aws:sts::<account>:assumed-role/<role>/<session>`).
fn assumed_role(arn: &str) -> Option<&str> {
    arn.split_once(":assumed-role/")?.1.split('/').next()
}

fn kind_of(arn: &str) -> Option<ResourceKind> {
    let mut parts = arn.splitn(6, ':');
    let service = parts.nth(2)?;
    let resource = parts.nth(2)?;
    match (service, resource.split(['/', ':']).next()?) {
        ("lambda", "function") => Some(ResourceKind::LambdaFunction),
        ("ecs", "service") => Some(ResourceKind::EcsService),
        ("ec2", "instance") => Some(ResourceKind::Ec2Instance),
        _ => None,
    }
}

/// The last path segment of an ARN (a role or instance name).
fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// An ECS service ARN's cluster (long ARN format: `service/<cluster>/<service>`).
fn ecs_cluster(arn: &str) -> Result<&str, ShutdownError> {
    let path = arn.split_once(":service/").map(|(_, p)| p).unwrap_or("");
    match path.split_once('/') {
        Some((cluster, _)) => Ok(cluster),
        None => Err(ShutdownError(format!(
            "{arn}: a service ARN in the old format names no cluster; opt in with the long ARN format"
        ))),
    }
}

fn sdk_error<E: std::error::Error + 'static>(operation: &str, e: E) -> ShutdownError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    ShutdownError(format!("{operation}: {message}"))
}

#[async_trait]
impl ShutdownTarget for AwsShutdown {
    async fn opted_in(
        &self,
        policy: &PolicySet,
        scope: &Scope,
    ) -> Result<Vec<Resource>, ShutdownError> {
        match self.opted_in_partially(policy, scope).await {
            (found, errors) if errors.is_empty() => Ok(found),
            (_, errors) => Err(ShutdownError(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    /// Every region is searched, at once; one that cannot be is an error naming it, and what
    /// the others hold is returned all the same.
    async fn opted_in_partially(
        &self,
        policy: &PolicySet,
        _scope: &Scope,
    ) -> (Vec<Resource>, Vec<ShutdownError>) {
        let regions = match self.searched(policy) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), vec![e]),
        };
        let answers = futures::future::join_all(regions.iter().map(|region| async move {
            self.regional(region)
                .opted_in()
                .await
                .map_err(|ShutdownError(e)| ShutdownError(format!("region {region}: {e}")))
        }))
        .await;
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for answer in answers {
            match answer {
                Ok(resources) => found.extend(resources),
                Err(e) => errors.push(e),
            }
        }
        for name in &policy.settings.shutdown.deny_roles {
            match self.role(name).await {
                Ok(Some(role)) => found.push(role),
                Ok(None) => {
                    tracing::warn!(role = %name, "named in [shutdown] but not tagged {SHUTDOWN_TAG}: left alone")
                }
                Err(e) => errors.push(e),
            }
        }
        (found, errors)
    }

    async fn protected(&self, resource: &Resource) -> Option<String> {
        let name = resource.id.rsplit([':', '/']).next().unwrap_or_default();
        match resource.kind {
            ResourceKind::LambdaFunction if self.own_functions.iter().any(|f| f == name) => {
                Some("spendguard's own function: never stopped (the restore needs it)".into())
            }
            ResourceKind::IamRole => match self.own_role().await {
                Ok(Some(own)) if own == name => {
                    Some("the role key-guard runs as: never denied (the restore needs it)".into())
                }
                Ok(_) => None,
                Err(e) => Some(format!(
                    "not checked against the role key-guard runs as ({e}): left alone"
                )),
            },
            _ => None,
        }
    }

    async fn state(&self, resource: &Resource) -> Result<ResourceState, ShutdownError> {
        let id = resource.id.as_str();
        if resource.kind == ResourceKind::IamRole {
            return Ok(ResourceState::DenyAll {
                attached: self.deny_all_attached(id).await?,
            });
        }
        let regional = self.region_of(resource)?;
        match resource.kind {
            ResourceKind::LambdaFunction => {
                let out = regional
                    .lambda
                    .get_function_concurrency()
                    .function_name(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error("lambda:GetFunctionConcurrency", e))?;
                Ok(ResourceState::Concurrency {
                    reserved: out.reserved_concurrent_executions(),
                })
            }
            ResourceKind::EcsService => {
                let service = async {
                    regional
                        .ecs
                        .describe_services()
                        .cluster(ecs_cluster(id)?)
                        .services(id)
                        .send()
                        .await
                        .map_err(|e| sdk_error("ecs:DescribeServices", e))
                };
                let (out, scaling) =
                    tokio::try_join!(service, scaling::service_scaling(&regional.scaling, id))?;
                let service = out.services().first().ok_or_else(|| {
                    ShutdownError(format!("ecs:DescribeServices: {id} not found"))
                })?;
                Ok(ResourceState::DesiredCount {
                    count: service.desired_count(),
                    scaling,
                })
            }
            ResourceKind::AutoScalingGroup => scaling::group_state(&regional.autoscaling, id).await,
            ResourceKind::Ec2Instance => {
                let body = regional
                    .ec2
                    .call("DescribeInstances", &[("InstanceId.1", last_segment(id))])
                    .await?;
                let state = xml_text(&body, "instanceState", "name").ok_or_else(|| {
                    ShutdownError(format!("ec2:DescribeInstances: no state for {id}"))
                })?;
                Ok(ResourceState::Instance {
                    running: matches!(state, "running" | "pending"),
                })
            }
            other => Err(ShutdownError(format!("{other:?} is not an AWS resource"))),
        }
    }

    async fn set(&self, resource: &Resource, to: &ResourceState) -> Result<(), ShutdownError> {
        let id = resource.id.as_str();
        match (resource.kind, to) {
            (ResourceKind::LambdaFunction, ResourceState::Concurrency { reserved: Some(n) }) => {
                self.region_of(resource)?
                    .lambda
                    .put_function_concurrency()
                    .function_name(id)
                    .reserved_concurrent_executions(*n)
                    .send()
                    .await
                    .map_err(|e| sdk_error("lambda:PutFunctionConcurrency", e))?;
            }
            (ResourceKind::LambdaFunction, ResourceState::Concurrency { reserved: None }) => {
                self.region_of(resource)?
                    .lambda
                    .delete_function_concurrency()
                    .function_name(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error("lambda:DeleteFunctionConcurrency", e))?;
            }
            (ResourceKind::EcsService, ResourceState::DesiredCount { count, scaling }) => {
                let regional = self.region_of(resource)?;
                let update_count = async {
                    regional
                        .ecs
                        .update_service()
                        .cluster(ecs_cluster(id)?)
                        .service(id)
                        .desired_count(*count)
                        .send()
                        .await
                        .map_err(|e| sdk_error("ecs:UpdateService", e))
                };
                match scaling {
                    None => {
                        update_count.await?;
                    }
                    // a stop suspends the scaling before it sets 0; a restore sets the count
                    // before the scaling may act on it again. A suspension refused (an
                    // untagged target) still lets the count go to 0: spend stops now, and the
                    // stop fails naming the target
                    Some(s) if *count == 0 => {
                        let suspended =
                            scaling::set_service_scaling(&regional.scaling, id, s).await;
                        update_count.await?;
                        suspended?;
                    }
                    Some(s) => {
                        update_count.await?;
                        scaling::set_service_scaling(&regional.scaling, id, s).await?;
                    }
                }
            }
            (ResourceKind::AutoScalingGroup, state @ ResourceState::Group { .. }) => {
                scaling::set_group(&self.region_of(resource)?.autoscaling, id, state).await?;
            }
            (ResourceKind::Ec2Instance, ResourceState::Instance { running }) => {
                let action = if *running {
                    "StartInstances"
                } else {
                    "StopInstances"
                };
                self.region_of(resource)?
                    .ec2
                    .call(action, &[("InstanceId.1", last_segment(id))])
                    .await?;
            }
            (ResourceKind::IamRole, ResourceState::DenyAll { attached: true }) => {
                self.iam
                    .attach_role_policy()
                    .role_name(last_segment(id))
                    .policy_arn(deny_all_arn(id))
                    .send()
                    .await
                    .map_err(|e| sdk_error("iam:AttachRolePolicy", e))?;
            }
            (ResourceKind::IamRole, ResourceState::DenyAll { attached: false }) => {
                let answer = self
                    .iam
                    .detach_role_policy()
                    .role_name(last_segment(id))
                    .policy_arn(deny_all_arn(id))
                    .send()
                    .await;
                match answer {
                    Ok(_) => {}
                    // detached already (a restore that crashed after its detach, or by hand)
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_no_such_entity_exception()) => {}
                    Err(e) => return Err(sdk_error("iam:DetachRolePolicy", e)),
                }
            }
            (ResourceKind::IamRole, ResourceState::DenyPolicy { attached: false }) => {
                self.remove_old_inline_deny(id).await?;
            }
            (kind, state) => {
                return Err(ShutdownError(format!(
                    "a {kind:?} cannot be set to {state}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_name_their_kind_and_parts() {
        assert_eq!(
            kind_of("arn:aws:lambda:us-east-1:123456789012:function:etl"),
            Some(ResourceKind::LambdaFunction)
        );
        assert_eq!(
            kind_of("arn:aws:ecs:us-east-1:123456789012:service/prod/api"),
            Some(ResourceKind::EcsService)
        );
        assert_eq!(
            kind_of("arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"),
            Some(ResourceKind::Ec2Instance)
        );
        assert_eq!(
            kind_of("arn:aws:ecs:us-east-1:123456789012:cluster/prod"),
            None
        );
        assert_eq!(kind_of("not an arn"), None);
        assert_eq!(
            ecs_cluster("arn:aws:ecs:us-east-1:123456789012:service/prod/api").unwrap(),
            "prod"
        );
        assert!(ecs_cluster("arn:aws:ecs:us-east-1:123456789012:service/api").is_err());
        assert_eq!(
            last_segment("arn:aws:iam::123456789012:role/team/batch"),
            "batch"
        );
    }

    #[test]
    fn the_deny_all_is_aws_managed_in_the_role_partition_and_the_old_inline_is_known_by_content() {
        assert_eq!(
            deny_all_arn("arn:aws:iam::123456789012:role/team/batch"),
            "arn:aws:iam::aws:policy/AWSDenyAll"
        );
        assert_eq!(
            deny_all_arn("arn:aws-us-gov:iam::123456789012:role/batch"),
            "arn:aws-us-gov:iam::aws:policy/AWSDenyAll"
        );
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Deny%22%2C%22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
        assert!(same_policy(encoded, OLD_INLINE_DENY_ALL));
        assert!(same_policy(
            r#"{ "Statement": [{"Resource":"*","Action":"*","Effect":"Deny"}], "Version":"2012-10-17" }"#,
            OLD_INLINE_DENY_ALL
        ));
        assert!(!same_policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]}"#,
            OLD_INLINE_DENY_ALL
        ));
        assert!(!same_policy("%7B%2", OLD_INLINE_DENY_ALL));
    }

    #[test]
    fn the_instance_state_and_errors_are_read_from_ec2_answers() {
        let answer = "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
            <instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name>\
            </instanceState></item></instancesSet></item></reservationSet></DescribeInstancesResponse>";
        assert_eq!(xml_text(answer, "instanceState", "name"), Some("running"));
        let error = "<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>\
            <Message>The instance ID 'i-9' does not exist</Message></Error></Errors></Response>";
        assert_eq!(
            xml_text(error, "Error", "Code"),
            Some("InvalidInstanceID.NotFound")
        );
        assert_eq!(xml_text(answer, "Error", "Code"), None);
    }
}
