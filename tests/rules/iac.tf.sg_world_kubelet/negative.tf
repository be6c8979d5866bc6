resource "aws_security_group" "svc" {
  name = "svc"
  ingress {
    from_port   = 10000
    to_port     = 10249
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
