# ---------------------------------------------------------------------------------------------
# VPC (created unless create_vpc = false)
# ---------------------------------------------------------------------------------------------

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:only the first az_count zone names (sorted) are used; a zone AWS adds later sorts after them and changes nothing
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

data "aws_vpc" "existing" {
  count = var.create_vpc ? 0 : 1
  id    = var.vpc_id
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  vpc_id             = var.create_vpc ? aws_vpc.this[0].id : var.vpc_id
  vpc_cidr           = var.create_vpc ? var.vpc_cidr : data.aws_vpc.existing[0].cidr_block
  public_subnet_ids  = var.create_vpc ? aws_subnet.public[*].id : var.public_subnet_ids
  private_subnet_ids = var.create_vpc ? aws_subnet.private[*].id : var.private_subnet_ids

  nat_count = var.create_vpc ? (var.single_nat_gateway ? 1 : var.az_count) : 0
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:VPC flow logs cost per GB of traffic and the media traffic dominates; enable them account-wide if your policy requires them
  count = var.create_vpc ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(local.tags, { Name = var.name })
}

# Closes the default security group of the created VPC (nothing uses it).
resource "aws_default_security_group" "this" {
  count  = var.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.name}-default-closed" })
}

resource "aws_internet_gateway" "this" {
  count  = var.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count = var.create_vpc ? var.az_count : 0

  vpc_id                  = aws_vpc.this[0].id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = false

  tags = merge(local.tags, { Name = "${var.name}-public-${local.azs[count.index]}" })
}

resource "aws_subnet" "private" {
  count = var.create_vpc ? var.az_count : 0

  vpc_id            = aws_vpc.this[0].id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index + 8)

  tags = merge(local.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route_table" "public" {
  count  = var.create_vpc ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  count                  = var.create_vpc ? 1 : 0
  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count          = var.create_vpc ? var.az_count : 0
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_eip" "nat" {
  count  = local.nat_count
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${var.name}-nat-${count.index}" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count         = local.nat_count
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(local.tags, { Name = "${var.name}-${local.azs[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "private" {
  count  = var.create_vpc ? var.az_count : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count                  = var.create_vpc ? var.az_count : 0
  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.single_nat_gateway ? 0 : count.index].id
}

resource "aws_route_table_association" "private" {
  count          = var.create_vpc ? var.az_count : 0
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# Segment uploads and image-layer pulls go to S3 without crossing the NAT gateway.
resource "aws_vpc_endpoint" "s3" {
  count             = var.create_vpc ? 1 : 0
  vpc_id            = aws_vpc.this[0].id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
  tags              = merge(local.tags, { Name = "${var.name}-s3" })
}

# ---------------------------------------------------------------------------------------------
# Security groups. Rules are separate resources so that the groups can reference each other.
# ---------------------------------------------------------------------------------------------

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "vstream ingest load balancer: publishers in, ingest tasks out"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-nlb" })
}

resource "aws_security_group" "ingest" {
  name        = "${var.name}-ingest"
  description = "vstream ingest tasks"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-ingest" })
}

resource "aws_security_group" "encoder" {
  name        = "${var.name}-encoder"
  description = "vstream encoder tasks"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-encoder" })
}

resource "aws_security_group" "coordinator" {
  name        = "${var.name}-coordinator"
  description = "vstream coordinator Lambda function"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-coordinator" })
}

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "vstream ElastiCache: only the coordinator, ingest and encoder"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-redis" })
}

locals {
  # Public listener ports of the NLB.
  nlb_listener_ports = local.tls ? [1935, 80, 443, 8443] : [1935, 80]

  nlb_ingress = {
    for pair in setproduct(local.nlb_listener_ports, var.allowed_publisher_cidrs) :
    "${pair[0]}-${pair[1]}" => { port = pair[0], cidr = pair[1] }
  }

  coordinator_egress_ports = toset([for p in distinct(concat([443], var.webapp_egress_ports)) : tostring(p)])
}

resource "aws_vpc_security_group_ingress_rule" "nlb_publishers" {
  #checkov:skip=CKV_AWS_260:the ingest is a public endpoint: port 80 carries ws:// publishing (SPEC section 1), narrowed by allowed_publisher_cidrs
  for_each = local.nlb_ingress

  security_group_id = aws_security_group.nlb.id
  description       = "Publishers to NLB listener ${each.value.port}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_ingest" {
  for_each = toset(["1935", "8080"])

  security_group_id            = aws_security_group.nlb.id
  description                  = "NLB to ingest tasks (traffic and health checks) on ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.ingest.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "ingest_from_nlb" {
  for_each = toset(["1935", "8080"])

  security_group_id            = aws_security_group.ingest.id
  description                  = "From the NLB on ${each.value} (works with client IP preservation)"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.nlb.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "ingest_from_encoder" {
  security_group_id            = aws_security_group.ingest.id
  description                  = "Encoders pull media from /internal/media on 8080"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.encoder.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "ingest_https" {
  security_group_id = aws_security_group.ingest.id
  description       = "HTTPS: coordinator API, ECR, Secrets Manager, CloudWatch Logs"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "encoder_https" {
  security_group_id = aws_security_group.encoder.id
  description       = "HTTPS: S3, coordinator API, ECR, Secrets Manager, CloudWatch Logs"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "encoder_to_ingest" {
  security_group_id            = aws_security_group.encoder.id
  description                  = "Media pull from the ingest tasks on 8080"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.ingest.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "coordinator_web" {
  for_each = local.coordinator_egress_ports

  security_group_id = aws_security_group.coordinator.id
  description       = "Web app callbacks and AWS APIs on ${each.value}"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

locals {
  redis_clients = {
    ingest      = aws_security_group.ingest.id
    encoder     = aws_security_group.encoder.id
    coordinator = aws_security_group.coordinator.id
  }
}

resource "aws_vpc_security_group_egress_rule" "to_redis" {
  for_each = local.redis_clients

  security_group_id            = each.value
  description                  = "Redis/Valkey (TLS) from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_clients" {
  for_each = local.redis_clients

  security_group_id            = aws_security_group.redis.id
  description                  = "Redis/Valkey (TLS) from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = each.value
  tags                         = local.tags
}
