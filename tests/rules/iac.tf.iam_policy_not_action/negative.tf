resource "aws_iam_role_policy" "almost_all" {
  role   = "app"
  policy = <<POLICY
{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "NotAction": "iam:*", "Resource": "*"}]}
POLICY
}
