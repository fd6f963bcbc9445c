output "rtmp_url" {
  description = "OBS: Server = <rtmp_url>/<channel>, Stream Key = <key>."
  value       = module.vstream.rtmp_url
}

output "rtmps_url" {
  description = "RTMPS server URL (null without certificate)."
  value       = module.vstream.rtmps_url
}

output "ws_url" {
  description = "WebSocket publish base URL: <ws_url>/<channel>/<key>/publish."
  value       = module.vstream.ws_url
}

output "coordinator_url" {
  description = "Coordinator base URL (commands API)."
  value       = module.vstream.coordinator_url
}

output "playback_base_url" {
  description = "CDN base URL: <playback_base_url>/hls/<channel>/<stream id>/master.m3u8."
  value       = module.vstream.playback_base_url
}

output "ecr_repository_url" {
  description = "Where to push the image."
  value       = module.vstream.ecr_repository_url
}

output "secret_arn" {
  description = "The Secrets Manager secret of the secret settings."
  value       = module.vstream.secret_arn
}

output "bucket_name" {
  description = "The HLS bucket."
  value       = module.vstream.bucket_name
}

output "ecs_cluster_name" {
  description = "The ECS cluster."
  value       = module.vstream.ecs_cluster_name
}

output "log_group_names" {
  description = "CloudWatch log groups by component."
  value       = module.vstream.log_group_names
}
