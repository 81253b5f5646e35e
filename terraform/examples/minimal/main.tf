# The least a deployment needs: the two secrets of section 1 of docs/deploy.md and the zips
# (a release's, or scripts/release's dist/). Everything else keeps the module's defaults.
#   terraform init && terraform apply -var usage_secret_arn=arn:... -var status_token_arn=arn:...

provider "aws" {}

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
  description = "Where the five <function>.zip are (scripts/release writes them to dist/)."
  default     = "../../../dist"
}

module "spendguard" {
  source           = "../../modules/spendguard"
  lambda_zip_dir   = var.lambda_zip_dir
  usage_secret_arn = var.usage_secret_arn
  status_token_arn = var.status_token_arn
}

output "webhook_url" {
  description = "Where applications report usage (POST /usage) and read /status."
  value       = module.spendguard.webhook_url
}

output "state_table_name" {
  description = "SPENDGUARD_TABLE for the CLI (spendguard budgets apply)."
  value       = module.spendguard.state_table_name
}
