//! A recording proxy in front of moto: every AWS request a hosted function makes passes through
//! it and is kept as a call the Python baseline can make again with boto3 (service from the
//! SigV4 credential scope, operation and parameters from the wire).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

/// One AWS request as sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub service: String,
    pub target: Option<String>,
    pub path: String,
    pub body: String,
}

pub struct RecordingProxy {
    pub url: String,
    calls: Arc<Mutex<Vec<Recorded>>>,
    server: tokio::task::JoinHandle<()>,
}

/// `.../<date>/<region>/<service>/aws4_request` in the Authorization header.
fn service_of(authorization: &str) -> String {
    authorization
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split(',').next())
        .and_then(|scope| scope.split('/').nth(3))
        .unwrap_or("unknown")
        .to_string()
}

impl RecordingProxy {
    pub async fn start(upstream: String) -> RecordingProxy {
        let calls: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = calls.clone();
        let client = reqwest::Client::new();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let (log, client, upstream) = (log.clone(), client.clone(), upstream.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                log.lock().unwrap().push(Recorded {
                    service: service_of(&header("authorization").unwrap_or_default()),
                    target: header("x-amz-target"),
                    path: parts.uri.path().to_string(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut forward =
                    client.request(parts.method.clone(), format!("{upstream}{path_and_query}"));
                for (name, value) in &parts.headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name, value);
                    }
                }
                let bad_gateway = |e: String| {
                    Response::builder()
                        .status(StatusCode::BAD_GATEWAY)
                        .body(Body::from(e))
                        .unwrap()
                };
                let answer = match forward.body(body).send().await {
                    Ok(answer) => answer,
                    Err(e) => return bad_gateway(e.to_string()),
                };
                let mut response = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    if name != "content-length" && name != "transfer-encoding" {
                        response = response.header(name, value);
                    }
                }
                match answer.bytes().await {
                    Ok(bytes) => response.body(Body::from(bytes)).unwrap(),
                    Err(e) => bad_gateway(e.to_string()),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("recording proxy");
        });
        RecordingProxy { url, calls, server }
    }

    /// The calls recorded since the last `take`.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The call as boto3 makes it: `{"service", "operation", "params"}`. JSON protocols carry the
/// parameters as they are; query protocols (SNS, IAM) as flat form fields, with SNS's message
/// attributes folded back into their map; SES v2 `SendEmail` is the one REST call used.
pub fn boto3_call(call: &Recorded) -> Result<Value, String> {
    if let Some(target) = &call.target {
        let operation = target.rsplit('.').next().unwrap_or(target);
        let params: Value = serde_json::from_str(&call.body)
            .map_err(|e| format!("{target}: body is not JSON: {e}"))?;
        // boto3 names the Resource Groups Tagging API client by its full name, not its signing name
        let service = match call.service.as_str() {
            "tagging" => "resourcegroupstaggingapi",
            other => other,
        };
        return Ok(json!({"service": service, "operation": operation, "params": params}));
    }
    if call.service == "ses" && call.path == "/v2/email/outbound-emails" {
        let params: Value = serde_json::from_str(&call.body)
            .map_err(|e| format!("SendEmail: body is not JSON: {e}"))?;
        return Ok(json!({"service": "sesv2", "operation": "SendEmail", "params": params}));
    }
    let mut operation = None;
    let mut params = Map::new();
    let mut attributes: Map<String, Value> = Map::new();
    let mut attribute_names: Vec<(String, String)> = Vec::new();
    let mut attribute_values: Vec<(String, String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(call.body.as_bytes()) {
        let (name, value) = (name.into_owned(), value.into_owned());
        match name.as_str() {
            "Action" => operation = Some(value),
            "Version" => {}
            _ if name.starts_with("MessageAttributes.entry.") => {
                let rest = &name["MessageAttributes.entry.".len()..];
                let (index, field) = rest.split_once('.').unwrap_or((rest, ""));
                match field {
                    "Name" => attribute_names.push((index.to_string(), value)),
                    "Value.DataType" | "Value.StringValue" => attribute_values.push((
                        index.to_string(),
                        field["Value.".len()..].to_string(),
                        value,
                    )),
                    _ => return Err(format!("{}: unexpected field {name}", call.service)),
                }
            }
            _ if name.contains(".member.") => {
                let segments: Vec<&str> = name.split('.').collect();
                insert_member(&mut params, &segments, value)
                    .map_err(|e| format!("{}: nested query field {name}: {e}", call.service))?;
            }
            _ if name.contains('.') => {
                return Err(format!(
                    "{}: nested query field {name} has no boto3 form here",
                    call.service
                ));
            }
            _ => {
                params.insert(name, Value::String(value));
            }
        }
    }
    for (index, attribute) in attribute_names {
        let mut value = Map::new();
        for (i, field, v) in &attribute_values {
            if *i == index {
                value.insert(field.clone(), Value::String(v.clone()));
            }
        }
        attributes.insert(attribute, Value::Object(value));
    }
    if !attributes.is_empty() {
        params.insert("MessageAttributes".into(), Value::Object(attributes));
    }
    let operation = operation.ok_or_else(|| {
        format!(
            "{} {}: neither a JSON target nor a query Action",
            call.service, call.path
        )
    })?;
    Ok(json!({"service": call.service, "operation": operation, "params": params}))
}

/// A Query protocol list field (`Filters.member.1.Values.member.2=v`) into its boto3 form
/// (`Filters=[{"Values": [.., "v"]}]`).
fn insert_member(
    object: &mut Map<String, Value>,
    segments: &[&str],
    value: String,
) -> Result<(), String> {
    match segments {
        [field] => {
            object.insert((*field).to_string(), Value::String(value));
            Ok(())
        }
        [field, "member", index, rest @ ..] => {
            let index: usize = index
                .parse()
                .ok()
                .filter(|i| *i >= 1)
                .ok_or_else(|| format!("list index {index}"))?;
            let list = object
                .entry((*field).to_string())
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
                .ok_or("a list and a value at once")?;
            while list.len() < index {
                list.push(if rest.is_empty() {
                    Value::Null
                } else {
                    Value::Object(Map::new())
                });
            }
            if rest.is_empty() {
                list[index - 1] = Value::String(value);
                Ok(())
            } else {
                let element = list[index - 1]
                    .as_object_mut()
                    .ok_or("a value and a structure at once")?;
                insert_member(element, rest, value)
            }
        }
        [field, rest @ ..] => {
            let inner = object
                .entry((*field).to_string())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or("a value and a structure at once")?;
            insert_member(inner, rest, value)
        }
        [] => Err("an empty name".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(service: &str, target: Option<&str>, path: &str, body: &str) -> Recorded {
        Recorded {
            service: service.into(),
            target: target.map(str::to_string),
            path: path.into(),
            body: body.into(),
        }
    }

    #[test]
    fn the_service_comes_from_the_credential_scope() {
        assert_eq!(
            service_of(
                "AWS4-HMAC-SHA256 Credential=testing/20261123/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00"
            ),
            "dynamodb"
        );
        assert_eq!(service_of("Bearer x"), "unknown");
    }

    #[test]
    fn the_tagging_api_is_replayed_with_boto3s_client_name() {
        let call = recorded(
            "tagging",
            Some("ResourceGroupsTaggingAPI_20170126.GetResources"),
            "/",
            r#"{"TagFilters":[{"Key":"spendguard:shutdown"}]}"#,
        );
        assert_eq!(
            boto3_call(&call).unwrap(),
            json!({"service": "resourcegroupstaggingapi", "operation": "GetResources", "params": {"TagFilters": [{"Key": "spendguard:shutdown"}]}})
        );
    }

    #[test]
    fn json_protocol_calls_keep_their_parameters() {
        let call = recorded(
            "dynamodb",
            Some("DynamoDB_20120810.GetItem"),
            "/",
            r#"{"TableName":"t","Key":{"PK":{"S":"a"}}}"#,
        );
        assert_eq!(
            boto3_call(&call).unwrap(),
            json!({"service": "dynamodb", "operation": "GetItem", "params": {"TableName": "t", "Key": {"PK": {"S": "a"}}}})
        );
    }

    #[test]
    fn sns_publish_gets_its_message_attributes_back_as_a_map() {
        let body = "Action=Publish&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A1%3At&Message=%7B%7D\
            &MessageAttributes.entry.1.Name=severity&MessageAttributes.entry.1.Value.DataType=String\
            &MessageAttributes.entry.1.Value.StringValue=critical\
            &MessageAttributes.entry.2.Name=actions&MessageAttributes.entry.2.Value.DataType=String.Array\
            &MessageAttributes.entry.2.Value.StringValue=%5B%22notify%22%5D";
        assert_eq!(
            boto3_call(&recorded("sns", None, "/", body)).unwrap(),
            json!({"service": "sns", "operation": "Publish", "params": {
                "TopicArn": "arn:aws:sns:us-east-1:1:t",
                "Message": "{}",
                "MessageAttributes": {
                    "severity": {"DataType": "String", "StringValue": "critical"},
                    "actions": {"DataType": "String.Array", "StringValue": "[\"notify\"]"},
                },
            }})
        );
    }

    #[test]
    fn ses_v2_send_email_is_named_for_boto3() {
        let call = recorded(
            "ses",
            None,
            "/v2/email/outbound-emails",
            r#"{"FromEmailAddress":"a@b"}"#,
        );
        assert_eq!(
            boto3_call(&call).unwrap(),
            json!({"service": "sesv2", "operation": "SendEmail", "params": {"FromEmailAddress": "a@b"}})
        );
    }

    #[test]
    fn what_cannot_be_made_again_is_refused_by_name() {
        // EC2's lists are not `member` lists, and boto3 names them otherwise (`Filters`)
        let nested = recorded("ec2", None, "/", "Action=DescribeInstances&Filter.1.Name=a");
        assert!(boto3_call(&nested).unwrap_err().contains("Filter.1.Name"));
        let unknown = recorded("s3", None, "/bucket/key", "");
        assert!(boto3_call(&unknown).unwrap_err().contains("neither"));
        let broken = recorded("dynamodb", Some("DynamoDB_20120810.PutItem"), "/", "{");
        assert!(boto3_call(&broken).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn query_lists_become_boto3_lists() {
        let call = recorded(
            "autoscaling",
            None,
            "/",
            "Action=DescribeAutoScalingGroups&Version=2011-01-01&Filters.member.1.Name=tag-key&Filters.member.1.Values.member.1=a&Filters.member.1.Values.member.2=b",
        );
        assert_eq!(
            boto3_call(&call).unwrap(),
            json!({"service": "autoscaling", "operation": "DescribeAutoScalingGroups",
                   "params": {"Filters": [{"Name": "tag-key", "Values": ["a", "b"]}]}})
        );
    }
}
