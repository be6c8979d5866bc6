resource "aws_launch_configuration" "old" {
  image_id      = "ami-0123456789abcdef0"
  instance_type = "t3.small"
  metadata_options {
    http_endpoint = "disabled"
  }
}
