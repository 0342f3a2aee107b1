"""Shared test setup: Ray binds loopback only and uses token auth, set before any import."""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

from tests.postgres import postgres_server, postgres_url, store_url  # noqa: F401  (one server)
from tests.ray_head import ray_head  # noqa: F401  (one head per worker, every tier)
