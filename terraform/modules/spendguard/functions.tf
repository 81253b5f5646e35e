# ------------------------------------------------------------------ functions

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each             = local.functions
  name                 = "${var.name}-${each.key}"
  assume_role_policy   = data.aws_iam_policy_document.assume_lambda.json
  permissions_boundary = var.permissions_boundary
  tags                 = local.tags
}

# The function's own calls, plus its logs, traces and failed events (its dead-letter queue or
# on-failure destination: the same queue).
resource "aws_iam_role_policy" "function" {
  for_each = local.functions
  name     = "${each.key}-least-privilege"
  role     = aws_iam_role.function[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        for sid, actions in local.permissions[each.key] : merge(
          { Sid = sid, Effect = "Allow", Action = actions, Resource = local.shared_resources[sid] },
          contains(keys(local.conditions), sid) ? { Condition = local.conditions[sid] } : {},
        )
        if length(local.shared_resources[sid]) > 0
      ],
      [
        { Sid = "Logs", Effect = "Allow", Action = ["logs:CreateLogStream", "logs:PutLogEvents"], Resource = "${aws_cloudwatch_log_group.function[each.key].arn}:*" },
        # X-Ray has no resource-level permissions
        { Sid = "Traces", Effect = "Allow", Action = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], Resource = "*" },
        { Sid = "DeadLetters", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = aws_sqs_queue.failed_events.arn },
      ],
    )
  })
}

resource "aws_cloudwatch_log_group" "function" {
  # checkov:skip=CKV_AWS_158: log lines carry no secrets (tested); the default encryption applies
  # checkov:skip=CKV_AWS_338: a year of logs costs more than it is worth here; retention is a variable
  for_each          = local.functions
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_lambda_function" "function" {
  # checkov:skip=CKV_AWS_117: calls only public AWS and provider APIs; a VPC adds NAT cost and nothing to protect
  # checkov:skip=CKV_AWS_115: key-guard, budget-check and budget-webhook reserve by variables (0 on small accounts); alert-fanout, daily-aggregate and usage-rollup (one invocation per stream shard) share the pool
  # checkov:skip=CKV_AWS_173: the environment holds names and ARNs, never secrets
  # checkov:skip=CKV_AWS_272: code signing needs a signing profile the operator owns; zips are built from this repository
  for_each         = local.functions
  function_name    = "${var.name}-${each.key}"
  role             = aws_iam_role.function[each.key].arn
  filename         = var.lambda_zip_dir == null ? null : local.zips[each.key]
  source_code_hash = var.lambda_zip_dir == null ? null : (fileexists(local.zips[each.key]) ? filebase64sha256(local.zips[each.key]) : null)
  s3_bucket        = var.lambda_s3_bucket
  s3_key           = var.lambda_s3_bucket == null ? null : "${var.lambda_s3_key_prefix}${each.value.binary}.zip"
  runtime          = "provided.al2023"
  architectures    = ["arm64"]
  handler          = "bootstrap"
  timeout          = each.value.timeout
  memory_size      = each.value.memory
  # -1 reserves nothing: a variable at 0 means that too (small accounts, docs/deploy.md)
  reserved_concurrent_executions = coalesce(each.value.reserved_concurrency, 0) > 0 ? each.value.reserved_concurrency : -1

  environment {
    # unset optional settings (null) are left out
    variables = merge(
      local.common_environment,
      { for k, v in each.value.environment : k => v if v != null },
    )
  }
  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.function[each.key].name
    application_log_level = "INFO"
    system_log_level      = "WARN"
  }
  tracing_config {
    mode = "Active"
  }
  # the functions with an on-failure destination (below) have no dead-letter queue as well:
  # each failed event would land in the queue twice
  dynamic "dead_letter_config" {
    for_each = each.value.async == null ? [aws_sqs_queue.failed_events.arn] : []
    content {
      target_arn = dead_letter_config.value
    }
  }
  depends_on = [aws_iam_role_policy.function, aws_secretsmanager_secret_version.alert_signing]

  lifecycle {
    # rather than Terraform's bare "no file exists" at plan time
    precondition {
      condition     = var.lambda_zip_dir == null ? true : fileexists(local.zips[each.key]) # (a conditional: || does not short-circuit before Terraform 1.12)
      error_message = "${each.key}: neither ${local.zip_dir}/${each.value.binary}.zip nor ${local.zip_dir}/${each.value.binary}/bootstrap.zip exists. Build the zips (scripts/release writes dist/<function>.zip; cargo lambda build --release --arm64 --output-format zip writes target/lambda/<function>/bootstrap.zip) or take a release's (docs/deploy.md)."
    }
  }
  tags = local.tags
}

# Asynchronous invocations (SNS, Scheduler) of key-guard, alert-fanout and budget-check: retries,
# maximum event age (local.functions; why each, in template.yaml), failed events to the queue.
resource "aws_lambda_function_event_invoke_config" "function" {
  for_each                     = { for k, f in local.functions : k => f.async if f.async != null }
  function_name                = aws_lambda_function.function[each.key].function_name
  maximum_retry_attempts       = each.value.retries
  maximum_event_age_in_seconds = each.value.max_age

  destination_config {
    on_failure {
      destination = aws_sqs_queue.failed_events.arn
    }
  }
}

# ------------------------------------------------------------------ triggers

data "aws_iam_policy_document" "assume_scheduler" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name                 = "${var.name}-scheduler"
  assume_role_policy   = data.aws_iam_policy_document.assume_scheduler.json
  permissions_boundary = var.permissions_boundary
  tags                 = local.tags
}

resource "aws_iam_role_policy" "scheduler" {
  name = "invoke-scheduled-functions"
  role = aws_iam_role.scheduler.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "Invoke", Effect = "Allow", Action = ["lambda:InvokeFunction"], Resource = distinct([for s in local.schedules : aws_lambda_function.function[s.function].arn]) },
      { Sid = "DeadLetters", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = aws_sqs_queue.failed_events.arn },
    ]
  })
}

resource "aws_scheduler_schedule" "schedule" {
  # checkov:skip=CKV_AWS_297: the input is a constant such as {"action":"flush_digests"}; a customer key protects nothing
  for_each            = local.schedules
  name                = "${var.name}-${each.key}"
  schedule_expression = each.value.expression

  flexible_time_window {
    mode = "OFF"
  }
  target {
    arn      = aws_lambda_function.function[each.value.function].arn
    role_arn = aws_iam_role.scheduler.arn
    input    = each.value.input
    retry_policy {
      maximum_retry_attempts       = 2
      maximum_event_age_in_seconds = each.value.max_age
    }
    dead_letter_config {
      arn = aws_sqs_queue.failed_events.arn
    }
  }
}

resource "aws_sns_topic_subscription" "subscription" {
  for_each      = local.subscriptions
  topic_arn     = each.value.topic
  protocol      = "lambda"
  endpoint      = aws_lambda_function.function[each.value.function].arn
  filter_policy = each.value.filter
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.failed_events.arn
  })
}

resource "aws_lambda_permission" "sns" {
  for_each      = local.subscriptions
  function_name = aws_lambda_function.function[each.value.function].function_name
  action        = "lambda:InvokeFunction"
  principal     = "sns.amazonaws.com"
  source_arn    = each.value.topic
}

# Secrets Manager invokes key-guard for rotations of this account's secrets only.
resource "aws_lambda_permission" "rotation" {
  function_name  = aws_lambda_function.function["key-guard"].function_name
  action         = "lambda:InvokeFunction"
  principal      = "secretsmanager.amazonaws.com"
  source_account = local.account
}

resource "aws_lambda_function_url" "webhook" {
  # checkov:skip=CKV_AWS_258: Pub/Sub push and SNS cannot SigV4-sign; every request is verified in code
  function_name      = aws_lambda_function.function["budget-webhook"].function_name
  authorization_type = "NONE"
}

# A public Function URL needs both permissions (since October 2025), the second limited to
# calls that come through the URL.
resource "aws_lambda_permission" "webhook_url" {
  # checkov:skip=CKV_AWS_301: the webhook is public by design (Pub/Sub push, SNS, applications); requests are verified in code
  function_name          = aws_lambda_function.function["budget-webhook"].function_name
  action                 = "lambda:InvokeFunctionUrl"
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "webhook_url_invoke" {
  # checkov:skip=CKV_AWS_301: the webhook is public by design (Pub/Sub push, SNS, applications); requests are verified in code
  function_name            = aws_lambda_function.function["budget-webhook"].function_name
  action                   = "lambda:InvokeFunction"
  principal                = "*"
  invoked_via_function_url = true
}

# pending usage (ADR 031): inserts and changes of `P#` items, about a second batched, to the
# roll-up's own function (not budget-check: its dead man's switch, reservation and errors alarm
# are the scheduled check's); the handler names the records of leaves it could not roll up
# (partial batch response), those are retried, then sent to the queue
resource "aws_lambda_event_source_mapping" "pending_usage" {
  function_name                      = aws_lambda_function.function["usage-rollup"].arn
  event_source_arn                   = aws_dynamodb_table.state.stream_arn
  starting_position                  = "TRIM_HORIZON"
  batch_size                         = 1000
  maximum_batching_window_in_seconds = 1
  bisect_batch_on_function_error     = true
  function_response_types            = ["ReportBatchItemFailures"]
  maximum_retry_attempts             = 5
  maximum_record_age_in_seconds      = 3600
  destination_config {
    on_failure {
      destination_arn = aws_sqs_queue.failed_events.arn
    }
  }
  filter_criteria {
    filter {
      pattern = jsonencode({ eventName = ["INSERT", "MODIFY"], dynamodb = { Keys = { SK = { S = [{ prefix = "P#" }] } } } })
    }
  }
}

# ------------------------------------------------------------------ alarms and dashboard

resource "aws_cloudwatch_metric_alarm" "failed_events" {
  alarm_name          = "${var.name}-failed-events"
  alarm_description   = "An event spendguard could not process is waiting in the dead-letter queue (runbook: docs/deploy.md)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.failed_events.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.operator.arn]
  ok_actions          = [aws_sns_topic.operator.arn]
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "pending_usage_lag" {
  alarm_name          = "${var.name}-pending-usage-lag"
  alarm_description   = "Usage is not being rolled up into ancestor and dimension budgets (stream iterator over 5 minutes old): roll up by hand (runbook: docs/deploy.md)."
  namespace           = "AWS/Lambda"
  metric_name         = "IteratorAge"
  dimensions          = { FunctionName = aws_lambda_function.function["usage-rollup"].function_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 300000
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.operator.arn]
  ok_actions          = [aws_sns_topic.operator.arn]
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "pending_usage_age" {
  alarm_name          = "${var.name}-pending-usage-age"
  alarm_description   = "Usage had waited over 2 minutes to be rolled up at every check of an hour (the stream is not rolling it up, or a backlog grows): check usage-rollup's event source mapping (runbook: docs/deploy.md)."
  namespace           = "spendguard"
  metric_name         = "PendingUsageAge"
  dimensions          = { FunctionName = aws_lambda_function.function["budget-check"].function_name }
  statistic           = "Minimum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = 120
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.operator.arn]
  ok_actions          = [aws_sns_topic.operator.arn]
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each            = local.functions
  alarm_name          = "${var.name}-${each.key}-errors"
  alarm_description   = each.value.errors_alarm.description
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.function[each.key].function_name }
  statistic           = "Sum"
  period              = each.value.errors_alarm.period
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.operator.arn]
  ok_actions          = [aws_sns_topic.operator.arn]
  tags                = local.tags
}

# throttled invocations: a reservation (or the account's pool) is exhausted
resource "aws_cloudwatch_metric_alarm" "throttles" {
  for_each            = local.functions
  alarm_name          = "${var.name}-${each.key}-throttles"
  alarm_description   = "${each.key} was throttled: its reserved concurrency or the account's pool is exhausted; events wait and are retried, URL requests get 429 (runbook: docs/deploy.md)."
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.function[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.operator.arn]
  ok_actions          = [aws_sns_topic.operator.arn]
  tags                = local.tags
}

# the Function URL's own metric: counts the webhook's 503s (a normal response, so never an
# Errors) as well as crashes and timeouts
resource "aws_cloudwatch_metric_alarm" "webhook_5xx" {
  alarm_name          = "${var.name}-budget-webhook-5xx"
  alarm_description   = "budget-webhook answered 5xx through its Function URL (its own 503s when the store is unavailable, crashes, timeouts): usage or budget signals are not being counted until their senders retry."
  namespace           = "AWS/Lambda"
  metric_name         = "Url5xxCount"
  dimensions          = { FunctionName = aws_lambda_function.function["budget-webhook"].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.operator.arn]
  ok_actions          = [aws_sns_topic.operator.arn]
  tags                = local.tags
}

# the dead man's switch: no completed budget-check run for 15 minutes (none started, or every
# one failed) means no budget is being evaluated; missing data is breaching
resource "aws_cloudwatch_metric_alarm" "budget_check_silent" {
  alarm_name          = "${var.name}-budget-check-silent"
  alarm_description   = "budget-check has not completed a run for 15 minutes: budgets are not being evaluated (schedule disabled, throttled or failing)."
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.operator.arn]
  ok_actions          = [aws_sns_topic.operator.arn]

  metric_query {
    id          = "invocations"
    return_data = false
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Invocations"
      dimensions  = { FunctionName = aws_lambda_function.function["budget-check"].function_name }
      period      = 900
      stat        = "Sum"
    }
  }

  metric_query {
    id          = "errors"
    return_data = false
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.function["budget-check"].function_name }
      period      = 900
      stat        = "Sum"
    }
  }

  metric_query {
    id          = "completed"
    label       = "completed budget-check runs"
    expression  = "invocations - FILL(errors, 0)"
    return_data = true
  }
  tags = local.tags
}

resource "aws_cloudwatch_dashboard" "spend" {
  dashboard_name = "${var.name}-spend"
  dashboard_body = replace(file("${path.module}/dashboard.json"), "$${AWS::Region}", data.aws_region.current.region)
}
