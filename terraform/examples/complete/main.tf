# A complete deployment: every input of the module, the ones that name your resources as
# variables (the secrets of docs/deploy.md section 1 first), the others at the values shown.
# The zips: a release's or scripts/release's dist/ (lambda_zip_dir), or the same uploaded to S3
# (lambda_s3_bucket, lambda_s3_key_prefix). Then:
#   terraform init && terraform apply -var usage_secret_arn=arn:... -var status_token_arn=arn:...
# deletion_protection = false lets `terraform destroy` delete the table (with every budget,
# kill switch and the audit log); keep it true for a deployment you depend on.

provider "aws" {
  region = var.region
}

variable "region" {
  type        = string
  description = "Where to deploy."
  default     = "eu-west-1"
}

variable "usage_secret_arn" {
  type        = string
  description = "Secrets Manager ARN of the usage-report signing secrets."
}

variable "status_token_arn" {
  type        = string
  description = "Secrets Manager ARN of the /status bearer token."
}

variable "lambda_zip_dir" {
  type        = string
  description = "Where the five <function>.zip are (scripts/release writes them to dist/); unused with lambda_s3_bucket."
  default     = "../../../dist"
}

variable "lambda_s3_bucket" {
  type        = string
  description = "A bucket holding the five zips as <lambda_s3_key_prefix><function>.zip, instead of lambda_zip_dir; null for none."
  default     = null
}

variable "lambda_s3_key_prefix" {
  type        = string
  description = "The zips' key prefix in lambda_s3_bucket, ending in /."
  default     = "spendguard/0.1.0/"
}

variable "permissions_boundary" {
  type        = string
  description = "ARN of the IAM policy your organisation requires as every role's permissions boundary, or null."
  default     = null
}

variable "channel_secret_arns" {
  type        = list(string)
  description = "Secrets Manager ARNs named by [channels] in the budgets file."
  default     = []
}

variable "key_secret_arns" {
  type        = list(string)
  description = "Secrets Manager ARNs of the provider keys listed as [[key]] in the budgets file."
  default     = []
}

variable "openai_admin_key_arn" {
  type        = string
  description = "Secrets Manager ARN of the OpenAI admin key, or null."
  default     = null
}

variable "anthropic_admin_key_arn" {
  type        = string
  description = "Secrets Manager ARN of the Anthropic admin key, or null."
  default     = null
}

variable "gcp_shutdown_credential_arn" {
  type        = string
  description = "Secrets Manager ARN of a Google service-account key file for GCP shutdowns, or null."
  default     = null
}

variable "guarded_iam_user_arns" {
  type        = list(string)
  description = "IAM users whose access keys key-guard may stop and restore."
  default     = []
}

variable "ses_identity_arn" {
  type        = string
  description = "The verified SES identity e-mail alerts are sent from, or null."
  default     = null
}

variable "gcp_push_audience" {
  type        = string
  description = "Audience of the GCP Pub/Sub push subscription's OIDC token, or null (no GCP)."
  default     = null
}

variable "gcp_push_service_account" {
  type        = string
  description = "E-mail of the service account the push subscription signs as (with gcp_push_audience)."
  default     = null
}

variable "gcp_push_subscription" {
  type        = string
  description = "The one Pub/Sub push subscription accepted (projects/<project>/subscriptions/<name>), or null."
  default     = null
}

variable "operator_email" {
  type        = string
  description = "Who receives the alarms (confirm the subscription e-mail), or null."
  default     = null
}

variable "operator_channels" {
  type        = list(string)
  description = "Channels of the budgets file the alarms also go to through fan-out (e.g. [\"ops-pagerduty\"]); keep operator_email too."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags for every resource that takes them."
  default     = { team = "platform", cost-center = "42" }
}

module "spendguard" {
  source = "../../modules/spendguard"
  name   = "spendguard"

  # the code: a directory of zips, or S3
  lambda_zip_dir       = var.lambda_s3_bucket == null ? var.lambda_zip_dir : null
  lambda_s3_bucket     = var.lambda_s3_bucket
  lambda_s3_key_prefix = var.lambda_s3_key_prefix

  # organisation conventions
  tags                 = var.tags
  permissions_boundary = var.permissions_boundary
  deletion_protection  = true

  # secrets and identities (docs/deploy.md section 1)
  usage_secret_arn            = var.usage_secret_arn
  status_token_arn            = var.status_token_arn
  channel_secret_arns         = var.channel_secret_arns
  key_secret_arns             = var.key_secret_arns
  openai_admin_key_arn        = var.openai_admin_key_arn
  anthropic_admin_key_arn     = var.anthropic_admin_key_arn
  gcp_shutdown_credential_arn = var.gcp_shutdown_credential_arn
  guarded_iam_user_arns       = var.guarded_iam_user_arns
  ses_identity_arn            = var.ses_identity_arn
  gcp_push_audience           = var.gcp_push_audience
  gcp_push_service_account    = var.gcp_push_service_account
  gcp_push_subscription       = var.gcp_push_subscription

  # behaviour (the module's defaults)
  check_interval_minutes = 5
  nightly_schedule       = "cron(15 1 * * ? *)"
  drill_schedule         = "cron(0 8 * * ? *)"
  anthropic_spend_limits = false
  cost_explorer          = false
  log_retention_days     = 90

  # reserved concurrency: an account whose concurrency limit is under 160 sets all three to 0
  # (docs/deploy.md, Capacity)
  key_guard_reserved_concurrency    = 5
  budget_check_reserved_concurrency = 2
  webhook_reserved_concurrency      = 50

  # who hears the alarms
  operator_email    = var.operator_email
  operator_channels = var.operator_channels
}

output "webhook_url" {
  description = "Where applications report usage (POST /usage) and read /status."
  value       = module.spendguard.webhook_url
}

output "budgets_topic_arn" {
  description = "Point AWS Budgets notifications here."
  value       = module.spendguard.budgets_topic_arn
}

output "operator_topic_arn" {
  description = "Every alarm goes here; subscribe chat or a pager besides operator_email."
  value       = module.spendguard.operator_topic_arn
}

output "state_table_name" {
  description = "SPENDGUARD_TABLE for the CLI (spendguard budgets apply)."
  value       = module.spendguard.state_table_name
}

output "key_guard_arn" {
  description = "The --rotation-lambda-arn of aws secretsmanager rotate-secret (docs/deploy.md)."
  value       = module.spendguard.function_arns["key-guard"]
}
