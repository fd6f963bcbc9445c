# vstream on AWS: the shared locals. Resources are split by topic:
#   network.tf      VPC, subnets, NAT, S3 endpoint, security groups
#   storage.tf      HLS bucket, ECR repository, KMS key, Secrets Manager secret, log groups
#   cdn.tf          CloudFront with origin access control, cache and CORS policies
#   redis.tf        ElastiCache (Valkey/Redis) replication group
#   coordinator.tf  coordinator-fn Lambda, HTTP API, EventBridge maintenance schedule
#   ingest.tf       ECS cluster, ingest service, NLB
#   encoder.tf      encoder service and its autoscaling
#   iam.tf          roles and least-privilege policies

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition

  tags = merge({ "vstream:deployment" = var.name }, var.tags)

  # Object keys: "<prefix>/hls/..." or "hls/..." (SPEC section 3).
  key_prefix = var.hls_s3_prefix == "" ? "" : "${var.hls_s3_prefix}/"

  tls = var.certificate_arn != ""

  # Public host name of the ingest.
  ingest_host = var.ingest_domain_name != "" ? var.ingest_domain_name : aws_lb.ingest.dns_name

  # The public RTMP endpoint the ingest reports (EXTERNAL_PORT / EXTERNAL_SSL): RTMPS on 443
  # when a certificate is given, plain RTMP on 1935 otherwise.
  rtmp_public_port = local.tls ? 443 : 1935

  image = "${aws_ecr_repository.this.repository_url}:${var.image_tag}"

  redis_url = "rediss://${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"

  playback_base_url = "https://${aws_cloudfront_distribution.this.domain_name}"

  log_debug = var.log_level_debug ? "true" : "false"

  # ECS `secrets` entries read single keys of the JSON secret.
  control_secret_ref = "${aws_secretsmanager_secret.this.arn}:CONTROL_SECRET::"
  redis_password_ref = "${aws_secretsmanager_secret.this.arn}:REDIS_PASSWORD::"
}
