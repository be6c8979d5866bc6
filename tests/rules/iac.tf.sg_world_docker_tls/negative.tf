resource "aws_vpc_security_group_ingress_rule" "tls" {
  security_group_id = "sg-123"
  cidr_ipv4         = "192.0.2.10/32"
  from_port         = 2376
  to_port           = 2376
  ip_protocol       = "tcp"
}
