output "webhook_url" {
  description = "budget-webhook's HTTPS endpoint (append /usage, /gcp/pubsub, /sns, /status)."
  value       = aws_lambda_function_url.webhook.function_url
}

output "alerts_topic_arn" {
  value = aws_sns_topic.alerts.arn
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

output "alert_signing_key_arn" {
  description = "The secret AlertEvents are signed with (generated; rotate by hand, docs/deploy.md)."
  value       = aws_secretsmanager_secret.alert_signing.arn
}

output "state_table_name" {
  value = aws_dynamodb_table.state.name
}

output "function_names" {
  value = { for k, f in aws_lambda_function.function : k => f.function_name }
}
