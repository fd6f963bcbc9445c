# A complete vstream deployment: VPC, HLS bucket + CloudFront, Valkey, coordinator Lambda,
# ingest behind an NLB, autoscaled encoders. Walk-through: infra/README.md.

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = "vstream"
      ManagedBy = "terraform"
    }
  }
}

module "vstream" {
  source = "../../modules/vstream"

  name      = var.name
  image_tag = var.image_tag
  # Default: the package `cargo lambda build` writes at the repository root.
  lambda_zip_path = var.lambda_zip_path != "" ? var.lambda_zip_path : "${path.root}/../../../target/lambda/coordinator-fn/bootstrap.zip"

  key_verification_url       = var.key_verification_url
  key_verification_auth      = var.key_verification_auth
  key_verification_auth_user = var.key_verification_auth_user
  event_callback_url         = var.event_callback_url
  event_callback_auth        = var.event_callback_auth
  event_callback_auth_user   = var.event_callback_auth_user
  commands_api_auth          = var.commands_api_auth
  commands_api_auth_user     = var.commands_api_auth_user

  certificate_arn        = var.certificate_arn
  ingest_domain_name     = var.ingest_domain_name
  ingest_route53_zone_id = var.ingest_route53_zone_id

  ingest_desired_count    = var.ingest_desired_count
  ingest_cpu              = var.ingest_cpu
  ingest_memory           = var.ingest_memory
  encoder_cpu             = var.encoder_cpu
  encoder_memory          = var.encoder_memory
  encoder_min_count       = var.encoder_min_count
  encoder_max_count       = var.encoder_max_count
  encoder_server_capacity = var.encoder_server_capacity
  cpu_architecture        = var.cpu_architecture

  cache_node_type = var.cache_node_type
  cache_replicas  = var.cache_replicas

  single_nat_gateway          = var.single_nat_gateway
  live_object_expiration_days = var.live_object_expiration_days
  cors_allowed_origins        = var.cors_allowed_origins
  log_retention_days          = var.log_retention_days
  secret_recovery_window_days = var.secret_recovery_window_days
  force_destroy               = var.force_destroy

  encoder_extra_environment = var.encoder_extra_environment
}
