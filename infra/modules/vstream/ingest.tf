# ECS cluster, the ingest service and its public Network Load Balancer.
#
#   NLB TCP 1935 -> ingest 1935 (RTMP)         NLB TLS 443  -> ingest 1935 (RTMPS, certificate_arn)
#   NLB TCP 80   -> ingest 8080 (ws publish)   NLB TLS 8443 -> ingest 8080 (wss, certificate_arn)
# Health checks: HTTP /healthz on 8080 for both target groups.

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.enable_container_insights ? "enabled" : "disabled"
  }

  tags = local.tags
}

# --- Load balancer -------------------------------------------------------------------------------

resource "aws_lb" "ingest" {
  #checkov:skip=CKV_AWS_91:NLB access logs only cover TLS listeners and need a log bucket; the ingest logs every publish itself
  #checkov:skip=CKV2_AWS_20:a Network Load Balancer carrying RTMP and WebSocket over TCP/TLS: there are no HTTP requests to redirect
  #checkov:skip=CKV_AWS_150:deletion protection would block `terraform destroy` of test deployments; protect production with IAM or enable it in the console
  name                             = "${var.name}-ingest"
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = local.public_subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  tags                             = local.tags
}

resource "aws_lb_target_group" "rtmp" {
  name                 = "${var.name}-rtmp"
  port                 = 1935
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = local.vpc_id
  preserve_client_ip   = tostring(var.preserve_client_ip)
  deregistration_delay = 15 # the ingest ends its publishers itself on SIGTERM

  health_check {
    protocol            = "HTTP"
    port                = "8080"
    path                = "/healthz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_target_group" "ws" {
  name                 = "${var.name}-ws"
  port                 = 8080
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = local.vpc_id
  preserve_client_ip   = tostring(var.preserve_client_ip)
  deregistration_delay = 15

  health_check {
    protocol            = "HTTP"
    port                = "8080"
    path                = "/healthz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "rtmp" {
  #checkov:skip=CKV_AWS_2:RTMP is a TCP protocol, not HTTP; RTMPS is the TLS listener on 443 when certificate_arn is set
  #checkov:skip=CKV_AWS_103:plain RTMP for encoders without TLS support (OBS supports both); RTMPS on 443 uses a TLS 1.2+ policy
  load_balancer_arn = aws_lb.ingest.arn
  port              = 1935
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.rtmp.arn
  }

  tags = local.tags
}

resource "aws_lb_listener" "ws" {
  #checkov:skip=CKV_AWS_2:ws:// publishing (SPEC section 1) for clients without TLS; wss is the TLS listener on 8443 when certificate_arn is set
  #checkov:skip=CKV_AWS_103:plain ws for clients without TLS; wss on 8443 uses a TLS 1.2+ policy
  load_balancer_arn = aws_lb.ingest.arn
  port              = 80
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ws.arn
  }

  tags = local.tags
}

resource "aws_lb_listener" "rtmps" {
  count = local.tls ? 1 : 0

  load_balancer_arn = aws_lb.ingest.arn
  port              = 443
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.rtmp.arn
  }

  tags = local.tags
}

resource "aws_lb_listener" "wss" {
  count = local.tls ? 1 : 0

  load_balancer_arn = aws_lb.ingest.arn
  port              = 8443
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ws.arn
  }

  tags = local.tags
}

resource "aws_route53_record" "ingest" {
  count = var.ingest_domain_name != "" && var.ingest_route53_zone_id != "" ? 1 : 0

  zone_id = var.ingest_route53_zone_id
  name    = var.ingest_domain_name
  type    = "A"

  alias {
    name                   = aws_lb.ingest.dns_name
    zone_id                = aws_lb.ingest.zone_id
    evaluate_target_health = true
  }
}

# --- Task definition and service -----------------------------------------------------------------

locals {
  ingest_environment = merge(
    {
      BIND_ADDRESS     = "0.0.0.0"
      RTMP_PORT        = "1935"
      HTTP_PORT        = "8080"
      CONTROL_BASE_URL = aws_apigatewayv2_api.coordinator.api_endpoint
      REDIS_URL        = local.redis_url
      EXTERNAL_IP      = local.ingest_host
      EXTERNAL_PORT    = tostring(local.rtmp_public_port)
      EXTERNAL_SSL     = local.tls ? "true" : "false"
      # Encoders (media pull) and, for TLS listeners, the NLB itself connect from inside the
      # VPC: the per-IP connection limit is for publishers on the internet.
      CONCURRENT_LIMIT_WHITELIST = local.vpc_cidr
      LOG_FORMAT                 = "json"
      LOG_DEBUG                  = local.log_debug
    },
    var.ingest_extra_environment,
  )
}

resource "aws_ecs_task_definition" "ingest" {
  #checkov:skip=CKV_AWS_336:the ingest may spill to /tmp; Fargate bind mounts are root-owned and the image runs as a non-root user, so the root filesystem stays writable
  family                   = "${var.name}-ingest"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.ingest_cpu
  memory                   = var.ingest_memory
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([{
    name        = "ingest"
    image       = local.image
    command     = ["ingest"]
    essential   = true
    stopTimeout = 120 # publishers are ended gracefully on SIGTERM

    portMappings = [
      { name = "rtmp", containerPort = 1935, protocol = "tcp" },
      { name = "http", containerPort = 8080, protocol = "tcp" },
    ]

    environment = [for k in sort(keys(local.ingest_environment)) : { name = k, value = local.ingest_environment[k] }]
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
        awslogs-group         = aws_cloudwatch_log_group.this["ingest"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "ingest"
      }
    }
  }])

  tags = local.tags
}

resource "aws_ecs_service" "ingest" {
  name            = "ingest"
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.ingest.arn
  desired_count   = var.ingest_desired_count
  launch_type     = "FARGATE"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 60
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.ingest.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.rtmp.arn
    container_name   = "ingest"
    container_port   = 1935
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.ws.arn
    container_name   = "ingest"
    container_port   = 8080
  }

  tags = local.tags

  depends_on = [aws_lb_listener.rtmp, aws_lb_listener.ws, aws_iam_role_policy.execution]
}
