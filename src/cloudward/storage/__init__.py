"""File Storage Security: objects in S3-compatible buckets and local files, scanned on demand and on
upload for malware (YARA, hash IOCs, ClamAV), leaked secrets and archive bombs, then acted on."""
