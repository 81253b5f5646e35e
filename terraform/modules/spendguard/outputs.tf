# template.yaml has the same outputs, in CamelCase, one per function where these are maps
# (tests/deploy/test_parity.py compares the names and requires a description on each).

output "webhook_url" {
  description = "budget-webhook's HTTPS endpoint (append /usage, /gcp/pubsub, /sns, /status)."
  value       = aws_lambda_function_url.webhook.function_url
}

output "alerts_topic_arn" {
  description = "The topic spendguard's AlertEvents go through (signed; only spendguard's own roles may publish)."
  value       = aws_sns_topic.alerts.arn
}

output "budgets_topic_arn" {
  description = "Point AWS Budgets notifications here."
  value       = aws_sns_topic.budgets.arn
}

output "operator_topic_arn" {
  description = "Alarms, in ALARM and back to OK; operator_email subscribes an address, subscribe chat or a pager too."
  value       = aws_sns_topic.operator.arn
}

output "failed_events_queue_url" {
  description = "The dead-letter queue (events no function could process; docs/deploy.md says what to do with them)."
  value       = aws_sqs_queue.failed_events.id
}

output "failed_events_queue_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.failed_events.arn
}

output "alert_signing_key_arn" {
  description = "The secret AlertEvents are signed with (generated; rotate by hand, docs/deploy.md)."
  value       = aws_secretsmanager_secret.alert_signing.arn
}

output "state_table_name" {
  description = "The DynamoDB table holding budgets, spend, kill switches and the audit log (SPENDGUARD_TABLE for the CLI)."
  value       = aws_dynamodb_table.state.name
}

output "state_table_arn" {
  description = "ARN of the state table (for an operator's IAM policy)."
  value       = aws_dynamodb_table.state.arn
}

output "dashboard_name" {
  description = "The CloudWatch dashboard of spend against budgets."
  value       = aws_cloudwatch_dashboard.spend.dashboard_name
}

output "function_names" {
  description = "Each function's name, by function (budget-check, alert-fanout, key-guard, budget-webhook, daily-aggregate, usage-rollup)."
  value       = { for k, f in aws_lambda_function.function : k => f.function_name }
}

output "function_arns" {
  description = "Each function's ARN, by function; key-guard's is the --rotation-lambda-arn of `aws secretsmanager rotate-secret` (docs/deploy.md)."
  value       = { for k, f in aws_lambda_function.function : k => f.arn }
}

output "role_arns" {
  description = "Each function's IAM role ARN, by function."
  value       = { for k, r in aws_iam_role.function : k => r.arn }
}
