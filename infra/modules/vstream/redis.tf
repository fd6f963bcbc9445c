# Redis-compatible state store and signalling bus (Valkey by default), private subnets only,
# TLS in transit, AUTH token from the secret (REDIS_PASSWORD), encrypted at rest with the CMK.

resource "aws_elasticache_subnet_group" "this" {
  name       = "${var.name}-cache"
  subnet_ids = local.private_subnet_ids
  tags       = local.tags
}

locals {
  cache_parameter_group = var.cache_parameter_group_name != "" ? var.cache_parameter_group_name : "default.${var.cache_engine}${split(".", var.cache_engine_version)[0]}"
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50:failover and Multi-AZ are on whenever cache_replicas >= 1 (the default); cache_replicas = 0 is the documented single-node budget choice
  replication_group_id = "${var.name}-state"
  description          = "vstream ${var.name}: coordinator state, node registry, signalling"

  engine               = var.cache_engine
  engine_version       = var.cache_engine_version
  node_type            = var.cache_node_type
  parameter_group_name = local.cache_parameter_group
  port                 = 6379

  num_cache_clusters         = 1 + var.cache_replicas
  automatic_failover_enabled = var.cache_replicas > 0
  multi_az_enabled           = var.cache_replicas > 0

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.this.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis.result

  snapshot_retention_limit   = var.cache_snapshot_retention_days
  auto_minor_version_upgrade = true
  apply_immediately          = true

  tags = local.tags
}
