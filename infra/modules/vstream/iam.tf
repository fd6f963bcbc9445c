# Least-privilege roles:
#   execution role  (ECS agent): pull the image, read the one secret, write the two log groups
#   encoder role    (encoder task): put/delete objects under hls/ and img-preview/, nothing else
#   coordinator role (Lambda): its log group, VPC networking, read the one secret
# The ingest task needs no AWS API and has no task role.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# --- ECS task execution role -------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name               = "${var.name}-ecs-execution"
  description        = "vstream ${var.name}: ECS agent pulls the image, reads the secret, writes logs"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # this action has no resource type
  }

  statement {
    sid       = "PullTheImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.this.arn]
  }

  statement {
    sid     = "WriteTaskLogs"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      "${aws_cloudwatch_log_group.this["ingest"].arn}:*",
      "${aws_cloudwatch_log_group.this["encoder"].arn}:*",
    ]
  }

  statement {
    sid       = "ReadTheSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.this.arn]
  }

  statement {
    sid       = "DecryptTheSecret"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- Encoder task role -------------------------------------------------------------------------

resource "aws_iam_role" "encoder" {
  name               = "${var.name}-encoder"
  description        = "vstream ${var.name}: encoder writes and deletes HLS objects"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "encoder" {
  statement {
    sid = "WriteHlsAndPreviews"
    # PutObjectTagging: a PutObject that carries tags (vstream-live=1) needs it too.
    actions = ["s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"]
    resources = [
      "${aws_s3_bucket.hls.arn}/${local.key_prefix}hls/*",
      "${aws_s3_bucket.hls.arn}/${local.key_prefix}img-preview/*",
    ]
  }
}

resource "aws_iam_role_policy" "encoder" {
  name   = "hls-objects"
  role   = aws_iam_role.encoder.id
  policy = data.aws_iam_policy_document.encoder.json
}

# --- Coordinator (Lambda) role -----------------------------------------------------------------

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "coordinator" {
  name               = "${var.name}-coordinator"
  description        = "vstream ${var.name}: coordinator-fn Lambda function"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "coordinator" {
  statement {
    sid       = "WriteFunctionLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this["coordinator"].arn}:*"]
  }

  # What the AWS managed policy AWSLambdaVPCAccessExecutionRole grants: Lambda attaches the
  # function to the private subnets through network interfaces it manages with this role.
  statement {
    #checkov:skip=CKV_AWS_111:Lambda VPC networking needs these ENI actions on * (AWSLambdaVPCAccessExecutionRole)
    #checkov:skip=CKV_AWS_356:Lambda VPC networking needs these ENI actions on * (AWSLambdaVPCAccessExecutionRole)
    sid = "VpcNetworking"
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeSubnets",
      "ec2:DeleteNetworkInterface",
      "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "ReadTheSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.this.arn]
  }

  # The secret and the function's environment are encrypted with the deployment's key.
  statement {
    sid       = "DecryptWithTheDeploymentKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_role_policy" "coordinator" {
  name   = "coordinator"
  role   = aws_iam_role.coordinator.id
  policy = data.aws_iam_policy_document.coordinator.json
}
