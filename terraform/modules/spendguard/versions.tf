terraform {
  required_version = ">= 1.11" # write-only arguments (the alert-signing key)
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.18"
    }
  }
}
