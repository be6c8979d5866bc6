"""Suite-wide fixtures: the real-service harness (tests/harness) is available to every test."""

from tests.harness.fixtures import *  # noqa: F403
