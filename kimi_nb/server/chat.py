"""The sidebar's chat request: validate the browser's JSON body, then build the model messages and toolbox."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from kimi_nb.config import KimiNB
from kimi_nb.context import ContextRequest, ErrorInfo, build
from kimi_nb.errors import NotebookError
from kimi_nb.memory import MemoryStore
from kimi_nb.notebook import SnapshotNotebook, snapshot_from_json
from kimi_nb.tools import Image, Toolbox

__all__ = ["IMAGE_MIMES", "BadRequest", "ChatRequest", "Conversation", "prepare_conversation"]

#: Image types the sidebar accepts (what Kimi K2.5's vision input takes).
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")


class BadRequest(ValueError):
    """The request body is not what the contract says; ``str(err)`` is one line naming the field."""


@dataclass(frozen=True)
class ChatRequest:
    """One ``POST chat`` body. ``path`` is only a label for the notebook: nothing is read from or written to it."""

    prompt: str
    notebook: dict[str, Any] | None = None
    path: str = ""
    active_cell_id: str | None = None
    cell_ids: tuple[str, ...] | None = None
    images: tuple[Image, ...] = ()
    error: ErrorInfo | None = None
    history: tuple[dict[str, Any], ...] = ()
    thinking: bool | None = None

    @classmethod
    def from_json(cls, body: Any) -> ChatRequest:
        """Validate a decoded JSON body. Raises BadRequest naming the first bad field."""
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        unknown = sorted(set(body) - set(cls.__dataclass_fields__))
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}")
        if "prompt" not in body:
            raise BadRequest("'prompt' is required")
        prompt = _field(body, "prompt", str, required=True)
        if not prompt.strip():
            raise BadRequest("'prompt' is empty")
        notebook = _field(body, "notebook", dict)
        cell_ids = _field(body, "cell_ids", list)
        if cell_ids is not None and not all(isinstance(cell_id, str) for cell_id in cell_ids):
            raise BadRequest("'cell_ids' must be a list of strings or null")
        history = _field(body, "history", list) or []
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in history):
            raise BadRequest("'history' must be a list of chat messages with a 'role', or null")
        return cls(
            prompt=prompt,
            notebook=notebook,
            path=_field(body, "path", str) or "",
            active_cell_id=_field(body, "active_cell_id", str),
            cell_ids=tuple(cell_ids) if cell_ids is not None else None,
            images=tuple(_image(item, n) for n, item in enumerate(_field(body, "images", list) or [])),
            error=_cell_error(_field(body, "error", dict)),
            history=tuple(history),
            thinking=_field(body, "thinking", bool),
        )


def _field(body: dict[str, Any], key: str, kind: type, *, required: bool = False) -> Any:
    """``body[key]`` checked to be of ``kind`` (or null / absent unless ``required``)."""
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind):
        expected = _JSON_NAMES[kind] + ("" if required else " or null")
        raise BadRequest(f"{key!r} must be {expected}, got {_JSON_NAMES.get(type(value), 'null')}")
    return value


def _image(item: Any, number: int) -> Image:
    where = f"'images[{number}]'"
    if not isinstance(item, dict) or not isinstance(item.get("mime"), str) or not isinstance(item.get("data"), str):
        raise BadRequest(f"{where} must be an object with string 'mime' and 'data'")
    if item["mime"] not in IMAGE_MIMES:
        raise BadRequest(f"{where}: unsupported image type {item['mime']!r} (use {', '.join(IMAGE_MIMES)})")
    try:
        base64.b64decode(item["data"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: 'data' is not base64") from None
    return Image(mime=item["mime"], data=item["data"])


def _cell_error(value: dict[str, Any] | None) -> ErrorInfo | None:
    if value is None:
        return None
    fields = {key: value.get(key) for key in ("cell_id", "ename", "evalue")}
    wrong = [key for key, field in fields.items() if not isinstance(field, str)]
    if wrong:
        raise BadRequest(f"'error.{wrong[0]}' must be a string")
    traceback = value.get("traceback") or []
    if not isinstance(traceback, list) or not all(isinstance(line, str) for line in traceback):
        raise BadRequest("'error.traceback' must be a list of strings")
    return ErrorInfo(traceback=tuple(traceback), **fields)


_JSON_NAMES: dict[type, str] = {str: "a string", dict: "an object", list: "a list", bool: "true or false",
                                int: "a number", float: "a number"}


@dataclass(frozen=True)
class Conversation:
    """What one chat request runs: the messages for the model, the tools over the browser's notebook, and what
    the context budget left out (told to the user as notices)."""

    messages: list[dict[str, Any]]
    toolbox: Toolbox
    dropped: tuple[str, ...] = ()


def prepare_conversation(request: ChatRequest, settings: KimiNB, memory: MemoryStore) -> Conversation:
    """Snapshot the notebook the browser sent and assemble the context. Raises BadRequest for an invalid notebook."""
    try:
        snapshot = snapshot_from_json(request.notebook or _EMPTY_NOTEBOOK, request.path,
                                      active_cell_id=request.active_cell_id)
    except NotebookError as exc:
        raise BadRequest(f"'notebook': {exc}") from None
    context = ContextRequest(
        request.prompt,
        snapshot=snapshot,
        cell_ids=request.cell_ids,
        error=request.error,
        images=request.images,
        history=request.history,
    )
    built = build(context, memories=memory.list(), budget=settings.context_budget,
                  redact_secrets=settings.redact_secrets)
    return Conversation(built.messages, Toolbox(SnapshotNotebook(snapshot), memory=memory), tuple(built.dropped))


_EMPTY_NOTEBOOK: dict[str, Any] = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}
