terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # The state holds generated secrets (CONTROL_SECRET, the cache AUTH token): for anything but a
  # trial, keep it in an encrypted, access-controlled backend, for example:
  #
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "vstream/terraform.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}
