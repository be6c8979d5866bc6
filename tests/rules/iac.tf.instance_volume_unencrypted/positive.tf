resource "aws_instance" "worker" {
  ami = "ami-0123456789abcdef0"
  metadata_options {
    http_tokens = "required"
  }
  root_block_device {
    volume_size = 50
  }
}
