# CloudFront in front of the bucket (SPEC section 3: playlists short, segments and images immutable).

resource "aws_cloudfront_origin_access_control" "hls" {
  name                              = "${var.name}-hls"
  description                       = "vstream ${var.name}: CloudFront reads the HLS bucket"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

# Playlists (*.m3u8) and preview indexes (index.json): rewritten every segment, so at most 2 s
# at the edge; the encoder's Cache-Control (short or no-cache) is honoured within 0-2 s.
resource "aws_cloudfront_cache_policy" "short" {
  name        = "${var.name}-hls-short"
  comment     = "vstream playlists and index.json: 0-2 s"
  min_ttl     = 0
  default_ttl = 1
  max_ttl     = 2

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = true
    enable_accept_encoding_brotli = true

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

# Segments, init segments and images never change once written (every stream has its own ID in
# the key): cached up to a year, as long as the encoder's Cache-Control says.
resource "aws_cloudfront_cache_policy" "long" {
  name        = "${var.name}-hls-long"
  comment     = "vstream segments and images: immutable"
  min_ttl     = 0
  default_ttl = 86400
  max_ttl     = 31536000

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = false
    enable_accept_encoding_brotli = false

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

# CORS for hls.js and other browser players.
resource "aws_cloudfront_response_headers_policy" "cors" {
  name    = "${var.name}-hls-cors"
  comment = "vstream: GET/HEAD from ${join(", ", var.cors_allowed_origins)}"

  cors_config {
    access_control_allow_credentials = false
    access_control_max_age_sec       = 86400
    origin_override                  = true

    access_control_allow_headers {
      items = ["*"]
    }
    access_control_allow_methods {
      items = ["GET", "HEAD"]
    }
    access_control_allow_origins {
      items = var.cors_allowed_origins
    }
    access_control_expose_headers {
      items = ["Content-Length", "Content-Range", "ETag"]
    }
  }

  # Playback is HTTPS only (viewer_protocol_policy); on the *.cloudfront.net host these
  # directives concern that host alone.
  security_headers_config {
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
    content_type_options {
      override = true
    }
  }
}

locals {
  cdn_behaviors = [
    { path = "*.m3u8", short = true },
    { path = "*/index.json", short = true },
    { path = "*.ts", short = false },
    { path = "*.m4s", short = false },
    { path = "*.mp4", short = false },
    { path = "*.jpg", short = false },
  ]

  # 403 is what S3 answers for a key that does not exist yet (no s3:ListBucket for CloudFront):
  # a playlist requested a moment before it is written must not stay "missing" at the edge.
  cdn_error_codes = [403, 404, 500, 502, 503, 504]
}

resource "aws_cloudfront_distribution" "this" {
  #checkov:skip=CKV_AWS_68:public live video behind signed-in web apps; WAF costs per request and the origin is a private bucket
  #checkov:skip=CKV_AWS_86:CloudFront access logs need a log bucket with ACLs; enable standard logging v2 separately if needed
  #checkov:skip=CKV_AWS_174:uses the default *.cloudfront.net certificate, whose minimum TLS version CloudFront fixes; set a custom domain to choose TLSv1.2_2021
  #checkov:skip=CKV_AWS_310:one origin; the bucket is regional and S3 is the system of record
  #checkov:skip=CKV_AWS_305:no root object: only playlist, segment and image keys are served
  #checkov:skip=CKV2_AWS_42:the default CloudFront certificate is enough for playback URLs handed out by the web app
  #checkov:skip=CKV2_AWS_47:no WAF (see CKV_AWS_68); the origin is static objects, not an application
  #checkov:skip=CKV_AWS_374:audiences are worldwide; who may watch is the web app's decision, not the CDN's
  enabled         = true
  is_ipv6_enabled = true
  http_version    = "http2and3"
  comment         = "vstream ${var.name}: HLS playback"
  price_class     = var.cdn_price_class
  tags            = local.tags

  origin {
    origin_id                = "hls-bucket"
    domain_name              = aws_s3_bucket.hls.bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.hls.id
    # Playback URLs are relative to the prefix, like the keys in events (SPEC section 3).
    origin_path = var.hls_s3_prefix == "" ? "" : "/${var.hls_s3_prefix}"
  }

  default_cache_behavior {
    target_origin_id           = "hls-bucket"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = aws_cloudfront_cache_policy.short.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.cors.id
  }

  dynamic "ordered_cache_behavior" {
    for_each = local.cdn_behaviors
    content {
      path_pattern               = ordered_cache_behavior.value.path
      target_origin_id           = "hls-bucket"
      viewer_protocol_policy     = "redirect-to-https"
      allowed_methods            = ["GET", "HEAD", "OPTIONS"]
      cached_methods             = ["GET", "HEAD"]
      compress                   = ordered_cache_behavior.value.short
      cache_policy_id            = ordered_cache_behavior.value.short ? aws_cloudfront_cache_policy.short.id : aws_cloudfront_cache_policy.long.id
      response_headers_policy_id = aws_cloudfront_response_headers_policy.cors.id
    }
  }

  dynamic "custom_error_response" {
    for_each = local.cdn_error_codes
    content {
      error_code            = custom_error_response.value
      error_caching_min_ttl = 1
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
  }
}
