"""Distributed scans: jobs and exposure-scan chunks run by `cloudward worker` processes (Celery).

    cloudward worker --broker redis://broker:6379/0          # on each scanning machine
    cloudward server --runner celery --broker redis://...     # API and scheduled jobs go to the workers
    cloudward exposure scan 10.0.0.0/16 --distributed         # or straight from the command line

Layout: `settings.py` (broker, PostgreSQL store, chunk size), `app.py` (the Celery app and its two
tasks), `execute.py` (what a task does), `request.py` (the words of an exposure job, read like the
CLI reads them), `plan.py` (targets expanded once and cut into chunks), `chunks.py` (a chunk and
its checked broker payload), `assemble.py` (each chunk merged into the parent scan once, the scan
finalised by its last chunk), `client.py` (`exposure scan --distributed`). The server's side is
`server/jobs/celery_runner.py`.

A distributed scan leaves the store as a local scan of the same targets would: same findings by
fingerprint, same scan membership, fixed findings closed once, at the end.
"""
