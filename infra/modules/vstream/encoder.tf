# The encoder service: private subnets, no load balancer (it pulls media from the ingest and
# pushes segments to S3), scaled on CPU between encoder_min_count and encoder_max_count.

locals {
  encoder_environment = merge(
    {
      BIND_ADDRESS     = "0.0.0.0"
      HTTP_PORT        = "8080"
      CONTROL_BASE_URL = aws_apigatewayv2_api.coordinator.api_endpoint
      REDIS_URL        = local.redis_url
      SERVER_CAPACITY  = tostring(var.encoder_server_capacity)
      HLS_STORAGE_TYPE = "S3"
      AWS_REGION       = local.region
      AWS_S3_BUCKET    = aws_s3_bucket.hls.id
      HLS_S3_PREFIX    = var.hls_s3_prefix
      LOG_FORMAT       = "json"
      LOG_DEBUG        = local.log_debug
    },
    var.encoder_extra_environment,
  )
}

resource "aws_ecs_task_definition" "encoder" {
  #checkov:skip=CKV_AWS_336:ffmpeg writes segments to a temporary directory before upload; Fargate bind mounts are root-owned and the image runs as a non-root user
  family                   = "${var.name}-encoder"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.encoder_cpu
  memory                   = var.encoder_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.encoder.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  dynamic "ephemeral_storage" {
    for_each = var.encoder_ephemeral_storage_gib > 20 ? [var.encoder_ephemeral_storage_gib] : []
    content {
      size_in_gib = ephemeral_storage.value
    }
  }

  container_definitions = jsonencode([{
    name        = "encoder"
    image       = local.image
    command     = ["encoder"]
    essential   = true
    stopTimeout = 120 # segments and playlists are finished on SIGTERM

    portMappings = [
      { name = "http", containerPort = 8080, protocol = "tcp" },
    ]

    environment = [for k in sort(keys(local.encoder_environment)) : { name = k, value = local.encoder_environment[k] }]
    secrets = [
      { name = "CONTROL_SECRET", valueFrom = local.control_secret_ref },
      { name = "REDIS_PASSWORD", valueFrom = local.redis_password_ref },
    ]

    ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]

    healthCheck = {
      command     = ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this["encoder"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "encoder"
      }
    }
  }])

  tags = local.tags
}

resource "aws_ecs_service" "encoder" {
  name            = "encoder"
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.encoder.arn
  desired_count   = var.encoder_min_count
  launch_type     = "FARGATE"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.encoder.id]
    assign_public_ip = false
  }

  lifecycle {
    # Autoscaling owns the count after creation.
    ignore_changes = [desired_count]
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.encoder]
}

resource "aws_appautoscaling_target" "encoder" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.encoder.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.encoder_min_count
  max_capacity       = max(var.encoder_min_count, var.encoder_max_count)
}

resource "aws_appautoscaling_policy" "encoder_cpu" {
  name               = "${var.name}-encoder-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.encoder.service_namespace
  resource_id        = aws_appautoscaling_target.encoder.resource_id
  scalable_dimension = aws_appautoscaling_target.encoder.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.encoder_cpu_target
    scale_out_cooldown = 60
    # Scale-in stops an encoder (its streams move or end): wait long before doing it.
    scale_in_cooldown = 600

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
