"""Images shared by the container tests, built once per session with umoci/skopeo (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.images import Layout, build_multilayer


@pytest.fixture(scope="session")
def app_layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_multilayer(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")
