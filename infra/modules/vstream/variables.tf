# ---------------------------------------------------------------------------------------------
# Naming and tagging
# ---------------------------------------------------------------------------------------------

variable "name" {
  description = "Name prefix of every resource (ECS cluster, NLB, Lambda, bucket, ...). Lowercase letters, digits and hyphens, at most 16 characters (load balancer and target group names are limited to 32)."
  type        = string
  default     = "vstream"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.name)) && !endswith(var.name, "-") && !strcontains(var.name, "--")
    error_message = "name must be 2 to 16 characters of lowercase letters, digits and single hyphens, start with a letter and not end with a hyphen."
  }
}

variable "tags" {
  description = "Tags added to every resource that supports them (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------
# Container image and Lambda package
# ---------------------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of the vstream image in the ECR repository this module creates (for example a git commit hash). Push the image before the full apply; see infra/README.md."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid Docker tag: 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'."
  }
}

variable "ecr_image_tag_mutability" {
  description = "IMMUTABLE (a tag can never be pushed twice: use a new tag per build) or MUTABLE."
  type        = string
  default     = "IMMUTABLE"

  validation {
    condition     = contains(["IMMUTABLE", "MUTABLE"], var.ecr_image_tag_mutability)
    error_message = "ecr_image_tag_mutability must be IMMUTABLE or MUTABLE."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the Fargate tasks (ingest and encoder): X86_64 or ARM64 (Graviton, about 20 % cheaper). The pushed image must be built for it (docker buildx --platform linux/amd64 or linux/arm64)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "lambda_architecture" {
  description = "Instruction set of the coordinator-fn Lambda package: arm64 (cheaper; `cargo lambda build --arm64`) or x86_64 (`cargo lambda build --x86-64`). It must match the package."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "lambda_zip_path" {
  description = "Path of the coordinator-fn Lambda package built by `cargo lambda build --release --arm64 --bin coordinator-fn --output-format zip`. Relative paths are relative to the directory terraform runs in."
  type        = string
  default     = "target/lambda/coordinator-fn/bootstrap.zip"

  validation {
    condition     = endswith(var.lambda_zip_path, ".zip")
    error_message = "lambda_zip_path must name a .zip file."
  }
}

# ---------------------------------------------------------------------------------------------
# Web application (SPEC section 2)
# ---------------------------------------------------------------------------------------------

variable "key_verification_url" {
  description = "KEY_VERIFICATION_URL: the web app endpoint that allows or refuses a publish. Empty = every key is accepted (with a warning in the logs): never leave it empty on a public deployment."
  type        = string
  default     = ""

  validation {
    condition     = var.key_verification_url == "" || can(regex("^https?://[^ ]+$", var.key_verification_url))
    error_message = "key_verification_url must be empty or an http(s) URL."
  }
}

variable "key_verification_auth" {
  description = "KEY_VERIFICATION_AUTH: empty (no Authorization header), Basic, Bearer or Custom. The matching secret (KEY_VERIFICATION_PASSWORD, KEY_VERIFICATION_AUTH_TOKEN or KEY_VERIFICATION_AUTH_CUSTOM) goes into the Secrets Manager secret, never here."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "Basic", "Bearer", "Custom"], var.key_verification_auth)
    error_message = "key_verification_auth must be empty, Basic, Bearer or Custom."
  }
}

variable "key_verification_auth_user" {
  description = "KEY_VERIFICATION_AUTH_USER: the user name of Basic auth (not secret; the password is KEY_VERIFICATION_PASSWORD in the secret)."
  type        = string
  default     = ""
}

variable "event_callback_url" {
  description = "EVENT_CALLBACK_URL: the web app endpoint that receives stream-available and stream-closed events. Empty = no events."
  type        = string
  default     = ""

  validation {
    condition     = var.event_callback_url == "" || can(regex("^https?://[^ ]+$", var.event_callback_url))
    error_message = "event_callback_url must be empty or an http(s) URL."
  }
}

variable "event_callback_auth" {
  description = "EVENT_CALLBACK_AUTH: empty, Basic, Bearer or Custom. The matching secret (EVENT_CALLBACK_PASSWORD, EVENT_CALLBACK_AUTH_TOKEN or EVENT_CALLBACK_AUTH_CUSTOM) goes into the Secrets Manager secret."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "Basic", "Bearer", "Custom"], var.event_callback_auth)
    error_message = "event_callback_auth must be empty, Basic, Bearer or Custom."
  }
}

variable "event_callback_auth_user" {
  description = "EVENT_CALLBACK_AUTH_USER: the user name of Basic auth for event callbacks."
  type        = string
  default     = ""
}

variable "commands_api_auth" {
  description = "COMMANDS_API_AUTH: Bearer (default; a random COMMANDS_API_AUTH_TOKEN is generated into the secret), Basic (put COMMANDS_API_AUTH_PASSWORD into the secret) or empty (the commands API is open to the internet: not recommended)."
  type        = string
  default     = "Bearer"

  validation {
    condition     = contains(["", "Basic", "Bearer"], var.commands_api_auth)
    error_message = "commands_api_auth must be empty, Basic or Bearer."
  }
}

variable "commands_api_auth_user" {
  description = "COMMANDS_API_AUTH_USER: the user name of Basic auth for the commands API."
  type        = string
  default     = ""
}

# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

variable "create_vpc" {
  description = "Create a VPC (public and private subnets in az_count zones, NAT gateway, S3 gateway endpoint). false = use vpc_id, public_subnet_ids and private_subnet_ids; the private subnets then need a route to the internet (NAT) for the web app, ECR, Secrets Manager and CloudWatch Logs."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "CIDR of the created VPC (create_vpc = true), /16 to /22. Each subnet is a sixteenth of it (/20 for a /16)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("^[0-9.]+/(1[6-9]|2[0-2])$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR between /16 and /22."
  }
}

variable "az_count" {
  description = "Number of availability zones of the created VPC (2 or 3)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper; outbound traffic of the private subnets depends on one zone) instead of one per zone."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "Existing VPC ID (create_vpc = false)."
  type        = string
  default     = ""
}

variable "public_subnet_ids" {
  description = "Existing public subnet IDs for the NLB (create_vpc = false), in at least two zones."
  type        = list(string)
  default     = []
}

variable "private_subnet_ids" {
  description = "Existing private subnet IDs for Fargate tasks, the Lambda function and ElastiCache (create_vpc = false), in at least two zones, with a NAT route."
  type        = list(string)
  default     = []
}

variable "allowed_publisher_cidrs" {
  description = "IPv4 CIDRs allowed to reach the ingest load balancer (RTMP, RTMPS, WebSocket)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_publisher_cidrs) > 0 && alltrue([for c in var.allowed_publisher_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_publisher_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "webapp_egress_ports" {
  description = "TCP ports the coordinator function may reach on the internet: the ports of key_verification_url and event_callback_url (443 is always allowed, for AWS APIs)."
  type        = list(number)
  default     = [80, 443]

  validation {
    condition     = alltrue([for p in var.webapp_egress_ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "webapp_egress_ports must be TCP port numbers."
  }
}

# ---------------------------------------------------------------------------------------------
# Ingest (public) endpoint
# ---------------------------------------------------------------------------------------------

variable "certificate_arn" {
  description = "ACM certificate ARN (same region) for RTMPS (TLS 443 -> 1935) and wss (TLS 8443 -> 8080), terminated at the NLB. Empty = plain RTMP and ws only. The certificate must cover ingest_domain_name."
  type        = string
  default     = ""

  validation {
    condition     = var.certificate_arn == "" || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be empty or an ACM certificate ARN."
  }
}

variable "ingest_domain_name" {
  description = "Public host name of the ingest (for example live.example.com), used in rtmp_url/ws_url and EXTERNAL_IP. Empty = the NLB DNS name. Point it at the NLB yourself (CNAME) or give ingest_route53_zone_id."
  type        = string
  default     = ""
}

variable "ingest_route53_zone_id" {
  description = "Route 53 hosted zone ID in which to create an alias record ingest_domain_name -> NLB. Empty = no record is created."
  type        = string
  default     = ""
}

variable "preserve_client_ip" {
  description = "NLB client IP preservation on the ingest target groups: the ingest sees the publisher's address (x-user-ip, per-IP connection limits)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

variable "ingest_desired_count" {
  description = "Number of ingest tasks behind the NLB."
  type        = number
  default     = 2

  validation {
    condition     = var.ingest_desired_count >= 1
    error_message = "ingest_desired_count must be at least 1."
  }
}

variable "ingest_cpu" {
  description = "Fargate CPU units of an ingest task (1024 = 1 vCPU)."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.ingest_cpu)
    error_message = "ingest_cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "ingest_memory" {
  description = "Memory (MiB) of an ingest task; must be valid for ingest_cpu."
  type        = number
  default     = 2048
}

variable "encoder_cpu" {
  description = "Fargate CPU units of an encoder task. One 720p30 source with a 720/480/360 ladder takes about half a core."
  type        = number
  default     = 2048

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.encoder_cpu)
    error_message = "encoder_cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "encoder_memory" {
  description = "Memory (MiB) of an encoder task; must be valid for encoder_cpu."
  type        = number
  default     = 4096
}

variable "encoder_min_count" {
  description = "Fewest encoder tasks (autoscaling lower bound; also the initial count)."
  type        = number
  default     = 1

  validation {
    condition     = var.encoder_min_count >= 1
    error_message = "encoder_min_count must be at least 1 (with no encoder every publish is refused)."
  }
}

variable "encoder_max_count" {
  description = "Most encoder tasks (autoscaling upper bound)."
  type        = number
  default     = 4
}

variable "encoder_cpu_target" {
  description = "Target average CPU utilisation (%) of the encoder service for target-tracking autoscaling."
  type        = number
  default     = 60

  validation {
    condition     = var.encoder_cpu_target >= 10 && var.encoder_cpu_target <= 90
    error_message = "encoder_cpu_target must be between 10 and 90."
  }
}

variable "encoder_server_capacity" {
  description = "SERVER_CAPACITY: streams one encoder task accepts at once (-1 = unlimited)."
  type        = number
  default     = 2

  validation {
    condition     = var.encoder_server_capacity == -1 || var.encoder_server_capacity >= 1
    error_message = "encoder_server_capacity must be -1 or at least 1."
  }
}

variable "encoder_ephemeral_storage_gib" {
  description = "Ephemeral storage of an encoder task (GiB, 21-200; 20 = the Fargate default). Segments wait on disk while S3 is unreachable."
  type        = number
  default     = 20

  validation {
    condition     = var.encoder_ephemeral_storage_gib == 20 || (var.encoder_ephemeral_storage_gib >= 21 && var.encoder_ephemeral_storage_gib <= 200)
    error_message = "encoder_ephemeral_storage_gib must be 20 (default) or between 21 and 200."
  }
}

variable "coordinator_memory_mb" {
  description = "Memory of the coordinator Lambda function (MB)."
  type        = number
  default     = 256

  validation {
    condition     = var.coordinator_memory_mb >= 128 && var.coordinator_memory_mb <= 10240
    error_message = "coordinator_memory_mb must be between 128 and 10240."
  }
}

variable "coordinator_timeout_seconds" {
  description = "Timeout of the coordinator Lambda function. HTTP requests are cut at 30 s by API Gateway anyway; the scheduled maintenance call may use the rest."
  type        = number
  default     = 60

  validation {
    condition     = var.coordinator_timeout_seconds >= 10 && var.coordinator_timeout_seconds <= 900
    error_message = "coordinator_timeout_seconds must be between 10 and 900."
  }
}

variable "coordinator_reserved_concurrency" {
  description = "Reserved concurrency of the coordinator function (-1 = none, uses the account's unreserved pool)."
  type        = number
  default     = -1

  validation {
    condition     = var.coordinator_reserved_concurrency >= -1
    error_message = "coordinator_reserved_concurrency must be -1 or more."
  }
}

variable "coordinator_throttling_rate_limit" {
  description = "Steady-state requests per second the coordinator's HTTP API accepts."
  type        = number
  default     = 200
}

variable "coordinator_throttling_burst_limit" {
  description = "Burst of requests the coordinator's HTTP API accepts."
  type        = number
  default     = 400
}

# ---------------------------------------------------------------------------------------------
# Redis / Valkey
# ---------------------------------------------------------------------------------------------

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.micro"
}

variable "cache_engine" {
  description = "ElastiCache engine: valkey (cheaper) or redis."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["valkey", "redis"], var.cache_engine)
    error_message = "cache_engine must be valkey or redis."
  }
}

variable "cache_engine_version" {
  description = "Engine version (valkey: 7.2, 8.0, 8.1; redis: 7.1)."
  type        = string
  default     = "8.0"
}

variable "cache_parameter_group_name" {
  description = "Parameter group of the replication group. Empty = default.<engine><major version> (for example default.valkey8)."
  type        = string
  default     = ""
}

variable "cache_replicas" {
  description = "Read replicas next to the primary. 1 or more enables automatic failover and Multi-AZ; 0 = a single node (cheaper, no failover)."
  type        = number
  default     = 1

  validation {
    condition     = var.cache_replicas >= 0 && var.cache_replicas <= 5
    error_message = "cache_replicas must be between 0 and 5."
  }
}

variable "cache_snapshot_retention_days" {
  description = "Days of automatic snapshots of the replication group (0 = none). Pending events to the web app live in Redis."
  type        = number
  default     = 1
}

# ---------------------------------------------------------------------------------------------
# Storage and CDN
# ---------------------------------------------------------------------------------------------

variable "bucket_name" {
  description = "Name of the HLS bucket. Empty = <name>-hls-<account id>-<region>."
  type        = string
  default     = ""
}

variable "hls_s3_prefix" {
  description = "HLS_S3_PREFIX: key prefix of every object in the bucket, without leading or trailing slash (for example live). Empty = keys start at the bucket root. The CDN maps its root to the prefix, so playback URLs never contain it."
  type        = string
  default     = ""

  validation {
    condition     = var.hls_s3_prefix == "" || can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.hls_s3_prefix))
    error_message = "hls_s3_prefix must be empty or path segments separated by '/', without leading or trailing slash."
  }
}

variable "live_object_expiration_days" {
  description = "Objects tagged vstream-live=1 (segments of streams that are not recorded) expire after this many days: a backstop for leftovers the encoder could not delete itself."
  type        = number
  default     = 2

  validation {
    condition     = var.live_object_expiration_days >= 1
    error_message = "live_object_expiration_days must be at least 1."
  }
}

variable "cors_allowed_origins" {
  description = "Origins allowed to load playlists and segments from the CDN in a browser (hls.js). [\"*\"] = any site."
  type        = list(string)
  default     = ["*"]

  validation {
    condition     = length(var.cors_allowed_origins) > 0
    error_message = "cors_allowed_origins must not be empty."
  }
}

variable "cdn_price_class" {
  description = "CloudFront price class: PriceClass_100 (North America, Europe), PriceClass_200 or PriceClass_All."
  type        = string
  default     = "PriceClass_100"

  validation {
    condition     = contains(["PriceClass_100", "PriceClass_200", "PriceClass_All"], var.cdn_price_class)
    error_message = "cdn_price_class must be PriceClass_100, PriceClass_200 or PriceClass_All."
  }
}

# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (ingest, encoder, coordinator, HTTP API access logs)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653)."
  }
}

variable "log_level_debug" {
  description = "LOG_DEBUG of every component."
  type        = bool
  default     = false
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can still be restored (0 = deleted at once, handy for test deployments; otherwise 7-30)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the bucket and the ECR repository even when they still hold objects or images (all recordings are lost). Set it to true and apply before destroying a test deployment."
  type        = bool
  default     = false
}

variable "enable_container_insights" {
  description = "CloudWatch Container Insights on the ECS cluster (per-task CPU and memory metrics; extra CloudWatch cost)."
  type        = bool
  default     = true
}

variable "ingest_extra_environment" {
  description = "Extra environment variables of the ingest containers (for example ID_MAX_LENGTH, MAX_IP_CONCURRENT_CONNECTIONS). Not for secrets."
  type        = map(string)
  default     = {}
}

variable "encoder_extra_environment" {
  description = "Extra environment variables of the encoder containers (for example HLS_TIME_SECONDS, HLS_H264_PRESET). Not for secrets."
  type        = map(string)
  default     = {}
}

variable "coordinator_extra_environment" {
  description = "Extra environment variables of the coordinator function (for example KEY_VERIFICATION_TIMEOUT_SECONDS). Not for secrets."
  type        = map(string)
  default     = {}
}
