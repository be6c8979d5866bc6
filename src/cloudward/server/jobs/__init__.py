"""Scan jobs: an allow-listed cloudward command line run as a subprocess, tracked in the store.

`commands.parse_command` turns the user's text into an argument list (never a shell);
`runner.JobRunner` is the interface the API and the scheduler use (`submit`, `dispatch`,
`cancel`, `status`); `local.LocalRunner` runs jobs in this server's process; `execute.run_job` is
the subprocess part; `celery_runner.CeleryRunner` hands jobs to `cloudward worker`s instead
(server/distributed/), which split exposure scans over themselves.
"""
