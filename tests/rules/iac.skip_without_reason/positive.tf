# cloudward:skip=iac.tf.rds_public
resource "aws_db_instance" "db" {
  engine = "postgres"
}
