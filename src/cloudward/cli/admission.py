"""`cloudward admission serve|review`: a Kubernetes validating admission webhook for images and pods.

Thin: build the policy and the image-scan options (shared with `image scan`), hand Container
Security a scan function, serve. `review FILE` judges one AdmissionReview offline (CI, testing a
policy) and prints the response; its exit code is 0 allowed, 1 denied.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cloudward.cli.common import ConfigOption, err_console
from cloudward.cli.image import InsecureOption, PasswordOption, UsernameOption, scan_options

if TYPE_CHECKING:
    from cloudward.container.admission import Policy, Reviewer

app = typer.Typer(help="Kubernetes validating admission webhook: deny pods with bad images or risky specs.",
                  no_args_is_help=True)

PolicyOption = typer.Option(None, "--policy", metavar="FILE", help="Policy file (TOML or YAML; flags override it).")
MaxSeverityOption = typer.Option(None, "--max-severity", help="Deny images with a finding at or above this severity "
                                 "(default critical).")
RegistryOption = typer.Option(None, "--allowed-registry", metavar="HOST[/PATH]",
                              help="Only images from here (repeatable; docker.io short names are normalised); "
                                   "others are denied without being fetched.")
FailOpenOption = typer.Option(None, "--fail-open/--fail-closed",
                              help="When an image cannot be judged in time (still being scanned, or unreadable) or "
                                   "a request is malformed: allow with a warning, or deny (default: fail-closed).")
TlsCertOption = typer.Option(None, "--tls-cert", help="PEM certificate (chain) the API server trusts.")
TlsKeyOption = typer.Option(None, "--tls-key", help="PEM private key of the certificate.")
ReviewFileArgument = typer.Argument(..., metavar="FILE", help="An AdmissionReview JSON document ('-' for stdin).")
TimeoutOption = typer.Option(None, "--scan-timeout", min=0.5, max=29.0,
                             help="Seconds a request waits for image scans (default 8; keep it below the "
                                  "webhook's timeoutSeconds).")
WorkersOption = typer.Option(2, "--scan-workers", min=1, max=32, help="Images scanned at the same time.")


def _policy(policy_file: Path | None, max_severity: str | None, allowed: list[str] | None, fail_open: bool | None,
            scan_timeout: float | None) -> Policy:
    from cloudward.container.admission import Policy
    from cloudward.core.errors import UsageError
    from cloudward.core.severity import Severity

    try:
        policy = Policy.from_file(policy_file) if policy_file else Policy()
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--policy: {exc}") from None
    if max_severity is not None:
        try:
            policy.max_severity = Severity.parse(max_severity)
        except ValueError as exc:
            raise UsageError(f"--max-severity: {exc}") from None
    if allowed:
        policy.allowed_registries = list(allowed)
    if fail_open is not None:
        policy.fail_open = fail_open
    if scan_timeout is not None:
        policy.scan_timeout = scan_timeout
    return policy


def _reviewer(policy: Policy, config: Path | None, insecure: bool, username: str | None,
              password: str | None, workers: int = 2) -> Reviewer:
    from cloudward.container.admission import Reviewer
    from cloudward.container.scan import scan_image

    options = scan_options(config, insecure=insecure, username=username, password=password)
    if options.advisories is not None and not options.advisories.is_file():
        err_console().print(f"warning: no advisory database at {options.advisories}: image vulnerabilities are "
                            "not checked (run `cloudward db update`)", highlight=False, soft_wrap=True)
    return Reviewer(policy, lambda image: scan_image(image, options), workers=workers)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8443, "--port", min=1, max=65535),
    tls_cert: Path | None = TlsCertOption,
    tls_key: Path | None = TlsKeyOption,
    insecure_http: bool = typer.Option(False, "--insecure-http", help="Plain HTTP, for local testing only."),
    policy_file: Path | None = PolicyOption,
    max_severity: str | None = MaxSeverityOption,
    allowed_registry: list[str] = RegistryOption,
    fail_open: bool | None = FailOpenOption,
    scan_timeout: float | None = TimeoutOption,
    scan_workers: int = WorkersOption,
    insecure: bool = InsecureOption,
    username: str | None = UsernameOption,
    password: str | None = PasswordOption,
    config: Path | None = ConfigOption,
) -> None:
    """Serve AdmissionReview v1 on POST / and /validate (GET /healthz) until stopped."""
    from cloudward.container.admission import make_server
    from cloudward.core.errors import UsageError

    policy = _policy(policy_file, max_severity, allowed_registry, fail_open, scan_timeout)
    reviewer = _reviewer(policy, config, insecure, username, password, scan_workers)
    if insecure_http:
        err_console().print("warning: serving plain HTTP: the API server will not call it; for local tests only",
                            highlight=False)
    try:
        server = make_server(reviewer, host, port, certfile=str(tls_cert) if tls_cert else None,
                             keyfile=str(tls_key) if tls_key else None, insecure_http=insecure_http)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    scheme = "http" if insecure_http else "https"
    err_console().print(f"admission: listening on {scheme}://{host}:{server.server_address[1]}/validate "
                        f"(fail-{'open' if policy.fail_open else 'closed'}, max severity {policy.max_severity.value})",
                        highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        reviewer.close()


@app.command("review")
def review(
    review_file: Path = ReviewFileArgument,
    policy_file: Path | None = PolicyOption,
    max_severity: str | None = MaxSeverityOption,
    allowed_registry: list[str] = RegistryOption,
    fail_open: bool | None = FailOpenOption,
    scan_timeout: float | None = TimeoutOption,
    insecure: bool = InsecureOption,
    username: str | None = UsernameOption,
    password: str | None = PasswordOption,
    config: Path | None = ConfigOption,
) -> None:
    """Judge one AdmissionReview offline and print the response (exit 0 allowed, 1 denied)."""
    from cloudward.core.errors import UsageError

    policy = _policy(policy_file, max_severity, allowed_registry, fail_open, scan_timeout)
    try:
        text = sys.stdin.read() if str(review_file) == "-" else review_file.read_text(encoding="utf-8")
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{review_file}: {exc}") from None
    reviewer = _reviewer(policy, config, insecure, username, password)
    try:
        answer = reviewer.review(document)
    finally:
        reviewer.close()
    typer.echo(json.dumps(answer, indent=2))
    raise typer.Exit(0 if answer["response"]["allowed"] else 1)
