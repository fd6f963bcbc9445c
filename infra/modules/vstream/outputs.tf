output "rtmp_url" {
  description = "RTMP server URL. OBS: Server = <rtmp_url>/<channel>, Stream Key = <key>; ffmpeg: <rtmp_url>/<channel>/<key>."
  value       = "rtmp://${local.ingest_host}"
}

output "rtmps_url" {
  description = "RTMPS server URL (TLS terminated at the NLB on 443), or null without certificate_arn."
  value       = local.tls ? "rtmps://${local.ingest_host}:443" : null
}

output "ws_url" {
  description = "WebSocket publish base URL: <ws_url>/<channel>/<key>/publish (wss on 8443 with certificate_arn, ws on 80 otherwise; ws on 80 stays available)."
  value       = local.tls ? "wss://${local.ingest_host}:8443" : "ws://${local.ingest_host}"
}

output "coordinator_url" {
  description = "Base URL of the coordinator (commands API: <coordinator_url>/commands/capacity, /close, /report)."
  value       = aws_apigatewayv2_api.coordinator.api_endpoint
}

output "playback_base_url" {
  description = "CDN base URL of the stored objects: <playback_base_url>/hls/<channel>/<stream id>/master.m3u8 (PUBLIC_BASE_URL of the coordinator)."
  value       = local.playback_base_url
}

output "ecr_repository_url" {
  description = "ECR repository to push the vstream image to (tag it with image_tag)."
  value       = aws_ecr_repository.this.repository_url
}

output "secret_arn" {
  description = "ARN of the Secrets Manager secret holding the secret settings as a JSON object."
  value       = aws_secretsmanager_secret.this.arn
}

output "bucket_name" {
  description = "Name of the HLS bucket."
  value       = aws_s3_bucket.hls.id
}

output "cloudfront_distribution_id" {
  description = "ID of the CloudFront distribution (for invalidations)."
  value       = aws_cloudfront_distribution.this.id
}

output "nlb_dns_name" {
  description = "DNS name of the ingest load balancer (target of a CNAME for ingest_domain_name)."
  value       = aws_lb.ingest.dns_name
}

output "ecs_cluster_name" {
  description = "Name of the ECS cluster running the ingest and encoder services."
  value       = aws_ecs_cluster.this.name
}

output "coordinator_function_name" {
  description = "Name of the coordinator Lambda function."
  value       = aws_lambda_function.coordinator.function_name
}

output "log_group_names" {
  description = "CloudWatch log groups by component."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.name }
}
