# coordinator-fn: a stateless HTTP function on Lambda (provided.al2023, arm64), in the private
# subnets to reach ElastiCache, exposed by an HTTP API, and called every minute by EventBridge
# for its maintenance (due event retries, dead node reaping).
#
# Why an HTTP API rather than a function URL: since October 2025 a public function URL needs a
# second resource-policy statement (lambda:InvokeFunction with lambda:InvokedViaFunctionUrl)
# that the 5.x AWS provider cannot express; the HTTP API's permission is scoped to its own ARN.
# lambda_http serves both event shapes (payload format 2.0), so the binary does not change.

locals {
  coordinator_environment = merge(
    {
      REDIS_URL                  = local.redis_url
      KEY_VERIFICATION_URL       = var.key_verification_url
      KEY_VERIFICATION_AUTH      = var.key_verification_auth
      KEY_VERIFICATION_AUTH_USER = var.key_verification_auth_user
      EVENT_CALLBACK_URL         = var.event_callback_url
      EVENT_CALLBACK_AUTH        = var.event_callback_auth
      EVENT_CALLBACK_AUTH_USER   = var.event_callback_auth_user
      COMMANDS_API_AUTH          = var.commands_api_auth
      COMMANDS_API_AUTH_USER     = var.commands_api_auth_user
      PUBLIC_BASE_URL            = local.playback_base_url
      SECRETS_ARN                = aws_secretsmanager_secret.this.arn
      LOG_FORMAT                 = "json"
      LOG_DEBUG                  = local.log_debug
    },
    var.coordinator_extra_environment,
  )
}

resource "aws_lambda_function" "coordinator" {
  #checkov:skip=CKV_AWS_50:the binary has no X-Ray instrumentation; it logs JSON with tracing and the nodes expose Prometheus metrics
  #checkov:skip=CKV_AWS_116:invoked synchronously by the HTTP API; the only asynchronous caller is the 1-minute schedule, whose next run replaces a failed one
  #checkov:skip=CKV_AWS_115:reserved concurrency is a variable (coordinator_reserved_concurrency); reserving by default fails on new accounts whose limit is 10
  #checkov:skip=CKV_AWS_272:code signing needs a Signer profile the operator owns; the package is built and uploaded by the same operator
  function_name = local.lambda_function_name
  description   = "vstream ${var.name}: coordinator (publish decisions, events, commands API)"
  role          = aws_iam_role.coordinator.arn

  runtime       = "provided.al2023"
  handler       = "bootstrap"
  architectures = [var.lambda_architecture]

  filename         = var.lambda_zip_path
  source_code_hash = filebase64sha256(var.lambda_zip_path)

  memory_size                    = var.coordinator_memory_mb
  timeout                        = var.coordinator_timeout_seconds
  reserved_concurrent_executions = var.coordinator_reserved_concurrency
  kms_key_arn                    = aws_kms_key.this.arn

  vpc_config {
    subnet_ids         = local.private_subnet_ids
    security_group_ids = [aws_security_group.coordinator.id]
  }

  environment {
    # Empty values are left out: the function treats a missing setting as unset.
    variables = { for k, v in local.coordinator_environment : k => v if v != "" }
  }

  logging_config {
    log_format = "Text" # the binary already writes JSON lines (LOG_FORMAT=json)
    log_group  = aws_cloudwatch_log_group.this["coordinator"].name
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.coordinator]
}

# --- HTTP API ------------------------------------------------------------------------------------

resource "aws_apigatewayv2_api" "coordinator" {
  name          = "${var.name}-coordinator"
  description   = "vstream ${var.name}: coordinator HTTP endpoint (the function authenticates every request)"
  protocol_type = "HTTP"
  tags          = local.tags
}

resource "aws_apigatewayv2_integration" "coordinator" {
  api_id                 = aws_apigatewayv2_api.coordinator.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.coordinator.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "coordinator" {
  #checkov:skip=CKV_AWS_309:the coordinator authenticates every request itself (HS256 JWT from the nodes, COMMANDS_API_AUTH for the web app), as the contract requires
  api_id             = aws_apigatewayv2_api.coordinator.id
  route_key          = "$default"
  target             = "integrations/${aws_apigatewayv2_integration.coordinator.id}"
  authorization_type = "NONE"
}

resource "aws_apigatewayv2_stage" "coordinator" {
  api_id      = aws_apigatewayv2_api.coordinator.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.coordinator_throttling_rate_limit
    throttling_burst_limit = var.coordinator_throttling_burst_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.this["api"].arn
    format = jsonencode({
      requestId      = "$context.requestId"
      ip             = "$context.identity.sourceIp"
      requestTime    = "$context.requestTime"
      httpMethod     = "$context.httpMethod"
      path           = "$context.path"
      status         = "$context.status"
      responseLength = "$context.responseLength"
      latencyMs      = "$context.responseLatency"
      integrationErr = "$context.integrationErrorMessage"
    })
  }

  tags = local.tags
}

resource "aws_lambda_permission" "api" {
  statement_id  = "AllowHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.coordinator.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.coordinator.execution_arn}/*/*"
}

# --- Maintenance schedule ------------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "maintenance" {
  name                = "${var.name}-coordinator-maintenance"
  description         = "vstream ${var.name}: coordinator maintenance (event retries, dead node reaping)"
  schedule_expression = "rate(1 minute)"
  tags                = local.tags
}

resource "aws_cloudwatch_event_target" "maintenance" {
  rule = aws_cloudwatch_event_rule.maintenance.name
  arn  = aws_lambda_function.coordinator.arn

  # A late maintenance run is useless: the next one comes a minute later.
  retry_policy {
    maximum_event_age_in_seconds = 60
    maximum_retry_attempts       = 0
  }
}

resource "aws_lambda_permission" "maintenance" {
  statement_id  = "AllowMaintenanceSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.coordinator.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.maintenance.arn
}
