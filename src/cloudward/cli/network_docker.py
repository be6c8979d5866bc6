"""`cloudward network protect docker`: the Docker Engine API proxy (registered on cli/network.py's
`protect` group).

Thin: parse addresses, load the policy (a bad one stops the start, exit 2), pick the findings sink,
serve until SIGTERM; SIGHUP reloads the policy. Clients send the token as a header; for the docker
CLI that is `~/.docker/config.json`: `{"HttpHeaders": {"Authorization": "Bearer <token>"}}`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cloudward.cli.common import err_console
from cloudward.cli.network import protect_app

ListenOption = typer.Option("127.0.0.1:2375", "--listen", metavar="HOST:PORT|unix:///PATH",
                            help="Where clients connect (TCP, or a unix socket created mode 0660).")
UpstreamOption = typer.Option("unix:///var/run/docker.sock", "--upstream", metavar="unix:///PATH|tcp://HOST:PORT",
                              help="The engine: dockerd's or podman's socket, or its TCP address.")
PolicyOption = typer.Option(None, "--policy", metavar="FILE",
                            help="Policy (YAML or TOML): token hashes and what to allow; re-read on SIGHUP. "
                                 "Without one the defaults deny every takeover step.")
TokenFileOption = typer.Option(None, "--token-file", metavar="FILE",
                               help="A file holding one more accepted token (hashed in memory; re-read on SIGHUP).")
FindingsOption = typer.Option(None, "--findings", metavar="FILE",
                              help="Append a finding per refused request here (JSON lines); default: log them.")
TlsCertOption = typer.Option(None, "--tls-cert", help="Serve TLS with this PEM certificate (chain).")
TlsKeyOption = typer.Option(None, "--tls-key", help="The certificate's PEM private key.")
UpstreamCaOption = typer.Option(None, "--upstream-tls-ca", metavar="FILE",
                                help="The engine speaks TLS (dockerd --tlsverify, port 2376): check its certificate "
                                     "against this CA (DOCKER_CERT_PATH's ca.pem).")
UpstreamCertOption = typer.Option(None, "--upstream-tls-cert", metavar="FILE",
                                  help="Client certificate for the engine (cert.pem); with --upstream-tls-key.")
UpstreamKeyOption = typer.Option(None, "--upstream-tls-key", metavar="FILE", help="Its private key (key.pem).")
MaxConnectionsOption = typer.Option(256, "--max-connections", min=1, max=65536,
                                    help="Client connections at once; more are answered 503.")
HashTokenOption = typer.Option(False, "--hash-token", help="Read a token on stdin, print its policy entry, and exit.")
CheckOption = typer.Option(False, "--check", help="Load and validate the policy, print a summary, and exit.")


@protect_app.command("docker")
def protect_docker(
    listen: str = ListenOption,
    upstream: str = UpstreamOption,
    policy_file: Path | None = PolicyOption,
    token_file: Path | None = TokenFileOption,
    findings: Path | None = FindingsOption,
    tls_cert: Path | None = TlsCertOption,
    tls_key: Path | None = TlsKeyOption,
    upstream_tls_ca: Path | None = UpstreamCaOption,
    upstream_tls_cert: Path | None = UpstreamCertOption,
    upstream_tls_key: Path | None = UpstreamKeyOption,
    max_connections: int = MaxConnectionsOption,
    hash_token: bool = HashTokenOption,
    check: bool = CheckOption,
) -> None:
    """Virtually patch an exposed Docker Engine API: require a token, refuse privileged containers,
    host mounts, host namespaces and exec (unless the policy allows them), log every decision."""
    from cloudward.core.errors import UsageError
    from cloudward.network.docker_findings import FindingQueue, JsonLinesSink
    from cloudward.network.docker_policy import PolicyError, load_policy
    from cloudward.network.docker_policy import hash_token as sha256_of
    from cloudward.network.docker_proxy import DockerProxy, client_tls, log_decisions, parse_address, server_tls

    if hash_token:
        token = sys.stdin.readline().strip()
        if len(token) < 16:
            raise UsageError("--hash-token: give a token of at least 16 characters on stdin "
                             "(e.g. `openssl rand -hex 32`)")
        typer.echo(f"tokens:\n  - name: CHANGE-ME\n    sha256: {sha256_of(token)}")
        return
    try:
        listen_at, engine = parse_address(listen), parse_address(upstream)
        policy = load_policy(policy_file, token_file)
    except (ValueError, PolicyError) as exc:
        raise UsageError(str(exc)) from None
    if check:
        typer.echo(f"policy ok: {len(policy.tokens)} token(s); exec {'allowed' if policy.allow_exec else 'denied'}; "
                   f"privileged {'allowed' if policy.allow_privileged else 'denied'}; judged bodies up to "
                   f"{policy.max_body_bytes} bytes")
        return
    if findings is not None:
        try:
            findings.open("a", encoding="utf-8").close()
        except OSError as exc:
            raise UsageError(f"--findings {findings}: {exc.strerror or exc}") from None
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        tls = server_tls(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    except ValueError as exc:
        raise UsageError(f"--tls-cert/--tls-key: {exc}") from None
    upstream_tls = None
    if (upstream_tls_cert is None) != (upstream_tls_key is None):
        raise UsageError("--upstream-tls-cert and --upstream-tls-key go together")
    if upstream_tls_ca is not None or upstream_tls_cert is not None:
        if engine.kind != "tcp":
            raise UsageError("--upstream-tls-*: TLS is for an engine on TCP (tcp://HOST:2376)")
        try:
            upstream_tls = client_tls(upstream_tls_ca, upstream_tls_cert, upstream_tls_key)
        except ValueError as exc:
            raise UsageError(f"--upstream-tls-*: {exc}") from None
    log_decisions(sys.stderr)
    queue = FindingQueue(JsonLinesSink(findings) if findings else None)
    try:
        proxy = DockerProxy(engine, lambda: load_policy(policy_file, token_file), queue,
                            max_connections=max_connections, tls=tls, upstream_tls=upstream_tls)
    except PolicyError as exc:  # changed since it was checked above
        raise UsageError(str(exc)) from None
    if listen_at.kind == "tcp" and not listen_at.local and tls is None:
        err_console().print("warning: listening beyond loopback without TLS: tokens cross the network in clear "
                            "(use --tls-cert/--tls-key)", highlight=False)

    def ready(bound: list[str]) -> None:
        err_console().print(f"docker proxy: listening on {', '.join(bound)} -> {engine} "
                            f"({len(proxy.state.policy.tokens)} token(s); SIGHUP reloads the policy)", highlight=False)

    try:
        proxy.serve(listen_at, on_ready=ready)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: {exc}") from None
    finally:
        proxy.findings.close()
