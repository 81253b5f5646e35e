//! Resources a shutdown acts on, created in moto: Lambda functions, ECS services, EC2
//! instances and IAM roles, tagged (or not) with `spendguard:shutdown`, and read back
//! independently of the code under test (EC2 goes through the Query transport, as there is no
//! EC2 SDK client in the workspace).

use aws_config::SdkConfig;
use spendguard_aws::shutdown::Ec2Query;
use spendguard_aws::shutdown::{ApplicationAutoScaling, AutoScalingQuery};
use spendguard_domain::resources::SHUTDOWN_TAG;

use crate::aws;

/// An empty zip archive: moto stores a function's code without running it.
const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
/// One of moto's built-in images.
const IMAGE: &str = "ami-03cf127a";

pub struct Cloud {
    pub lambda: aws_sdk_lambda::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub iam: aws_sdk_iam::Client,
    pub ec2: Ec2Query,
    pub autoscaling: AutoScalingQuery,
    pub scaling: ApplicationAutoScaling,
    execution_role: String,
    region: String,
}

impl Cloud {
    pub async fn new(sdk: &SdkConfig) -> Cloud {
        let iam = aws_sdk_iam::Client::new(sdk);
        let execution_role = iam
            .create_role()
            .role_name(aws::unique("lambda-exec"))
            .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
            .send()
            .await
            .unwrap()
            .role
            .unwrap()
            .arn;
        Cloud {
            lambda: aws_sdk_lambda::Client::new(sdk),
            ecs: aws_sdk_ecs::Client::new(sdk),
            iam,
            ec2: Ec2Query {
                sdk: sdk.clone(),
                http: reqwest::Client::new(),
            },
            autoscaling: AutoScalingQuery {
                sdk: sdk.clone(),
                http: reqwest::Client::new(),
            },
            scaling: ApplicationAutoScaling {
                sdk: sdk.clone(),
                http: reqwest::Client::new(),
            },
            execution_role,
            region: sdk.region().map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    /// A function, tagged with `scope` if given; returns its ARN.
    pub async fn function(&self, scope: Option<&str>, reserved: Option<i32>) -> String {
        let arn = self.named_function(&aws::unique("fn"), scope).await;
        if let Some(n) = reserved {
            self.set_reserved(&arn, Some(n)).await;
        }
        arn
    }

    /// A function named `name`, tagged with `scope` if given; returns its ARN.
    pub async fn named_function(&self, name: &str, scope: Option<&str>) -> String {
        let mut create = self
            .lambda
            .create_function()
            .function_name(name)
            .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
            .handler("bootstrap")
            .role(&self.execution_role)
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(aws_smithy_types::Blob::new(EMPTY_ZIP.to_vec()))
                    .build(),
            );
        if let Some(s) = scope {
            create = create.tags(SHUTDOWN_TAG, s);
        }
        create.send().await.unwrap().function_arn.unwrap()
    }

    pub async fn set_reserved(&self, arn: &str, reserved: Option<i32>) {
        match reserved {
            Some(n) => {
                self.lambda
                    .put_function_concurrency()
                    .function_name(arn)
                    .reserved_concurrent_executions(n)
                    .send()
                    .await
                    .unwrap();
            }
            None => {
                self.lambda
                    .delete_function_concurrency()
                    .function_name(arn)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn reserved(&self, arn: &str) -> Option<i32> {
        self.lambda
            .get_function_concurrency()
            .function_name(arn)
            .send()
            .await
            .unwrap()
            .reserved_concurrent_executions
    }

    /// A service in a new cluster, tagged with `scope` if given; returns its ARN.
    pub async fn service(&self, scope: Option<&str>, desired: i32) -> String {
        let cluster = aws::unique("cluster");
        self.ecs
            .create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .unwrap();
        let family = aws::unique("task");
        self.ecs
            .register_task_definition()
            .family(&family)
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("app")
                    .image("public.ecr.aws/docker/library/busybox:latest")
                    .memory(128)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let mut create = self
            .ecs
            .create_service()
            .cluster(&cluster)
            .service_name(aws::unique("svc"))
            .task_definition(&family)
            .desired_count(desired);
        if let Some(s) = scope {
            create = create.tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key(SHUTDOWN_TAG)
                    .value(s)
                    .build(),
            );
        }
        create
            .send()
            .await
            .unwrap()
            .service
            .unwrap()
            .service_arn
            .unwrap()
    }

    pub async fn set_desired(&self, arn: &str, desired: i32) {
        let cluster = arn.split('/').nth(1).unwrap();
        self.ecs
            .update_service()
            .cluster(cluster)
            .service(arn)
            .desired_count(desired)
            .send()
            .await
            .unwrap();
    }

    pub async fn desired(&self, arn: &str) -> i32 {
        let cluster = arn.split('/').nth(1).unwrap();
        self.ecs
            .describe_services()
            .cluster(cluster)
            .services(arn)
            .send()
            .await
            .unwrap()
            .services()[0]
            .desired_count()
    }

    /// A running instance, tagged with `scope` if given; returns its id.
    pub async fn instance(&self, scope: Option<&str>) -> String {
        let mut params = vec![
            ("ImageId", IMAGE),
            ("MinCount", "1"),
            ("MaxCount", "1"),
            ("InstanceType", "t3.micro"),
        ];
        if let Some(s) = scope {
            params.extend([
                ("TagSpecification.1.ResourceType", "instance"),
                ("TagSpecification.1.Tag.1.Key", SHUTDOWN_TAG),
                ("TagSpecification.1.Tag.1.Value", s),
            ]);
        }
        let answer = self.ec2.call("RunInstances", &params).await.unwrap();
        let from = answer.find("<instanceId>").unwrap() + "<instanceId>".len();
        let to = answer[from..].find("</instanceId>").unwrap() + from;
        answer[from..to].to_string()
    }

    pub async fn stop_instance(&self, id: &str) {
        self.ec2
            .call("StopInstances", &[("InstanceId.1", id)])
            .await
            .unwrap();
    }

    pub async fn start_instance(&self, id: &str) {
        self.ec2
            .call("StartInstances", &[("InstanceId.1", id)])
            .await
            .unwrap();
    }

    /// The instance's state name (running, stopped, ...).
    pub async fn instance_state(&self, id: &str) -> String {
        let answer = self
            .ec2
            .call("DescribeInstances", &[("InstanceId.1", id)])
            .await
            .unwrap();
        let state = &answer[answer.find("<instanceState>").unwrap()..];
        let from = state.find("<name>").unwrap() + "<name>".len();
        let to = state.find("</name>").unwrap();
        state[from..to].to_string()
    }

    /// A role, tagged with `scope` if given; returns its name.
    pub async fn role(&self, scope: Option<&str>) -> String {
        let name = aws::unique("worker");
        let mut create = self
            .iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#);
        if let Some(s) = scope {
            create = create.tags(
                aws_sdk_iam::types::Tag::builder()
                    .key(SHUTDOWN_TAG)
                    .value(s)
                    .build()
                    .unwrap(),
            );
        }
        create.send().await.unwrap();
        name
    }

    /// The inline policies on a role.
    pub async fn role_policies(&self, name: &str) -> Vec<String> {
        self.iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .unwrap()
            .policy_names
    }

    /// The inline policies on a role, with their documents (decoded, as JSON).
    pub async fn inline_policies(&self, name: &str) -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        for policy in self.role_policies(name).await {
            let document = self
                .iam
                .get_role_policy()
                .role_name(name)
                .policy_name(&policy)
                .send()
                .await
                .unwrap()
                .policy_document;
            out.push((policy, policy_json(&document)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Puts an inline policy on a role, as anyone holding `iam:PutRolePolicy` may.
    pub async fn put_inline(&self, role: &str, policy: &str, document: &str) {
        self.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(policy)
            .policy_document(document)
            .send()
            .await
            .unwrap();
    }

    /// A customer managed policy named `name` (in this account); returns its ARN.
    pub async fn managed_policy(&self, name: &str, document: &str) -> String {
        self.iam
            .create_policy()
            .policy_name(name)
            .policy_document(document)
            .send()
            .await
            .unwrap()
            .policy
            .unwrap()
            .arn
            .unwrap()
    }

    pub async fn attach(&self, role: &str, policy_arn: &str) {
        self.iam
            .attach_role_policy()
            .role_name(role)
            .policy_arn(policy_arn)
            .send()
            .await
            .unwrap();
    }

    pub async fn detach(&self, role: &str, policy_arn: &str) {
        self.iam
            .detach_role_policy()
            .role_name(role)
            .policy_arn(policy_arn)
            .send()
            .await
            .unwrap();
    }

    /// The ARNs of the managed policies attached to a role, sorted.
    pub async fn attached_policies(&self, role: &str) -> Vec<String> {
        let mut arns: Vec<String> = self
            .iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap()
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_string))
            .collect();
        arns.sort();
        arns
    }

    /// Fails unless the emulator knows AWS's managed `AWSDenyAll`, which the shutdown of a role
    /// attaches: moto loads it only through `tests/moto/aws_managed.py` (see there), so a moto
    /// started without `tests/moto/server.py` lacks it.
    pub async fn ensure_deny_all(&self) {
        if let Err(e) = self.iam.get_policy().policy_arn(AWS_DENY_ALL).send().await {
            panic!(
                "moto does not know {AWS_DENY_ALL} ({e:?}): start it with tests/moto/server.py,                  which loads it (tests/moto/aws_managed.py)"
            );
        }
    }
}

/// The SDK configuration `sdk` in another region (moto keeps each region's resources apart).
pub fn in_region(sdk: &SdkConfig, region: &str) -> SdkConfig {
    sdk.to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .build()
}

/// An Auto Scaling group as read back: sizes and the processes suspended (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub suspended: Vec<String>,
}

/// Every text of `<field>` in `xml`, in order.
fn xml_all<'a>(xml: &'a str, field: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{field}>"), format!("</{field}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(from) = rest.find(&open) {
        let after = &rest[from + open.len()..];
        let to = after.find(&close).unwrap();
        out.push(after[..to].trim());
        rest = &after[to..];
    }
    out
}

impl Cloud {
    /// An Auto Scaling group (and its launch configuration), tagged with `scope` if given;
    /// returns its name.
    pub async fn group(&self, scope: Option<&str>, min: i32, max: i32, desired: i32) -> String {
        let name = aws::unique("asg");
        self.autoscaling
            .call(
                "CreateLaunchConfiguration",
                &[
                    ("LaunchConfigurationName", name.as_str()),
                    ("ImageId", IMAGE),
                    ("InstanceType", "t3.micro"),
                ],
            )
            .await
            .unwrap();
        let (min, max, desired) = (min.to_string(), max.to_string(), desired.to_string());
        let zone = format!("{}a", self.region);
        let mut params = vec![
            ("AutoScalingGroupName", name.as_str()),
            ("LaunchConfigurationName", name.as_str()),
            ("MinSize", min.as_str()),
            ("MaxSize", max.as_str()),
            ("DesiredCapacity", desired.as_str()),
            ("AvailabilityZones.member.1", zone.as_str()),
        ];
        if let Some(s) = scope {
            params.extend([
                ("Tags.member.1.Key", SHUTDOWN_TAG),
                ("Tags.member.1.Value", s),
                ("Tags.member.1.PropagateAtLaunch", "false"),
            ]);
        }
        self.autoscaling
            .call("CreateAutoScalingGroup", &params)
            .await
            .unwrap();
        name
    }

    /// Sets a group's minimum and desired capacity (as an operator, or a half-done restore).
    pub async fn resize(&self, group: &str, min: i32, desired: i32) {
        let (min, desired) = (min.to_string(), desired.to_string());
        self.autoscaling
            .call(
                "UpdateAutoScalingGroup",
                &[
                    ("AutoScalingGroupName", group),
                    ("MinSize", min.as_str()),
                    ("DesiredCapacity", desired.as_str()),
                ],
            )
            .await
            .unwrap();
    }

    pub async fn suspend(&self, group: &str, processes: &[&str]) {
        let names: Vec<String> = (1..=processes.len())
            .map(|i| format!("ScalingProcesses.member.{i}"))
            .collect();
        let mut params = vec![("AutoScalingGroupName", group)];
        params.extend(
            names
                .iter()
                .map(String::as_str)
                .zip(processes.iter().copied()),
        );
        self.autoscaling
            .call("SuspendProcesses", &params)
            .await
            .unwrap();
    }

    pub async fn group_state(&self, group: &str) -> Group {
        let answer = self
            .autoscaling
            .call(
                "DescribeAutoScalingGroups",
                &[("AutoScalingGroupNames.member.1", group)],
            )
            .await
            .unwrap();
        let number = |field: &str| xml_all(&answer, field)[0].parse().unwrap();
        let mut suspended: Vec<String> = xml_all(&answer, "ProcessName")
            .into_iter()
            .map(str::to_string)
            .collect();
        suspended.sort();
        Group {
            min: number("MinSize"),
            max: number("MaxSize"),
            desired: number("DesiredCapacity"),
            suspended,
        }
    }

    /// Registers a scalable target for an ECS service's desired count, suspended as
    /// `[dynamic in, dynamic out, scheduled]`.
    pub async fn scalable_target(&self, service: &str, min: i32, max: i32, suspended: [bool; 3]) {
        self.scaling
            .call(
                "RegisterScalableTarget",
                &serde_json::json!({
                    "ServiceNamespace": "ecs",
                    "ResourceId": ecs_resource_id(service),
                    "ScalableDimension": "ecs:service:DesiredCount",
                    "MinCapacity": min,
                    "MaxCapacity": max,
                    "SuspendedState": {
                        "DynamicScalingInSuspended": suspended[0],
                        "DynamicScalingOutSuspended": suspended[1],
                        "ScheduledScalingSuspended": suspended[2],
                    },
                }),
            )
            .await
            .unwrap();
    }

    /// The scalable target of an ECS service: `(min, max, [dynamic in, dynamic out, scheduled])`.
    pub async fn scalable(&self, service: &str) -> (i64, i64, [bool; 3]) {
        let answer = self
            .scaling
            .call(
                "DescribeScalableTargets",
                &serde_json::json!({
                    "ServiceNamespace": "ecs",
                    "ResourceIds": [ecs_resource_id(service)],
                }),
            )
            .await
            .unwrap();
        let target = &answer["ScalableTargets"][0];
        let state = &target["SuspendedState"];
        let flag = |name: &str| state[name].as_bool().unwrap_or(false);
        (
            target["MinCapacity"].as_i64().unwrap(),
            target["MaxCapacity"].as_i64().unwrap(),
            [
                flag("DynamicScalingInSuspended"),
                flag("DynamicScalingOutSuspended"),
                flag("ScheduledScalingSuspended"),
            ],
        )
    }
}

/// Application Auto Scaling's id of an ECS service: `service/<cluster>/<service>`.
fn ecs_resource_id(service_arn: &str) -> String {
    format!("service/{}", service_arn.split_once(":service/").unwrap().1)
}

/// AWS's managed deny-all policy, in the emulator's partition.
pub const AWS_DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

/// A policy document as IAM answers it (URL-encoded, RFC 3986), or as given, as JSON.
pub fn policy_json(document: &str) -> serde_json::Value {
    if let Ok(v) = serde_json::from_str(document) {
        return v;
    }
    let bytes = document.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    serde_json::from_slice(&out).unwrap()
}
