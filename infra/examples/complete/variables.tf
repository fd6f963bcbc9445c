# The inputs of this example; every other module input keeps its default
# (see infra/modules/vstream/variables.tf).

variable "region" {
  description = "AWS region of the deployment (the ACM certificate, if any, must be in it too)."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "vstream"
}

variable "image_tag" {
  description = "Tag of the image pushed to the ECR repository (for example the git commit hash)."
  type        = string
}

variable "lambda_zip_path" {
  description = "Path of the coordinator-fn zip. Empty = <repository>/target/lambda/coordinator-fn/bootstrap.zip."
  type        = string
  default     = ""
}

variable "key_verification_url" {
  description = "Web app endpoint deciding whether a channel/key may publish (empty = every key accepted)."
  type        = string
  default     = ""
}

variable "key_verification_auth" {
  description = "Authorization of key verification requests: empty, Basic, Bearer or Custom."
  type        = string
  default     = ""
}

variable "key_verification_auth_user" {
  description = "Basic auth user name for key verification."
  type        = string
  default     = ""
}

variable "event_callback_url" {
  description = "Web app endpoint receiving stream events (empty = no events)."
  type        = string
  default     = ""
}

variable "event_callback_auth" {
  description = "Authorization of event callbacks: empty, Basic, Bearer or Custom."
  type        = string
  default     = ""
}

variable "event_callback_auth_user" {
  description = "Basic auth user name for event callbacks."
  type        = string
  default     = ""
}

variable "commands_api_auth" {
  description = "Authorization the commands API requires: Bearer (token generated into the secret), Basic or empty (open)."
  type        = string
  default     = "Bearer"
}

variable "commands_api_auth_user" {
  description = "Basic auth user name of the commands API."
  type        = string
  default     = ""
}

variable "certificate_arn" {
  description = "ACM certificate ARN for RTMPS (443) and wss (8443); empty = RTMP and ws only."
  type        = string
  default     = ""
}

variable "ingest_domain_name" {
  description = "Public host name of the ingest (empty = the NLB DNS name)."
  type        = string
  default     = ""
}

variable "ingest_route53_zone_id" {
  description = "Route 53 zone in which to create ingest_domain_name (empty = create the DNS record yourself)."
  type        = string
  default     = ""
}

variable "ingest_desired_count" {
  description = "Number of ingest tasks."
  type        = number
  default     = 2
}

variable "ingest_cpu" {
  description = "CPU units of an ingest task."
  type        = number
  default     = 1024
}

variable "ingest_memory" {
  description = "Memory (MiB) of an ingest task."
  type        = number
  default     = 2048
}

variable "encoder_cpu" {
  description = "CPU units of an encoder task."
  type        = number
  default     = 2048
}

variable "encoder_memory" {
  description = "Memory (MiB) of an encoder task."
  type        = number
  default     = 4096
}

variable "encoder_min_count" {
  description = "Fewest encoder tasks."
  type        = number
  default     = 1
}

variable "encoder_max_count" {
  description = "Most encoder tasks."
  type        = number
  default     = 4
}

variable "encoder_server_capacity" {
  description = "Streams per encoder task (SERVER_CAPACITY)."
  type        = number
  default     = 2
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64 for the Fargate tasks; build the image for the same platform."
  type        = string
  default     = "X86_64"
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.micro"
}

variable "cache_replicas" {
  description = "Cache read replicas (0 = single node, no failover)."
  type        = number
  default     = 1
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone."
  type        = bool
  default     = true
}

variable "live_object_expiration_days" {
  description = "Days after which objects tagged vstream-live=1 expire."
  type        = number
  default     = 2
}

variable "cors_allowed_origins" {
  description = "Origins allowed to play from the CDN in a browser."
  type        = list(string)
  default     = ["*"]
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups."
  type        = number
  default     = 30
}

variable "secret_recovery_window_days" {
  description = "Recovery window of the deleted secret (0 = immediate)."
  type        = number
  default     = 7
}

variable "force_destroy" {
  description = "Let terraform destroy delete a non-empty bucket and ECR repository."
  type        = bool
  default     = false
}

variable "encoder_extra_environment" {
  description = "Extra encoder settings (HLS_TIME_SECONDS, HLS_H264_PRESET, ...)."
  type        = map(string)
  default     = {}
}
