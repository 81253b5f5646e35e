variable "name" {
  type        = string
  description = "Prefix of every resource name (like the SAM stack name)."
  default     = "spendguard"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name))
    error_message = "name: lower-case letters, digits and dashes, at most 31 characters."
  }
}

variable "lambda_zip_dir" {
  type        = string
  description = "A directory with the five binaries' zips (usage-rollup deploys budget-check's): <binary>.zip (a release's, or scripts/release's dist/) or <binary>/bootstrap.zip (`cargo lambda build --release --arm64 --output-format zip` writes target/lambda). Set this or lambda_s3_bucket."
  default     = null
}

variable "lambda_s3_bucket" {
  type        = string
  description = "An S3 bucket (in the deployment's region) holding the five binaries' zips as <lambda_s3_key_prefix><binary>.zip (usage-rollup deploys budget-check's), instead of lambda_zip_dir. Use a new prefix per release (e.g. spendguard/0.1.0/): the functions are updated when the key changes."
  default     = null
  validation {
    condition     = (var.lambda_s3_bucket == null) != (var.lambda_zip_dir == null)
    error_message = "Set exactly one of lambda_zip_dir (zips on disk) and lambda_s3_bucket (zips in S3)."
  }
  validation {
    condition     = var.lambda_s3_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.lambda_s3_bucket))
    error_message = "lambda_s3_bucket is a bucket name (not an s3:// URL)."
  }
}

variable "lambda_s3_key_prefix" {
  type        = string
  description = "The key prefix of the zips in lambda_s3_bucket, ending in / (e.g. spendguard/0.1.0/); \"\" for the bucket's root."
  default     = ""
  validation {
    condition     = var.lambda_s3_key_prefix == "" || (endswith(var.lambda_s3_key_prefix, "/") && !startswith(var.lambda_s3_key_prefix, "/"))
    error_message = "lambda_s3_key_prefix ends in / and does not start with one (or is empty)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags for every resource that takes them (with spendguard:deployment = name added); e.g. { team = \"platform\", cost-center = \"42\" }."
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.tags) : !startswith(lower(k), "aws:") && k != "spendguard:deployment"])
    error_message = "tags: keys starting with aws: are AWS's, and spendguard:deployment is set from name."
  }
}

variable "permissions_boundary" {
  type        = string
  description = "ARN of an IAM policy set as the permissions boundary of every role the module creates (the six functions' and the scheduler's), or null for none."
  default     = null
  validation {
    condition     = var.permissions_boundary == null || can(regex("^arn:aws[a-z-]*:iam::(\\d{12}|aws):policy/.+$", var.permissions_boundary))
    error_message = "permissions_boundary must be an IAM policy ARN (arn:aws:iam::123456789012:policy/...)."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "DynamoDB deletion protection on the state table (budgets, kill switches, the audit log): it cannot be deleted, by Terraform or anyone, until this is false and applied."
  default     = true
}

variable "check_interval_minutes" {
  type        = number
  description = "How often budget-check evaluates every budget (minutes)."
  default     = 5
  validation {
    condition     = var.check_interval_minutes >= 1 && var.check_interval_minutes <= 60
    error_message = "check_interval_minutes must be between 1 and 60."
  }
}

variable "nightly_schedule" {
  type        = string
  description = "When daily-aggregate summarises yesterday (EventBridge Scheduler cron, UTC)."
  default     = "cron(15 1 * * ? *)"
  validation {
    condition     = can(regex("^cron\\(.+\\)$", var.nightly_schedule))
    error_message = "nightly_schedule must be a cron(...) expression."
  }
}

variable "anthropic_spend_limits" {
  type        = bool
  description = "Stops also set Anthropic's workspace and organisation spend limits (an early-access preview of Anthropic's; needs anthropic_admin_key_arn)."
  default     = false
}

variable "drill_schedule" {
  type        = string
  description = "When key-guard's stop-path drill proves every configured stop could be carried out (EventBridge Scheduler cron, UTC; a problem alerts once a day)."
  default     = "cron(0 8 * * ? *)"
  validation {
    condition     = can(regex("^cron\\(.+\\)$", var.drill_schedule))
    error_message = "drill_schedule must be a cron(...) expression."
  }
}

variable "usage_secret_arn" {
  type        = string
  description = "Secrets Manager ARN of the usage-report signing secrets (whsec_...)."
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\\d{12}:secret:.+$", var.usage_secret_arn))
    error_message = "usage_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "status_token_arn" {
  type        = string
  description = "Secrets Manager ARN of the bearer token applications use to read /status."
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\\d{12}:secret:.+$", var.status_token_arn))
    error_message = "status_token_arn must be a Secrets Manager secret ARN."
  }
}

variable "channel_secret_arns" {
  type        = list(string)
  description = "Secrets Manager ARNs named by [channels] in the budgets file."
  default     = []
  validation {
    condition     = alltrue([for a in var.channel_secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:", a))])
    error_message = "channel_secret_arns holds Secrets Manager ARNs only."
  }
}

variable "key_secret_arns" {
  type        = list(string)
  description = "Secrets Manager ARNs of the provider keys listed as [[key]] in the budgets file."
  default     = []
  validation {
    condition     = alltrue([for a in var.key_secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:", a))])
    error_message = "key_secret_arns holds Secrets Manager ARNs only."
  }
}

variable "openai_admin_key_arn" {
  type        = string
  description = "Secrets Manager ARN of the OpenAI admin key, or null to not use OpenAI."
  default     = null
  validation {
    condition     = var.openai_admin_key_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\\d{12}:secret:.+$", var.openai_admin_key_arn))
    error_message = "openai_admin_key_arn must be a Secrets Manager secret ARN (or null)."
  }
}

variable "anthropic_admin_key_arn" {
  type        = string
  description = "Secrets Manager ARN of the Anthropic admin key, or null."
  default     = null
  validation {
    condition     = var.anthropic_admin_key_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\\d{12}:secret:.+$", var.anthropic_admin_key_arn))
    error_message = "anthropic_admin_key_arn must be a Secrets Manager secret ARN (or null)."
  }
}

variable "gcp_shutdown_credential_arn" {
  type        = string
  description = "Secrets Manager ARN of a Google service-account key file, for shutdowns of the GCP projects named in [[shutdown.gcp]], or null."
  default     = null
  validation {
    condition     = var.gcp_shutdown_credential_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\\d{12}:secret:.+$", var.gcp_shutdown_credential_arn))
    error_message = "gcp_shutdown_credential_arn must be a Secrets Manager secret ARN (or null)."
  }
}

variable "guarded_iam_user_arns" {
  type        = list(string)
  description = "IAM users whose access keys, Bedrock API keys and sessions key-guard may stop and restore."
  default     = []
  validation {
    condition     = alltrue([for a in var.guarded_iam_user_arns : can(regex("^arn:aws[a-z-]*:iam::\\d{12}:user/", a))])
    error_message = "guarded_iam_user_arns holds IAM user ARNs only."
  }
}

variable "ses_identity_arn" {
  type        = string
  description = "The verified SES identity e-mail alerts are sent from, or null without e-mail channels."
  default     = null
  validation {
    condition     = var.ses_identity_arn == null || can(regex("^arn:aws[a-z-]*:ses:[a-z0-9-]+:\\d{12}:identity/.+$", var.ses_identity_arn))
    error_message = "ses_identity_arn must be an SES identity ARN (or null)."
  }
}

variable "gcp_push_audience" {
  type        = string
  description = "Audience of the GCP Pub/Sub push subscription's OIDC token (null disables GCP)."
  default     = null
}

variable "gcp_push_service_account" {
  type        = string
  description = "E-mail of the service account the push subscription signs as."
  default     = null
  validation {
    condition     = (var.gcp_push_service_account == null) == (var.gcp_push_audience == null)
    error_message = "gcp_push_service_account and gcp_push_audience are set together."
  }
}

variable "gcp_push_subscription" {
  type        = string
  description = "The one Pub/Sub push subscription accepted (projects/<project>/subscriptions/<name>); null accepts any subscription signed as the service account."
  default     = null
  validation {
    condition     = var.gcp_push_subscription == null || can(regex("^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/subscriptions/[A-Za-z][A-Za-z0-9._~%+-]{2,254}$", var.gcp_push_subscription))
    error_message = "gcp_push_subscription is projects/<project>/subscriptions/<name>."
  }
}

variable "cost_explorer" {
  type        = bool
  description = "Use Cost Explorer as a spend source ($0.01 per request, cached)."
  default     = false
}

variable "log_retention_days" {
  type        = number
  description = "How long function logs are kept (days)."
  default     = 90
  validation {
    condition     = contains([30, 60, 90, 180, 365], var.log_retention_days)
    error_message = "log_retention_days must be one of 30, 60, 90, 180, 365."
  }
}

variable "key_guard_reserved_concurrency" {
  type        = number
  description = "Concurrent executions reserved for key-guard, so an emergency finds capacity when the account's pool is exhausted (and at most this many run at once); 0 reserves none, for accounts whose concurrency limit cannot spare it (docs/deploy.md)."
  default     = 5
  validation {
    condition     = var.key_guard_reserved_concurrency >= 0 && var.key_guard_reserved_concurrency <= 1000 && floor(var.key_guard_reserved_concurrency) == var.key_guard_reserved_concurrency
    error_message = "key_guard_reserved_concurrency: a whole number from 0 (reserve none) to 1000."
  }
}

variable "budget_check_reserved_concurrency" {
  type        = number
  description = "Concurrent executions reserved for budget-check (one scheduled run, and room for a retry or a manual run); 0 reserves none (docs/deploy.md)."
  default     = 2
  validation {
    condition     = var.budget_check_reserved_concurrency >= 0 && var.budget_check_reserved_concurrency <= 1000 && floor(var.budget_check_reserved_concurrency) == var.budget_check_reserved_concurrency
    error_message = "budget_check_reserved_concurrency: a whole number from 0 (reserve none) to 1000."
  }
}

variable "webhook_reserved_concurrency" {
  type        = number
  description = "The most budget-webhook (the public Function URL) runs at once, reserved for it as well; a flood beyond it gets 429s instead of the account's whole pool. 0 reserves and caps nothing (docs/deploy.md)."
  default     = 50
  validation {
    condition     = var.webhook_reserved_concurrency >= 0 && var.webhook_reserved_concurrency <= 1000 && floor(var.webhook_reserved_concurrency) == var.webhook_reserved_concurrency
    error_message = "webhook_reserved_concurrency: a whole number from 0 (reserve and cap nothing) to 1000."
  }
}

variable "operator_email" {
  type        = string
  description = "An e-mail address subscribed to the operator topic, where every alarm goes (it must confirm the subscription), or null for none."
  default     = null
  validation {
    condition     = var.operator_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.operator_email))
    error_message = "operator_email must be an e-mail address (or null)."
  }
}

variable "operator_channels" {
  type        = list(string)
  description = "Channels of the budgets file (e.g. [\"ops-slack\", \"ops-pagerduty\"]) that every alarm also goes to, through alert-fanout; [] for none. Keep operator_email as well, the route that works when fan-out does not (docs/deploy.md)."
  default     = []
  validation {
    condition     = alltrue([for c in var.operator_channels : length(trimspace(c)) > 0 && !strcontains(c, ",") && !strcontains(c, " ")])
    error_message = "operator_channels: names of the budgets file's channels, none empty, none with a comma or a space."
  }
}
