"""Suite-wide fixtures: the real-service harness (tests/harness) is available to every test, and
compiled Hyperscan databases are shared by the run in a folder of its own, never in the user's data dir
(engines/hyperscan_cache.py): each Inspector after the first loads in ~0.1 s instead of compiling."""

import os

import pytest

from tests.harness.fixtures import *  # noqa: F403


@pytest.fixture(autouse=True, scope="session")
def _hyperscan_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("CLOUDWARD_HYPERSCAN_CACHE", str(tmp_path_factory.mktemp("hyperscan-cache")))
