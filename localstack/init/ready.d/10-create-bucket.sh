#!/bin/bash
# LocalStack init hook (runs inside the localstack container once S3 is ready): creates the HLS
# bucket and lets browser players (hls.js) read it.
set -euo pipefail

BUCKET="${VSTREAM_BUCKET:-vstream}"

if ! awslocal s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  awslocal s3api create-bucket --bucket "$BUCKET" >/dev/null
fi
awslocal s3api put-bucket-cors --bucket "$BUCKET" --cors-configuration '{
  "CORSRules": [{
    "AllowedOrigins": ["*"],
    "AllowedMethods": ["GET", "HEAD"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["Content-Length", "Content-Range", "ETag"],
    "MaxAgeSeconds": 3000
  }]
}'
echo "vstream: bucket $BUCKET is ready"
