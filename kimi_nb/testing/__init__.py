"""Test and demo support: the ScriptedServer, an OpenAI-compatible Kimi-protocol server (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Script", "ScriptedServer", "Turn", "demo_responder", "load_script", "parse_turn"]

_HOMES = {
    "ScriptedServer": "kimi_nb.testing.server",
    "Script": "kimi_nb.testing.script",
    "Turn": "kimi_nb.testing.script",
    "load_script": "kimi_nb.testing.script",
    "parse_turn": "kimi_nb.testing.script",
    "demo_responder": "kimi_nb.testing.demo",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'kimi_nb.testing' has no attribute {name!r}")
