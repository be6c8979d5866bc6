"""docker-compose: published ports in every syntax, bind mounts, and what is not judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import hits, rule_ids, scan, write_tree


@pytest.mark.parametrize(("ports", "fires"), [
    ('["2375:2375"]', True),
    ('["0.0.0.0:2376:2376/tcp"]', True),
    ('["2370-2380:2370-2380"]', True),
    ('[{target: 2375, published: "12375"}]', True),
    ('[{target: 2375, published: 2375, host_ip: 127.0.0.1}]', False),
    ('["127.0.0.1:2375:2375"]', False),
    ('["[::1]:2375:2375"]', False),
    ('["8080:80"]', False),
])
def test_docker_api_port_syntaxes(tmp_path: Path, ports: str, fires: bool) -> None:
    write_tree(tmp_path, {"compose.yaml": f"services:\n  dind:\n    image: docker:dind\n    ports: {ports}\n"})
    assert ("iac.compose.docker_api_published" in rule_ids(scan(tmp_path))) is fires


def test_unset_user_is_not_judged_and_findings_point_at_the_service(tmp_path: Path) -> None:
    write_tree(tmp_path, {"docker-compose.override.yml": '''version: "3.9"
services:
  web:
    image: web:1
  cache:
    image: redis:7
    ports: ["6379:6379"]
    user: root
'''})
    assert hits(scan(tmp_path)) == {("iac.compose.risky_port_published", "docker-compose.override.yml", 5),
                                    ("iac.compose.root_user", "docker-compose.override.yml", 5)}


def test_merge_keys_are_applied(tmp_path: Path) -> None:
    write_tree(tmp_path, {"compose.yml": '''x-risky: &risky
  privileged: true
  pid: host
services:
  a:
    <<: *risky
    image: a:1
'''})
    assert {"iac.compose.privileged", "iac.compose.host_pid"} <= rule_ids(scan(tmp_path))
