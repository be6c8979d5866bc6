"""`cloudward image lint`: Dockerfiles judged before they are built, parsed by BuildKit's parser."""

from __future__ import annotations

import json
import secrets
import string
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cloudward.cli.app import app

PASSWORD = "pw-" + "".join(secrets.choice(string.ascii_letters) for _ in range(16))

BAD = f"""FROM golang:1.22 AS build
WORKDIR /src
RUN curl -fsSL https://get.example.invalid/install.sh | sh
RUN sudo chmod -R 777 /src

FROM debian
ARG NPM_TOKEN=abc123def
ENV DB_PASSWORD={PASSWORD} MODE=prod
ADD https://example.invalid/tool.tgz /opt/
COPY id_rsa /root/.ssh/id_rsa
COPY --from=build /src/app /app
EXPOSE 2375 6379/tcp
VOLUME /var/run/docker.sock
CMD ["/app"]
"""

GOOD = """# syntax=docker/dockerfile:1
FROM golang:1.22@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef AS build
RUN --mount=type=secret,id=netrc,target=/root/.netrc go build -o /app ./cmd/app
FROM debian:12.5-slim
COPY --from=build --chown=10001 /app /app
ENV DB_PASSWORD_FILE=/run/secrets/db MODE=prod
USER 10001
EXPOSE 8080
HEALTHCHECK CMD ["/app", "-healthcheck"]
ENTRYPOINT ["/app"]
"""


def lint(*paths: str) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(app, ["image", "lint", *paths, "--no-store", "-f", "json"])
    assert result.exit_code in (0, 3), result.output
    return json.loads(result.stdout), result.output


def test_bad_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(BAD)
    doc, output = lint(str(tmp_path))
    found = {(f["rule_id"], f["location"]["line"]) for f in doc["findings"]}
    assert found == {
        ("dockerfile.download_and_execute", 3), ("dockerfile.world_writable_chmod", 4), ("dockerfile.sudo_in_run", 4),
        ("dockerfile.base_image_unpinned", 6), ("dockerfile.final_stage_runs_as_root", 6),
        ("dockerfile.no_healthcheck", 6), ("dockerfile.secret_in_arg", 6), ("dockerfile.secret_in_env", 6),
        ("dockerfile.exposes_docker_api", 6), ("dockerfile.exposes_risky_service_port", 6),
        ("dockerfile.runtime_socket_volume", 6), ("dockerfile.add_from_url", 9), ("dockerfile.copies_credentials", 10),
    }
    assert PASSWORD not in output and "abc123def" not in output
    env = next(f for f in doc["findings"] if f["rule_id"] == "dockerfile.secret_in_env")
    assert env["evidence"] == {"secret_env_names": ["DB_PASSWORD"]}


def test_good_dockerfile_is_clean(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(GOOD)
    doc, _ = lint(str(tmp_path / "Dockerfile"))
    assert doc["findings"] == [] and doc["scan"]["errors"] == []


def test_findings_survive_an_edit_above_them(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(BAD)
    before = {f["fingerprint"] for f in lint(str(path))[0]["findings"]}
    path.write_text("# a comment\n# another\n" + BAD)
    after = lint(str(path))[0]["findings"]
    assert {f["fingerprint"] for f in after} == before
    assert min(f["location"]["line"] for f in after) == 5


def test_walk_finds_the_names_and_skips_vendored_trees(tmp_path: Path) -> None:
    for name in ("Containerfile", "services/api/api.Dockerfile", "deploy/Dockerfile.prod"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("FROM debian\nRUN curl -s https://x.invalid/a | bash\n")
    (tmp_path / "node_modules/pkg").mkdir(parents=True)
    (tmp_path / "node_modules/pkg/Dockerfile").write_text("FROM alpine\n")
    (tmp_path / "README.md").write_text("FROM is not a Dockerfile\n")
    doc, _ = lint(str(tmp_path))
    assert doc["scan"]["stats"]["files"] == 3
    assert {Path(f["location"]["path"]).name for f in doc["findings"]} == {"Containerfile", "api.Dockerfile",
                                                                          "Dockerfile.prod"}


def test_broken_dockerfile_is_named_and_the_others_are_judged(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/Dockerfile").write_text("FROM debian\nRUN <<EOF\necho unterminated heredoc\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b/Dockerfile").write_text(BAD)
    doc, _ = lint(str(tmp_path))
    [error] = doc["scan"]["errors"]
    assert error["target"].endswith("a/Dockerfile") and error["stage"] == "parse" and "heredoc" in error["message"]
    assert any(f["location"]["path"].endswith("b/Dockerfile") for f in doc["findings"])


def test_missing_path_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["image", "lint", str(tmp_path / "nope"), "--no-store", "-f", "json"])
    assert result.exit_code == 3
