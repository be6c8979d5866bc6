variable "allowed" {
  default = "0.0.0.0/0"
}
resource "aws_security_group" "svc" {
  name = "svc"
  ingress {
    from_port   = 6379
    to_port     = 6379
    protocol    = "tcp"
    cidr_blocks = [var.allowed]
  }
}
