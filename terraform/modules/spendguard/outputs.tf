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
  description = "Alarms; subscribe your e-mail or chat."
  value       = aws_sns_topic.operator.arn
}

output "state_table_name" {
  value = aws_dynamodb_table.state.name
}

output "function_names" {
  value = { for k, f in aws_lambda_function.function : k => f.function_name }
}
