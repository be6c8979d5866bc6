resource "aws_security_group_rule" "docker" {
  type              = "ingress"
  security_group_id = "sg-123"
  from_port         = 2375
  to_port           = 2375
  protocol          = "tcp"
  cidr_blocks       = ["0.0.0.0/0"]
}
