resource "aws_launch_template" "nodes" {
  name_prefix = "nodes-"
  metadata_options {
    http_tokens = "optional"
  }
}
