//! What scales a stopped resource out again: an Auto Scaling group (its sizes and the
//! processes that launch), and an ECS service's scalable target in Application Auto Scaling.

use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};
use serde_json::{Value, json};

use spendguard_app::ports::shutdown::ShutdownError;
use spendguard_domain::resources::{
    GROUP_PROCESSES, Resource, ResourceKind, ResourceState, SHUTDOWN_TAG, Scaling,
};
use spendguard_domain::scope::Scope;

use super::signed::{ApplicationAutoScaling, AutoScalingQuery};

/// An Auto Scaling group as DescribeAutoScalingGroups answers it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Group {
    arn: String,
    min_size: i32,
    desired_capacity: i32,
    /// Every suspended process, spendguard's or not.
    suspended: Vec<String>,
    tags: Vec<(String, String)>,
}

impl Group {
    fn state(&self) -> ResourceState {
        ResourceState::Group {
            min_size: self.min_size,
            desired_capacity: self.desired_capacity,
            suspended: GROUP_PROCESSES
                .iter()
                .filter(|p| self.suspended.iter().any(|s| s == *p))
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

/// The groups tagged `spendguard:shutdown` in the region: the tagging API does not list Auto
/// Scaling groups (AWS: "GetResources ... not supported"), their own API filters by tag key.
pub(super) async fn tagged_groups(api: &AutoScalingQuery) -> Result<Vec<Resource>, ShutdownError> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = vec![
            ("Filters.member.1.Name", "tag-key"),
            ("Filters.member.1.Values.member.1", SHUTDOWN_TAG),
            ("MaxRecords", "100"),
        ];
        if let Some(t) = &token {
            params.push(("NextToken", t));
        }
        let answer = api.call("DescribeAutoScalingGroups", &params).await?;
        let (groups, next) = groups(&answer)?;
        for group in groups {
            let value = group.tags.iter().find(|(k, _)| k == SHUTDOWN_TAG);
            match value.and_then(|(_, v)| Scope::parse(v).ok()) {
                Some(scope) => found.push(Resource {
                    kind: ResourceKind::AutoScalingGroup,
                    id: group.arn,
                    scope,
                }),
                None => tracing::warn!(
                    resource = group.arn,
                    "the {SHUTDOWN_TAG} tag names no scope: left alone"
                ),
            }
        }
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(found);
        }
    }
}

/// The group's name, from its ARN (`...:autoScalingGroupName/<name>`).
fn group_name(arn: &str) -> &str {
    arn.rsplit_once("autoScalingGroupName/")
        .map_or(arn, |(_, name)| name)
}

pub(super) async fn group_state(
    api: &AutoScalingQuery,
    arn: &str,
) -> Result<ResourceState, ShutdownError> {
    let answer = api
        .call(
            "DescribeAutoScalingGroups",
            &[("AutoScalingGroupNames.member.1", group_name(arn))],
        )
        .await?;
    let (groups, _) = groups(&answer)?;
    groups.first().map(Group::state).ok_or_else(|| {
        ShutdownError(format!(
            "autoscaling:DescribeAutoScalingGroups: {arn} not found"
        ))
    })
}

/// Suspends what `to` names of [`GROUP_PROCESSES`], sets the sizes, then resumes the rest of
/// them: a stop suspends before it shrinks the group, a restore resizes before it lets it
/// launch. Processes outside that list are never touched.
pub(super) async fn set_group(
    api: &AutoScalingQuery,
    arn: &str,
    to: &ResourceState,
) -> Result<(), ShutdownError> {
    let ResourceState::Group {
        min_size,
        desired_capacity,
        suspended,
    } = to
    else {
        return Err(ShutdownError(format!(
            "an Auto Scaling group cannot be set to {to}"
        )));
    };
    let name = group_name(arn);
    let (suspend, resume): (Vec<&str>, Vec<&str>) = GROUP_PROCESSES
        .iter()
        .partition(|p| suspended.iter().any(|s| s == *p));
    // an empty list would mean every process: never sent
    if !suspend.is_empty() {
        processes(api, "SuspendProcesses", name, &suspend).await?;
    }
    let (min, desired) = (min_size.to_string(), desired_capacity.to_string());
    api.call(
        "UpdateAutoScalingGroup",
        &[
            ("AutoScalingGroupName", name),
            ("MinSize", &min),
            ("DesiredCapacity", &desired),
        ],
    )
    .await?;
    if !resume.is_empty() {
        processes(api, "ResumeProcesses", name, &resume).await?;
    }
    Ok(())
}

async fn processes(
    api: &AutoScalingQuery,
    action: &str,
    group: &str,
    names: &[&str],
) -> Result<(), ShutdownError> {
    let keys: Vec<String> = (1..=names.len())
        .map(|i| format!("ScalingProcesses.member.{i}"))
        .collect();
    let mut params = vec![("AutoScalingGroupName", group)];
    params.extend(keys.iter().map(String::as_str).zip(names.iter().copied()));
    api.call(action, &params).await.map(|_| ())
}

/// The groups of a DescribeAutoScalingGroups answer, and its NextToken.
fn groups(xml: &str) -> Result<(Vec<Group>, Option<String>), ShutdownError> {
    let bad = |e: aws_smithy_xml::decode::XmlDecodeError| {
        ShutdownError(format!(
            "autoscaling:DescribeAutoScalingGroups: unreadable answer: {e}"
        ))
    };
    let mut doc = Document::new(xml);
    let mut root = doc.root_element().map_err(bad)?;
    let mut out = Vec::new();
    let mut next = None;
    while let Some(mut result) = root.next_tag() {
        if !result.start_el().matches("DescribeAutoScalingGroupsResult") {
            continue;
        }
        while let Some(mut field) = result.next_tag() {
            if field.start_el().matches("NextToken") {
                next = Some(try_data(&mut field).map_err(bad)?.into_owned());
            } else if field.start_el().matches("AutoScalingGroups") {
                while let Some(mut member) = field.next_tag() {
                    out.push(group(&mut member).map_err(bad)?);
                }
            }
        }
    }
    Ok((out, next))
}

fn group(member: &mut ScopedDecoder) -> Result<Group, aws_smithy_xml::decode::XmlDecodeError> {
    let number = |text: &str| {
        text.trim().parse::<i32>().map_err(|e| {
            aws_smithy_xml::decode::XmlDecodeError::custom(format!("a size `{text}`: {e}"))
        })
    };
    let mut group = Group::default();
    while let Some(mut field) = member.next_tag() {
        let name = field.start_el().local().to_string();
        match name.as_str() {
            "AutoScalingGroupARN" => group.arn = try_data(&mut field)?.into_owned(),
            "MinSize" => group.min_size = number(&try_data(&mut field)?)?,
            "DesiredCapacity" => group.desired_capacity = number(&try_data(&mut field)?)?,
            "SuspendedProcesses" | "Tags" => {
                while let Some(mut item) = field.next_tag() {
                    let mut pair = (String::new(), String::new());
                    while let Some(mut part) = item.next_tag() {
                        let part_name = part.start_el().local().to_string();
                        match part_name.as_str() {
                            "ProcessName" | "Key" => pair.0 = try_data(&mut part)?.into_owned(),
                            "Value" => pair.1 = try_data(&mut part)?.into_owned(),
                            _ => {}
                        }
                    }
                    if name == "Tags" {
                        group.tags.push(pair);
                    } else {
                        group.suspended.push(pair.0);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(group)
}

/// Application Auto Scaling's id of an ECS service (long ARN format): `service/<cluster>/<name>`.
fn ecs_resource_id(service_arn: &str) -> Result<String, ShutdownError> {
    super::ecs_cluster(service_arn)?;
    let path = service_arn.split_once(":service/").map_or("", |(_, p)| p);
    Ok(format!("service/{path}"))
}

/// The ECS service's scalable target (its desired count), if it has one.
pub(super) async fn service_scaling(
    api: &ApplicationAutoScaling,
    service_arn: &str,
) -> Result<Option<Scaling>, ShutdownError> {
    let answer = api
        .call(
            "DescribeScalableTargets",
            &json!({
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceIds": [ecs_resource_id(service_arn)?],
            }),
        )
        .await?;
    let Some(target) = answer["ScalableTargets"].as_array().and_then(|t| t.first()) else {
        return Ok(None);
    };
    let min_capacity = target["MinCapacity"]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| {
            ShutdownError(format!(
                "application-autoscaling:DescribeScalableTargets: no MinCapacity for {service_arn}"
            ))
        })?;
    // absent (or null) is not suspended, as AWS defaults them
    let flag = |name: &str| target["SuspendedState"][name].as_bool().unwrap_or(false);
    Ok(Some(Scaling {
        min_capacity,
        dynamic_in_suspended: flag("DynamicScalingInSuspended"),
        dynamic_out_suspended: flag("DynamicScalingOutSuspended"),
        scheduled_suspended: flag("ScheduledScalingSuspended"),
    }))
}

/// Registers the service's existing scalable target again with `scaling`: its maximum and
/// role are left as they are; every suspension is named, so none is left to a default.
pub(super) async fn set_service_scaling(
    api: &ApplicationAutoScaling,
    service_arn: &str,
    scaling: &Scaling,
) -> Result<(), ShutdownError> {
    let request: Value = json!({
        "ServiceNamespace": "ecs",
        "ScalableDimension": "ecs:service:DesiredCount",
        "ResourceId": ecs_resource_id(service_arn)?,
        "MinCapacity": scaling.min_capacity,
        "SuspendedState": {
            "DynamicScalingInSuspended": scaling.dynamic_in_suspended,
            "DynamicScalingOutSuspended": scaling.dynamic_out_suspended,
            "ScheduledScalingSuspended": scaling.scheduled_suspended,
        },
    });
    api.call("RegisterScalableTarget", &request)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_read_with_its_tags_and_only_spendguard_s_processes_count() {
        let answer = r#"<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
          <DescribeAutoScalingGroupsResult>
            <AutoScalingGroups>
              <member>
                <AutoScalingGroupName>web</AutoScalingGroupName>
                <AutoScalingGroupARN>arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:u-1:autoScalingGroupName/web</AutoScalingGroupARN>
                <MinSize>1</MinSize><MaxSize>4</MaxSize><DesiredCapacity>2</DesiredCapacity>
                <Instances><member><InstanceId>i-1</InstanceId></member></Instances>
                <SuspendedProcesses>
                  <member><ProcessName>HealthCheck</ProcessName><SuspensionReason>x</SuspensionReason></member>
                  <member><ProcessName>Launch</ProcessName><SuspensionReason>y</SuspensionReason></member>
                </SuspendedProcesses>
                <Tags>
                  <member><ResourceId>web</ResourceId><Key>team</Key><Value>web</Value></member>
                  <member><ResourceId>web</ResourceId><Key>spendguard:shutdown</Key><Value>aws/web</Value></member>
                </Tags>
              </member>
            </AutoScalingGroups>
            <NextToken>web</NextToken>
          </DescribeAutoScalingGroupsResult>
        </DescribeAutoScalingGroupsResponse>"#;
        let (read, next) = groups(answer).unwrap();
        assert_eq!(next.as_deref(), Some("web"));
        assert_eq!(read.len(), 1);
        assert_eq!(group_name(&read[0].arn), "web");
        assert_eq!(read[0].tags[1], (SHUTDOWN_TAG.into(), "aws/web".into()));
        assert_eq!(
            read[0].state(),
            ResourceState::Group {
                min_size: 1,
                desired_capacity: 2,
                suspended: vec!["Launch".into()],
            }
        );
        assert!(groups("<nope").is_err());
    }

    #[test]
    fn a_service_s_scalable_target_is_named_by_its_cluster_and_service() {
        assert_eq!(
            ecs_resource_id("arn:aws:ecs:eu-west-1:123456789012:service/prod/api").unwrap(),
            "service/prod/api"
        );
        assert!(ecs_resource_id("arn:aws:ecs:eu-west-1:123456789012:service/api").is_err());
    }
}
