resource "aws_cloudtrail" "main" {
  name           = "main"
  s3_bucket_name = "trail-logs"
  is_multi_region_trail = true
  enable_logging = false
}
