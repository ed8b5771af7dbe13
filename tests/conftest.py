"""Shared pytest fixtures: anyio on asyncio, and a ScriptedServer factory."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
