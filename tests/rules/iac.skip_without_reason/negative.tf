# cloudward:skip=iac.tf.rds_public reason: read replica behind a private NLB
resource "aws_db_instance" "db" {
  engine = "postgres"
}
