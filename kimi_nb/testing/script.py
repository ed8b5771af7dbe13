"""Scripted-server scripts: load and validate JSON scripts into frozen Turn dataclasses.

A script is ``{"turns": [TURN, ...]}`` plus optional top-level options; each chat request is answered by the
next turn. Keys of a TURN (all optional):

- ``content``: answer text; ``reasoning``: thinking text.
- ``tool_calls``: ``[{"name": ..., "arguments": {...} or "raw text", "id": optional}]``. Default ids are
  ``functions.NAME:IDX``, IDX counting tool calls across the conversation (those already in the request's
  history, then this turn's). A string ``arguments`` is sent verbatim (e.g. malformed JSON).
- ``mode``: ``"structured"`` (default; like vLLM with ``--tool-call-parser kimi_k2 --reasoning-parser kimi_k2``:
  reasoning and tool calls as structured deltas) or ``"raw"`` (everything rendered with ``protocol.render`` into
  ``content``, as a leaking chat template does).
- ``text``: a verbatim raw completion streamed as ``content`` (replays real outputs); excludes ``content``,
  ``reasoning``, ``tool_calls`` and ``mode``.
- ``reasoning_field``: ``"reasoning"`` (current vLLM, default) or ``"reasoning_content"`` (Moonshot, older vLLM).
- ``chunk``: characters per streamed delta (default 8).
- ``finish_reason``: override (default ``"tool_calls"`` for structured tool calls, else ``"stop"``).
- ``usage``: ``{"prompt_tokens", "completion_tokens", "cached_tokens"}`` overrides of the computed counts.
- ``fault``: any of ``{"http": STATUS, "retry_after": SECONDS, "message": TEXT}`` (answer with that HTTP error;
  the turn is consumed, so a client's retry gets the *next* turn), ``{"drop_after": N}`` (close the connection
  after N characters, without ``[DONE]``), ``{"delay": SECONDS}`` (sleep before each chunk),
  ``{"no_content": true}`` (add the "(no content)" artefact to the content).
- ``match``: a string; the turn only answers a request whose messages contain it (contents, text parts,
  tool-call arguments). A request gets the first unused turn whose ``match`` it contains, else the first unused
  turn without ``match`` (plain scripts are answered in order). Lets concurrent conversations share one server.
- ``comment``: ignored (for people reading the script).

Top-level options: ``repeat`` (bool: once every turn is used, they all become available again, instead of
failing with "script exhausted"), ``models``
(model ids served; requests for other models get 404 like vLLM; default: any model is accepted),
``api_key`` (when set, requests without ``Authorization: Bearer <api_key>`` get 401), ``comment``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_nb.errors import ScriptError

__all__ = ["Fault", "Script", "ScriptedCall", "Turn", "UsageOverride", "load_script", "parse_turn"]

MODES = ("structured", "raw")
REASONING_FIELDS = ("reasoning", "reasoning_content")
DEFAULT_CHUNK = 8


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call the turn makes. ``arguments`` is a dict (sent as JSON) or a verbatim string."""

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None

    @property
    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class Fault:
    http: int | None = None
    retry_after: float | None = None
    message: str | None = None
    drop_after: int | None = None
    delay: float = 0.0
    no_content: bool = False


@dataclass(frozen=True)
class UsageOverride:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Turn:
    """One scripted answer (see the module docstring for the meaning of each field)."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ScriptedCall, ...] = ()
    mode: str = "structured"
    text: str | None = None
    reasoning_field: str = "reasoning"
    chunk: int = DEFAULT_CHUNK
    finish_reason: str | None = None
    usage: UsageOverride = UsageOverride()
    fault: Fault = Fault()
    match: str | None = None


@dataclass(frozen=True)
class Script:
    turns: tuple[Turn, ...]
    repeat: bool = False
    models: tuple[str, ...] = ()
    api_key: str | None = None

    def __repr__(self) -> str:  # never show the key
        key = "set" if self.api_key else "none"
        return f"Script(turns={len(self.turns)}, repeat={self.repeat}, models={self.models!r}, api_key={key})"


def load_script(source: Script | Mapping[str, Any] | str | os.PathLike[str]) -> Script:
    """A validated Script from a dict or a JSON file path. Raises ScriptError naming the bad key and turn."""
    if isinstance(source, Script):
        return source
    if isinstance(source, Mapping):
        return _parse_script(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScriptError(f"cannot read script {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ScriptError(f"script {path} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ScriptError(f"script {path} must be a JSON object with a 'turns' list")
    return _parse_script(data, where=f"script {path}")


def _parse_script(data: Mapping[str, Any], where: str = "script") -> Script:
    _check_keys(data, {"turns", "repeat", "models", "api_key", "comment"}, where)
    turns = data.get("turns")
    if not isinstance(turns, list):
        raise ScriptError(f"{where}: 'turns' must be a list of turn objects")
    models = data.get("models", [])
    if not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
        raise ScriptError(f"{where}: 'models' must be a list of model ids")
    api_key = data.get("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise ScriptError(f"{where}: 'api_key' must be a string")
    return Script(
        turns=tuple(parse_turn(turn, index) for index, turn in enumerate(turns)),
        repeat=_typed(data, "repeat", bool, False, where),
        models=tuple(models),
        api_key=api_key or None,
    )


def parse_turn(data: Mapping[str, Any], index: int | None = None) -> Turn:
    """A validated Turn from its JSON object (``index`` only names the turn in error messages)."""
    where = "script turn" if index is None else f"script turn {index}"
    if isinstance(data, Turn):
        return data
    if not isinstance(data, Mapping):
        raise ScriptError(f"{where}: a turn must be a JSON object, got {type(data).__name__}")
    _check_keys(data, set(Turn.__dataclass_fields__) | {"comment"}, where)
    mode = _choice(data, "mode", MODES, where)
    reasoning_field = _choice(data, "reasoning_field", REASONING_FIELDS, where)
    text = data.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise ScriptError(f"{where}: 'text' must be a string")
        clash = sorted({"content", "reasoning", "tool_calls", "mode"} & set(data))
        if clash:
            raise ScriptError(f"{where}: 'text' is a verbatim raw completion and excludes {', '.join(clash)}")
    chunk = _typed(data, "chunk", int, DEFAULT_CHUNK, where)
    if chunk < 1:
        raise ScriptError(f"{where}: 'chunk' must be at least 1")
    finish_reason, match = data.get("finish_reason"), data.get("match")
    for key, value in (("finish_reason", finish_reason), ("match", match)):
        if value is not None and not (isinstance(value, str) and value):
            raise ScriptError(f"{where}: {key!r} must be a non-empty string")
    calls = _parse_calls(data.get("tool_calls", []), where)
    if mode == "raw" and any(isinstance(call.arguments, str) for call in calls):
        raise ScriptError(f"{where}: raw mode renders arguments as JSON objects; use 'text' for a verbatim "
                          f"(e.g. malformed) raw call")
    return Turn(
        content=_typed(data, "content", str, "", where),
        reasoning=_typed(data, "reasoning", str, "", where),
        tool_calls=calls,
        mode=mode,
        text=text,
        reasoning_field=reasoning_field,
        chunk=chunk,
        finish_reason=finish_reason,
        usage=_parse_usage(data.get("usage", {}), where),
        fault=_parse_fault(data.get("fault", {}), where),
        match=match,
    )


def _parse_calls(calls: Any, where: str) -> tuple[ScriptedCall, ...]:
    if not isinstance(calls, list):
        raise ScriptError(f"{where}: 'tool_calls' must be a list")
    parsed = []
    for number, call in enumerate(calls):
        call_where = f"{where} tool_calls[{number}]"
        if not isinstance(call, Mapping):
            raise ScriptError(f"{call_where}: must be an object with 'name' and 'arguments'")
        _check_keys(call, {"name", "arguments", "id"}, call_where)
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise ScriptError(f"{call_where}: 'name' must be a non-empty string")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, (dict, str)):
            raise ScriptError(f"{call_where}: 'arguments' must be an object or a string")
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise ScriptError(f"{call_where}: 'id' must be a string")
        parsed.append(ScriptedCall(name=name, arguments=arguments, id=call_id))
    return tuple(parsed)


def _parse_fault(fault: Any, where: str) -> Fault:
    where = f"{where} fault"
    if not isinstance(fault, Mapping):
        raise ScriptError(f"{where}: must be an object")
    _check_keys(fault, set(Fault.__dataclass_fields__), where)
    http = fault.get("http")
    if http is not None and not (isinstance(http, int) and 400 <= http <= 599):
        raise ScriptError(f"{where}: 'http' must be an HTTP error status (400-599)")
    drop_after = fault.get("drop_after")
    if drop_after is not None and not (isinstance(drop_after, int) and drop_after >= 0):
        raise ScriptError(f"{where}: 'drop_after' must be a non-negative integer")
    retry_after = _number(fault, "retry_after", None, where)
    message = fault.get("message")
    if message is not None and not isinstance(message, str):
        raise ScriptError(f"{where}: 'message' must be a string")
    return Fault(
        http=http,
        retry_after=retry_after,
        message=message,
        drop_after=drop_after,
        delay=_number(fault, "delay", 0.0, where),
        no_content=_typed(fault, "no_content", bool, False, where),
    )


def _parse_usage(usage: Any, where: str) -> UsageOverride:
    where = f"{where} usage"
    if not isinstance(usage, Mapping):
        raise ScriptError(f"{where}: must be an object")
    _check_keys(usage, set(UsageOverride.__dataclass_fields__), where)
    values = {}
    for name in UsageOverride.__dataclass_fields__:
        value = usage.get(name)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise ScriptError(f"{where}: '{name}' must be a non-negative integer")
        values[name] = value
    return UsageOverride(**values)


def _check_keys(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScriptError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})")


def _typed(data: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = data.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScriptError(f"{where}: {key!r} must be of type {kind.__name__}, got {type(value).__name__}")
    return value


def _number(data: Mapping[str, Any], key: str, default: float | None, where: str) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ScriptError(f"{where}: {key!r} must be a non-negative number of seconds")
    return float(value)


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = data.get(key, choices[0])
    if value not in choices:
        raise ScriptError(f"{where}: {key!r} must be one of {', '.join(choices)}, got {value!r}")
    return value
