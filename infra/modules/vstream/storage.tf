# ---------------------------------------------------------------------------------------------
# KMS key: the Secrets Manager secret, the log groups, ElastiCache at rest, Lambda environment.
# ---------------------------------------------------------------------------------------------

locals {
  lambda_function_name = "${var.name}-coordinator"

  log_group_names = {
    ingest      = "/vstream/${var.name}/ingest"
    encoder     = "/vstream/${var.name}/encoder"
    api         = "/vstream/${var.name}/coordinator-api"
    coordinator = "/aws/lambda/${local.lambda_function_name}"
  }
}

resource "aws_kms_key" "this" {
  description             = "vstream ${var.name}: secret, logs, cache, Lambda environment"
  enable_key_rotation     = true
  deletion_window_in_days = 7

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # IAM policies of the account decide who may use the key (the roles in iam.tf).
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsOfThisDeployment"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnEquals = {
            "kms:EncryptionContext:aws:logs:arn" = [
              for n in values(local.log_group_names) : "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${n}"
            ]
          }
        }
      },
    ]
  })

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

# ---------------------------------------------------------------------------------------------
# The one secret. Its JSON object holds every secret setting by its variable name:
#   CONTROL_SECRET, REDIS_PASSWORD and (commands_api_auth = Bearer) COMMANDS_API_AUTH_TOKEN are
#   generated here; KEY_VERIFICATION_PASSWORD / _AUTH_TOKEN / _AUTH_CUSTOM,
#   EVENT_CALLBACK_PASSWORD / _AUTH_TOKEN / _AUTH_CUSTOM and COMMANDS_API_AUTH_PASSWORD are
#   added by the operator (infra/README.md). Terraform writes the first version only and never
#   overwrites later ones.
# ---------------------------------------------------------------------------------------------

resource "random_password" "control_secret" {
  length  = 64
  special = false
}

# ElastiCache AUTH tokens allow only some special characters: letters and digits are safe.
resource "random_password" "redis" {
  length  = 48
  special = false
}

resource "random_password" "commands_api_token" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:the values are shared with the web app (and the cache AUTH token); rotate them by hand as described in infra/README.md
  name                    = "${var.name}/settings"
  description             = "vstream ${var.name}: secret settings (JSON object keyed by environment variable name)"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "initial" {
  secret_id = aws_secretsmanager_secret.this.id
  secret_string = jsonencode(merge(
    {
      CONTROL_SECRET = random_password.control_secret.result
      REDIS_PASSWORD = random_password.redis.result
    },
    var.commands_api_auth == "Bearer" ? { COMMANDS_API_AUTH_TOKEN = random_password.commands_api_token.result } : {},
  ))

  lifecycle {
    # The operator adds the web app credentials with put-secret-value; keep them.
    ignore_changes = [secret_string]
  }
}

# ---------------------------------------------------------------------------------------------
# HLS bucket: private, reachable only through CloudFront (cdn.tf) and the encoder role.
# ---------------------------------------------------------------------------------------------

resource "aws_s3_bucket" "hls" {
  #checkov:skip=CKV_AWS_18:readers only reach the bucket through CloudFront; writers are one IAM role (CloudTrail data events cover audits)
  #checkov:skip=CKV_AWS_21:playlists are rewritten every few seconds; versioning would keep thousands of stale copies per stream and break the delete-after-live-window rule
  #checkov:skip=CKV_AWS_144:live video is replicated by the CDN; cross-region replication of every segment doubles storage for no availability gain
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES-256) instead of KMS: every CDN fetch of a segment would be a KMS request, and the content is public through the CDN anyway
  #checkov:skip=CKV2_AWS_62:nothing consumes object events; the encoder reports availability to the coordinator itself
  bucket        = var.bucket_name != "" ? var.bucket_name : "${var.name}-hls-${local.account_id}-${local.region}"
  force_destroy = var.force_destroy
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "hls" {
  bucket                  = aws_s3_bucket.hls.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "hls" {
  bucket = aws_s3_bucket.hls.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "hls" {
  bucket = aws_s3_bucket.hls.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "hls" {
  bucket = aws_s3_bucket.hls.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    # The whole bucket, written as an empty prefix: AWS provider >= 5.90 warns on `filter {}`.
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # The encoder deletes what a non-recorded stream leaves behind and tags such objects
  # vstream-live=1; this rule removes whatever it could not delete (crash, scale-in).
  rule {
    id     = "expire-live-only-leftovers"
    status = "Enabled"
    filter {
      tag {
        key   = "vstream-live"
        value = "1"
      }
    }
    expiration {
      days = var.live_object_expiration_days
    }
  }
}

data "aws_iam_policy_document" "hls_bucket" {
  statement {
    sid       = "CloudFrontReadsHlsAndPreviews"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.hls.arn}/${local.key_prefix}hls/*", "${aws_s3_bucket.hls.arn}/${local.key_prefix}img-preview/*"]

    principals {
      type        = "Service"
      identifiers = ["cloudfront.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "AWS:SourceArn"
      values   = [aws_cloudfront_distribution.this.arn]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.hls.arn, "${aws_s3_bucket.hls.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "hls" {
  bucket = aws_s3_bucket.hls.id
  policy = data.aws_iam_policy_document.hls_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.hls]
}

# ---------------------------------------------------------------------------------------------
# ECR repository of the vstream image
# ---------------------------------------------------------------------------------------------

resource "aws_ecr_repository" "this" {
  #checkov:skip=CKV_AWS_136:AES-256 (ECR default) instead of a KMS key: the image holds no secrets, and a CMK would need key grants for every task that pulls it
  name                 = var.name
  image_tag_mutability = var.ecr_image_tag_mutability
  force_delete         = var.force_destroy

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }

  tags = local.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 30 most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 30
      }
      action = { type = "expire" }
    }]
  })
}

# ---------------------------------------------------------------------------------------------
# Log groups (created here so that retention and encryption apply from the first line)
# ---------------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:retention is the operator's choice (log_retention_days, default 30 days)
  for_each = local.log_group_names

  name              = each.value
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}
