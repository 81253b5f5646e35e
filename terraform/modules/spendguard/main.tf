data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account        = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  admin_key_arns = compact([var.openai_admin_key_arn, var.anthropic_admin_key_arn])
  cost_explorer  = var.cost_explorer ? "enabled" : "disabled"
  # the alarms through fan-out too (operator_channels; docs/deploy.md, ADR 025)
  operator_route = length(var.operator_channels) > 0

  # every taggable resource carries these: the caller's tags, and which deployment it belongs to
  # (template.yaml tags the same resources; tests/deploy/test_parity.py checks both)
  tags = merge(var.tags, { "spendguard:deployment" = var.name })

  # the functions' code, by binary (usage-rollup runs budget-check's): <binary>.zip
  # (scripts/release) or <binary>/bootstrap.zip (cargo lambda build --output-format zip) in
  # lambda_zip_dir, or <prefix><binary>.zip in S3
  zip_dir = var.lambda_zip_dir == null ? "" : var.lambda_zip_dir # (error messages are evaluated with S3 too)
  zips = var.lambda_zip_dir == null ? {} : {
    for f, spec in local.functions : f => (
      fileexists("${var.lambda_zip_dir}/${spec.binary}.zip") ? "${var.lambda_zip_dir}/${spec.binary}.zip" : "${var.lambda_zip_dir}/${spec.binary}/bootstrap.zip"
    )
  }

  # What each function may call (literal lists: tests/deploy/test_parity.py compares them with
  # template.yaml), and on what. A statement whose resources are empty is left out.
  permissions = {
    "budget-check" = {
      State           = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:TransactWriteItems"]
      PublishAlerts   = ["sns:Publish"]
      ReadBudgets     = ["budgets:ViewBudget"]
      CostExplorer    = ["ce:GetCostAndUsage"]
      AdminKeys       = ["secretsmanager:GetSecretValue"]
      AlertSigningKey = ["secretsmanager:GetSecretValue"]
      # the leaves with pending usage, which the scheduled check rolls up first (ADR 031)
      PendingIndex = ["dynamodb:Query"]
    }
    "alert-fanout" = {
      State           = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
      ChannelSecrets  = ["secretsmanager:GetSecretValue"]
      Email           = ["ses:SendEmail"]
      AlertSigningKey = ["secretsmanager:GetSecretValue"]
    }
    "key-guard" = {
      State                 = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:TransactWriteItems"]
      GuardedKeys           = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage", "secretsmanager:RotateSecret"]
      AdminKeys             = ["secretsmanager:GetSecretValue"]
      NewSecrets            = ["secretsmanager:GetRandomPassword"]
      IamAccessKeys         = ["iam:ListAccessKeys", "iam:UpdateAccessKey"]
      IamUserCredentials    = ["iam:ListServiceSpecificCredentials", "iam:UpdateServiceSpecificCredential", "iam:PutUserPolicy", "iam:DeleteUserPolicy"]
      RotateThroughSelf     = ["lambda:InvokeFunction"]
      PublishAlerts         = ["sns:Publish"]
      GcpShutdownCredential = ["secretsmanager:GetSecretValue"]
      FindOptedIn           = ["tag:GetResources", "ec2:DescribeInstances", "autoscaling:DescribeAutoScalingGroups", "application-autoscaling:DescribeScalableTargets"]
      ReadDenyRoles         = ["iam:GetRole"]
      AlertSigningKey       = ["secretsmanager:GetSecretValue"]
      ShutdownOptedIn       = ["lambda:GetFunctionConcurrency", "lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency", "ecs:DescribeServices", "ecs:UpdateService", "ec2:StopInstances", "ec2:StartInstances", "iam:ListAttachedRolePolicies", "iam:GetRolePolicy", "autoscaling:SuspendProcesses", "autoscaling:ResumeProcesses", "autoscaling:UpdateAutoScalingGroup"]
      ShutdownDenyRoles     = ["iam:AttachRolePolicy", "iam:DetachRolePolicy"]
      SuspendScaling        = ["application-autoscaling:RegisterScalableTarget"]
    }
    "budget-webhook" = {
      ReadState                  = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"]
      WriteOwnItems              = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
      AppendAudit                = ["dynamodb:PutItem"]
      CheckReservations          = ["dynamodb:ConditionCheckItem"]
      PublishAlerts              = ["sns:Publish"]
      ConfirmBudgetsSubscription = ["sns:ConfirmSubscription"]
      WebhookSecrets             = ["secretsmanager:GetSecretValue"]
      ReadBudgets                = ["budgets:ViewBudget"]
      AlertSigningKey            = ["secretsmanager:GetSecretValue"]
    }
    "daily-aggregate" = {
      State           = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
      PublishAlerts   = ["sns:Publish"]
      AlertSigningKey = ["secretsmanager:GetSecretValue"]
    }
    # pending usage rolled up (ADR 031): nothing to publish, no secret, no Cost Explorer
    "usage-rollup" = {
      ReadPending = ["dynamodb:Query"]
      RollUp      = ["dynamodb:UpdateItem", "dynamodb:DeleteItem"]
      # the table's stream
      PendingUsageStream = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"]
      ListStreams        = ["dynamodb:ListStreams"]
    }
  }

  # Who may publish to the alerts topic (its policy denies everyone else): the functions with
  # PublishAlerts above (tests/deploy/test_parity.py checks both lists and template.yaml's).
  alert_publishers = ["budget-check", "key-guard", "budget-webhook", "daily-aggregate"]

  # Cost Explorer, GetRandomPassword and X-Ray have no resource-level permissions.
  # PutUserPolicy (IamUserCredentials) takes any document: granted on the guarded users only.
  shared_resources = {
    State                      = [aws_dynamodb_table.state.arn]
    PendingIndex               = ["${aws_dynamodb_table.state.arn}/index/pending"]
    ReadState                  = [aws_dynamodb_table.state.arn]
    WriteOwnItems              = [aws_dynamodb_table.state.arn]
    AppendAudit                = [aws_dynamodb_table.state.arn]
    CheckReservations          = [aws_dynamodb_table.state.arn]
    ReadPending                = [aws_dynamodb_table.state.arn]
    RollUp                     = [aws_dynamodb_table.state.arn]
    PublishAlerts              = [aws_sns_topic.alerts.arn]
    ReadBudgets                = ["arn:${local.partition}:budgets::${local.account}:budget/*"]
    CostExplorer               = ["*"]
    AdminKeys                  = local.admin_key_arns
    ChannelSecrets             = var.channel_secret_arns
    Email                      = var.ses_identity_arn == null ? [] : [var.ses_identity_arn]
    GuardedKeys                = var.key_secret_arns
    NewSecrets                 = ["*"]
    IamAccessKeys              = var.guarded_iam_user_arns
    IamUserCredentials         = var.guarded_iam_user_arns
    ConfirmBudgetsSubscription = [aws_sns_topic.budgets.arn]
    WebhookSecrets             = [var.usage_secret_arn, var.status_token_arn]
    AlertSigningKey            = [aws_secretsmanager_secret.alert_signing.arn]
    PendingUsageStream         = [aws_dynamodb_table.state.stream_arn]
    ListStreams                = ["*"] # no resource-level permissions exist for ListStreams
    # RotateSecret needs the caller to be allowed to invoke the rotation function (key-guard)
    RotateThroughSelf = ["arn:${local.partition}:lambda:${data.aws_region.current.region}:${local.account}:function:${var.name}-key-guard"]
    # a shutdown (docs/shutdown.md): finding what opted in has no resource-level permissions;
    # every change is allowed only on resources tagged spendguard:shutdown (conditions below)
    GcpShutdownCredential = compact([var.gcp_shutdown_credential_arn])
    FindOptedIn           = ["*"]
    ReadDenyRoles         = ["arn:${local.partition}:iam::${local.account}:role/*"]
    ShutdownOptedIn       = ["*"]
    ShutdownDenyRoles     = ["arn:${local.partition}:iam::${local.account}:role/*"]
    SuspendScaling        = ["arn:${local.partition}:application-autoscaling:*:${local.account}:scalable-target/*"]
  }

  # Statements allowed only under a condition.
  # iam:GetRolePolicy (ShutdownOptedIn) only to restore a stop recorded by a version before
  # December 2026 (its inline deny); no inline policy is ever put or deleted (findings #8, #10).
  # A role is stopped by attaching AWS's managed AWSDenyAll, and only that policy, on tagged
  # roles only: AttachRolePolicy cannot grant anything (docs/shutdown.md).
  conditions = {
    # the webhook writes only the items its signals produce (adapters/aws/src/dynamo.rs has the
    # key table): never budgets, keys, kill switches, key actions, deliveries, or another
    # function's markers such as a finding's acknowledgement (finding #7). A transaction's items
    # are authorised as these PutItem/UpdateItem/DeleteItem.
    WriteOwnItems = {
      "ForAllValues:StringLike" = { "dynamodb:LeadingKeys" = ["USAGE#*", "SPEND#*", "SCOPES#*", "OBS#*", "SRCDAY#*", "ALERT#*", "OPEN_ALERTS", "MSG#sns-message#*", "MSG#gcp-message#*", "MSG#gcp-crossing#*", "RESERVE#*", "HOLDS#*"] }
      Null                      = { "dynamodb:LeadingKeys" = "false" }
    }
    # audit entries it only adds: it cannot change or delete another function's
    AppendAudit = {
      "ForAllValues:StringLike" = { "dynamodb:LeadingKeys" = ["AUDIT#*"] }
      Null                      = { "dynamodb:LeadingKeys" = "false" }
    }
    # an ingest transaction checks (reads, within it) that no reservation holds for its
    # records, instead of reading them first (issue 28)
    CheckReservations = {
      "ForAllValues:StringLike" = { "dynamodb:LeadingKeys" = ["RESERVE#*"] }
      Null                      = { "dynamodb:LeadingKeys" = "false" }
    }
    # the roll-up (ADR 031) reads a leaf's pending items and the scope index `roll_up: all`
    # pages through, and in one transaction deletes each pending item, adds to its counters,
    # and deletes the holds it owes and lowers their windows (authorised as these actions)
    ReadPending = {
      "ForAllValues:StringLike" = { "dynamodb:LeadingKeys" = ["SPEND#*", "SCOPES#*"] }
      Null                      = { "dynamodb:LeadingKeys" = "false" }
    }
    RollUp = {
      "ForAllValues:StringLike" = { "dynamodb:LeadingKeys" = ["SPEND#*", "HOLDS#*", "LATE_SPEND#*"] }
      Null                      = { "dynamodb:LeadingKeys" = "false" }
    }
    ShutdownOptedIn = { Null = { "aws:ResourceTag/spendguard:shutdown" = "false" } }
    # an ECS service's scalable target is held at zero with it (finding #30): the target must
    # carry the tag too, or key-guard could re-size any target in the account
    SuspendScaling = { Null = { "aws:ResourceTag/spendguard:shutdown" = "false" } }
    ShutdownDenyRoles = {
      ArnEquals = { "iam:PolicyARN" = "arn:${local.partition}:iam::aws:policy/AWSDenyAll" }
      Null      = { "aws:ResourceTag/spendguard:shutdown" = "false" }
    }
  }

  # Every function's environment, besides its own below.
  common_environment = {
    SPENDGUARD_TABLE                 = aws_dynamodb_table.state.name
    SPENDGUARD_ALERT_SIGNING_KEY_ARN = aws_secretsmanager_secret.alert_signing.arn
  }

  # Per function: the binary it runs (its zip), reserved concurrency (null: none; a variable at
  # 0: none either, for small accounts), asynchronous invocation (retries, maximum event age in seconds; null: Lambda's
  # defaults and a dead-letter queue instead of an on-failure destination), and its Errors
  # alarm (period, description). Why these values: docs/deploy.md, Capacity.
  functions = {
    "budget-check" = {
      binary               = "budget-check"
      timeout              = 120
      memory               = 256
      reserved_concurrency = var.budget_check_reserved_concurrency
      # the schedule is the retry that matters; a run that cannot start in 5 minutes is superseded
      async        = { retries = 1, max_age = 300 }
      errors_alarm = { period = 900, description = "budget-check failed: budgets are not being evaluated." }
      environment = {
        SPENDGUARD_ALERTS_TOPIC_ARN        = aws_sns_topic.alerts.arn
        SPENDGUARD_AWS_ACCOUNT_ID          = local.account
        SPENDGUARD_COST_EXPLORER           = local.cost_explorer
        SPENDGUARD_OPENAI_ADMIN_KEY_ARN    = var.openai_admin_key_arn
        SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN = var.anthropic_admin_key_arn
      }
    }
    "alert-fanout" = {
      binary               = "alert-fanout"
      timeout              = 60
      memory               = 256
      reserved_concurrency = null
      # deliveries are claimed per channel; a page an hour late goes to the queue instead
      async        = { retries = 2, max_age = 3600 }
      errors_alarm = { period = 300, description = "alert-fanout failed: alerts may not be reaching people." }
      environment = {
        SPENDGUARD_DELIVERY_DEADLINE_SECONDS = "20"
        SPENDGUARD_OPERATOR_TOPIC_ARN        = local.operator_route ? aws_sns_topic.operator.arn : null
        SPENDGUARD_OPERATOR_CHANNELS         = local.operator_route ? join(",", var.operator_channels) : null
      }
    }
    "key-guard" = {
      binary               = "key-guard"
      timeout              = 60
      memory               = 256
      reserved_concurrency = var.key_guard_reserved_concurrency
      # the second retry completes a stop a crashed attempt left claimed; an emergency an hour
      # old is a person's decision (the queue's alarm)
      async        = { retries = 2, max_age = 3600 }
      errors_alarm = { period = 300, description = "key-guard failed: an emergency stop or a rotation may be incomplete." }
      environment = {
        SPENDGUARD_OPENAI_ADMIN_KEY_ARN    = var.openai_admin_key_arn
        SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN = var.anthropic_admin_key_arn
        SPENDGUARD_GCP_CREDENTIAL_ARN      = var.gcp_shutdown_credential_arn
        SPENDGUARD_ALERTS_TOPIC_ARN        = aws_sns_topic.alerts.arn
        SPENDGUARD_ANTHROPIC_SPEND_LIMITS  = tostring(var.anthropic_spend_limits)
      }
    }
    "budget-webhook" = {
      binary               = "budget-webhook"
      timeout              = 15
      memory               = 256
      reserved_concurrency = var.webhook_reserved_concurrency
      async                = null
      errors_alarm         = { period = 300, description = "budget-webhook failed: usage or budget signals are being retried." }
      environment = {
        SPENDGUARD_ALERTS_TOPIC_ARN         = aws_sns_topic.alerts.arn
        SPENDGUARD_USAGE_SECRET_ARN         = var.usage_secret_arn
        SPENDGUARD_STATUS_TOKEN_ARN         = var.status_token_arn
        SPENDGUARD_SNS_TOPIC_ARNS           = aws_sns_topic.budgets.arn
        SPENDGUARD_SNS_SIGNATURE_VERSION    = "2"
        SPENDGUARD_AWS_ACCOUNT_ID           = local.account
        SPENDGUARD_GCP_PUSH_AUDIENCE        = var.gcp_push_audience
        SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT = var.gcp_push_service_account
        SPENDGUARD_GCP_PUSH_SUBSCRIPTION    = var.gcp_push_subscription
      }
    }
    "daily-aggregate" = {
      binary               = "daily-aggregate"
      timeout              = 900
      memory               = 512
      reserved_concurrency = null
      async                = null
      errors_alarm         = { period = 3600, description = "daily-aggregate failed: last night's summaries or report are missing." }
      environment = {
        SPENDGUARD_ALERTS_TOPIC_ARN = aws_sns_topic.alerts.arn
      }
    }
    # budget-check's binary in its roll-up role (ADR 031): the table's stream, off budget-check's
    # dead man's switch, reservation and errors alarm; one invocation per stream shard at a time,
    # so no reservation; long enough for a `roll_up: all` by hand
    "usage-rollup" = {
      binary               = "budget-check"
      timeout              = 120
      memory               = 256
      reserved_concurrency = null
      async                = null
      errors_alarm         = { period = 300, description = "usage-rollup failed: pending usage is not being rolled up into ancestor and dimension budgets; the stream retries the batch (runbook: docs/deploy.md)." }
      environment = {
        SPENDGUARD_ROLE = "roll-up"
        # read at start-up by budget-check's configuration; the roll-up publishes nothing
        SPENDGUARD_ALERTS_TOPIC_ARN = aws_sns_topic.alerts.arn
      }
    }
  }

  # EventBridge Scheduler schedules: function, expression, input (the events/ fixtures), maximum event age.
  schedules = {
    "budget-check" = {
      function   = "budget-check"
      expression = "rate(${var.check_interval_minutes} minutes)"
      input      = "{\"source\": \"spendguard.schedule\"}"
      max_age    = 300
    }
    "flush-digests" = {
      function   = "alert-fanout"
      expression = "rate(5 minutes)"
      input      = "{\"action\": \"flush_digests\"}"
      max_age    = 300
    }
    "nightly" = {
      function   = "daily-aggregate"
      expression = var.nightly_schedule
      input      = "{}"
      max_age    = 3600
    }
    "drill" = {
      function   = "key-guard"
      expression = var.drill_schedule
      input      = "{\"action\": \"drill\"}"
      max_age    = 3600
    }
  }

  # SNS subscriptions: function, topic, filter policy.
  subscriptions = {
    "alert-fanout"   = { function = "alert-fanout", topic = aws_sns_topic.alerts.arn, filter = null }
    "key-guard"      = { function = "key-guard", topic = aws_sns_topic.alerts.arn, filter = "{\"actions\": [\"disable_keys\", \"shutdown\", \"reduce_limits\", \"rotate_keys\"]}" }
    "budget-webhook" = { function = "budget-webhook", topic = aws_sns_topic.budgets.arn, filter = null }
  }
}

# ------------------------------------------------------------------ state and messaging

resource "aws_dynamodb_table" "state" {
  # checkov:skip=CKV_AWS_119: the AWS-managed key (aws/dynamodb) encrypts at rest; a customer key costs more than the counters it protects
  name         = "${var.name}-state"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "PK"
  range_key    = "SK"

  attribute {
    name = "PK"
    type = "S"
  }
  attribute {
    name = "SK"
    type = "S"
  }
  attribute {
    name = "pending_shard"
    type = "S"
  }
  attribute {
    name = "pending_since"
    type = "N"
  }
  # sparse: only pending usage items carry its keys; the scheduled check finds the leaves it
  # rolls up there, longest-waiting first (ADR 031: shard = hash of the item's token, sort key
  # = when it was written)
  global_secondary_index {
    name            = "pending"
    hash_key        = "pending_shard"
    range_key       = "pending_since"
    projection_type = "KEYS_ONLY"
  }
  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }
  # keys only: usage-rollup rolls up the leaves whose pending usage changed (ADR 031)
  stream_enabled   = true
  stream_view_type = "KEYS_ONLY"
  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled = true
  }
  # DynamoDB refuses to delete the table while this is on (default): turn it off, apply, then
  # destroy. A variable, unlike lifecycle's prevent_destroy, so an example can be destroyed.
  deletion_protection_enabled = var.deletion_protection
  tags                        = local.tags
}

resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = "alias/aws/sns"
  tags              = local.tags
}

# key-guard carries out what arrives here, so only spendguard's own publishers may publish,
# whatever other principals' IAM policies allow. Only sns:Publish is denied: subscriptions and
# the topic's management stay with IAM.
resource "aws_sns_topic_policy" "alerts" {
  arn = aws_sns_topic.alerts.arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "OnlySpendguardPublishes"
      Effect    = "Deny"
      Principal = "*"
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.alerts.arn
      Condition = {
        ArnNotEquals = { "aws:PrincipalArn" = [for f in local.alert_publishers : aws_iam_role.function[f].arn] }
      }
    }]
  })
}

# The key every AlertEvent is signed with (HMAC-SHA256, an SNS message attribute); key-guard and
# fan-out act only on what verifies. Secrets Manager generates it and Terraform writes it once,
# write-only: it is in no plan and no state, and later applies never regenerate it.
resource "aws_secretsmanager_secret" "alert_signing" {
  # checkov:skip=CKV_AWS_149: the AWS-managed key (aws/secretsmanager) encrypts it; only the roles of the five functions that publish or receive alerts are granted GetSecretValue on it
  # checkov:skip=CKV2_AWS_57: rotated by hand (docs/deploy.md): verifiers accept the old and the new key during the switch, which no rotation function here implements
  name_prefix = "${var.name}-alert-signing-"
  description = "spendguard (${var.name}): the key AlertEvents are signed with (HMAC-SHA256); key-guard and alert-fanout refuse unsigned ones."
  tags        = local.tags
}

ephemeral "aws_secretsmanager_random_password" "alert_signing" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret_version" "alert_signing" {
  secret_id                = aws_secretsmanager_secret.alert_signing.id
  secret_string_wo         = ephemeral.aws_secretsmanager_random_password.alert_signing.random_password
  secret_string_wo_version = 1
}

# AWS Budgets publishes here (plain text, read by budget-webhook). A separate topic: fan-out only
# understands AlertEvents, and budgets.amazonaws.com cannot use the AWS-managed SNS key.
resource "aws_sns_topic" "budgets" {
  # checkov:skip=CKV_AWS_26: AWS Budgets cannot publish to a topic encrypted with the AWS-managed key
  name = "${var.name}-aws-budgets"
  # SHA256; the webhook refuses version 1 (SPENDGUARD_SNS_SIGNATURE_VERSION)
  signature_version = 2
  tags              = local.tags
}

resource "aws_sns_topic_policy" "budgets" {
  arn = aws_sns_topic.budgets.arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AwsBudgetsPublish"
      Effect    = "Allow"
      Principal = { Service = "budgets.amazonaws.com" }
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.budgets.arn
      Condition = {
        StringEquals = { "aws:SourceAccount" = local.account }
        ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:budgets::${local.account}:*" }
      }
    }]
  })
}

# Operators' topic: every alarm, in ALARM and back to OK (operator_email subscribes an address;
# subscribe chat or a pager to it too).
resource "aws_sns_topic" "operator" {
  # checkov:skip=CKV_AWS_26: CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed key (its policy does not admit cloudwatch.amazonaws.com); alarm states carry nothing secret
  name = "${var.name}-operator"
  tags = local.tags
}

resource "aws_sns_topic_subscription" "operator_email" {
  count     = var.operator_email == null ? 0 : 1
  topic_arn = aws_sns_topic.operator.arn
  protocol  = "email"
  endpoint  = var.operator_email
}

# operator_channels: the alarms through fan-out too (unsigned CloudWatch notifications, taken
# only from this topic and only as alarms: docs/deploy.md, ADR 025).
resource "aws_sns_topic_subscription" "operator_fanout" {
  count     = local.operator_route ? 1 : 0
  topic_arn = aws_sns_topic.operator.arn
  protocol  = "lambda"
  endpoint  = aws_lambda_function.function["alert-fanout"].arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.failed_events.arn
  })
}

resource "aws_lambda_permission" "operator_fanout" {
  count         = local.operator_route ? 1 : 0
  function_name = aws_lambda_function.function["alert-fanout"].function_name
  action        = "lambda:InvokeFunction"
  principal     = "sns.amazonaws.com"
  source_arn    = aws_sns_topic.operator.arn
}

resource "aws_sqs_queue" "failed_events" {
  name                      = "${var.name}-failed-events"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue_policy" "failed_events" {
  queue_url = aws_sqs_queue.failed_events.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "SchedulerAndSnsDeadLetters"
      Effect    = "Allow"
      Principal = { Service = ["scheduler.amazonaws.com", "sns.amazonaws.com"] }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.failed_events.arn
      Condition = { StringEquals = { "aws:SourceAccount" = local.account } }
    }]
  })
}
