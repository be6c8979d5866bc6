data "aws_iam_policy_document" "deployer" {
  statement {
    actions   = ["iam:*", "ec2:Describe*"]
    resources = ["*"]
  }
}
