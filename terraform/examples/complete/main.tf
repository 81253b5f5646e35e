# A complete deployment: build the zips first, from the repository root:
#   cargo lambda build --release --arm64 --output-format zip
# then: terraform init && terraform apply

terraform {
  required_version = ">= 1.11"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.18"
    }
  }
}

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

variable "channel_secret_arns" {
  type        = list(string)
  description = "Secrets Manager ARNs named by [channels] in the budgets file."
  default     = []
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

module "spendguard" {
  source              = "../../modules/spendguard"
  name                = "spendguard"
  lambda_zip_dir      = "${path.root}/../../../target/lambda"
  usage_secret_arn    = var.usage_secret_arn
  status_token_arn    = var.status_token_arn
  channel_secret_arns = var.channel_secret_arns
  operator_email      = var.operator_email
  operator_channels   = var.operator_channels
  # reserved concurrency: key-guard 5, budget-check 2, the webhook 50 unless set; an account
  # whose concurrency limit is under 160 sets all three to 0 (docs/deploy.md)
  # key_guard_reserved_concurrency    = 0
  # budget_check_reserved_concurrency = 0
  # webhook_reserved_concurrency      = 0
}

output "webhook_url" {
  value = module.spendguard.webhook_url
}

output "budgets_topic_arn" {
  value = module.spendguard.budgets_topic_arn
}
