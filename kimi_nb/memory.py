"""Persistent per-user memory: short notes the model and the user keep across sessions, in one JSON file.

The file is re-read on every operation (the magics, the server and the CLI may share it) and written
atomically. Stored memories are offered to the model in the stable prompt prefix (``render_memories``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from kimi_nb.errors import ToolError
from kimi_nb.notebook import write_text_atomic

__all__ = ["MAX_CONTENT_CHARS", "MAX_KEY_CHARS", "MAX_MEMORIES", "Memory", "MemoryStore", "render_memories"]

MAX_KEY_CHARS = 80
MAX_CONTENT_CHARS = 2000
MAX_MEMORIES = 200
FILE_NAME = "memories.json"


@dataclass(frozen=True)
class Memory:
    """One note. ``updated_at`` is an ISO 8601 UTC timestamp."""

    key: str
    content: str
    updated_at: str


class MemoryStore:
    """The memory notes in ``directory``/memories.json. Errors are ToolError one-liners the model can act on."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, FILE_NAME)

    def __repr__(self) -> str:
        return f"MemoryStore({self.directory!r})"

    # ------------------------------------------------------------------------------------------------ reads

    def list(self) -> list[Memory]:
        """All notes, sorted by key."""
        return sorted(self._load().values(), key=lambda m: m.key)

    def get(self, key: str) -> Memory:
        """The note with this key. Raises ToolError if there is none."""
        memories = self._load()
        return memories[self._existing(memories, key)]

    def read(self, query: str = "") -> list[Memory]:
        """Notes matching ``query``: the whole query as a substring, else any of its words, over key and content.

        Case-insensitive; best matches first (whole-query matches, then by number of words matched), ties by
        key. An empty query lists all notes.
        """
        memories = self.list()
        query = query.strip().lower()
        if not query:
            return memories
        words = [w for w in re.findall(r"\w+", query) if len(w) > 1] or [query]
        scored = []
        for memory in memories:
            haystack = f"{memory.key}\n{memory.content}".lower()
            score = 1000 if query in haystack else sum(word in haystack for word in words)
            if score:
                scored.append((-score, memory.key, memory))
        return [memory for *_, memory in sorted(scored, key=lambda item: item[:2])]

    # ----------------------------------------------------------------------------------------------- writes

    def create(self, key: str, content: str) -> Memory:
        """Add a note. Raises ToolError if the key exists (use update) or the note is invalid."""
        key, content = _check_key(key), _check_content(content)
        memories = self._load()
        if any(existing.lower() == key.lower() for existing in memories):
            raise ToolError(f"a note with key {key!r} already exists; use memory_update to change it")
        if len(memories) >= MAX_MEMORIES:
            raise ToolError(f"the memory is full ({MAX_MEMORIES} notes); delete old notes first")
        memories[key] = Memory(key, content, _now())
        self._save(memories)
        return memories[key]

    def update(self, key: str, content: str) -> Memory:
        """Replace a note's content. Raises ToolError if there is no such note."""
        content = _check_content(content)
        memories = self._load()
        key = self._existing(memories, key)
        memories[key] = Memory(key, content, _now())
        self._save(memories)
        return memories[key]

    def delete(self, key: str) -> Memory:
        """Remove a note and return it. Raises ToolError if there is no such note."""
        memories = self._load()
        removed = memories.pop(self._existing(memories, key))
        self._save(memories)
        return removed

    def clear(self) -> int:
        """Remove every note; returns how many there were."""
        count = len(self._load())
        self._save({})
        return count

    # -------------------------------------------------------------------------------------------- internals

    def _existing(self, memories: dict[str, Memory], key: str) -> str:
        wanted = key.strip().lower()
        for existing in memories:
            if existing.lower() == wanted:
                return existing
        known = ", ".join(sorted(memories)) or "none"
        raise ToolError(f"no note with key {key.strip()!r}; existing keys: {known}")

    def _load(self) -> dict[str, Memory]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                raw = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ToolError(f"cannot read the memory file {self.path}: {exc}") from None
        try:
            return {item["key"]: Memory(item["key"], item["content"], item.get("updated_at", "")) for item in
                    raw["memories"]}
        except (KeyError, TypeError):
            raise ToolError(f"the memory file {self.path} is not in kimi-nb's format") from None

    def _save(self, memories: dict[str, Memory]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        items = [
            {"key": m.key, "content": m.content, "updated_at": m.updated_at}
            for m in sorted(memories.values(), key=lambda m: m.key)
        ]
        write_text_atomic(self.path, json.dumps({"version": 1, "memories": items}, indent=1, ensure_ascii=False) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_key(key: str) -> str:
    key = " ".join(str(key).split())
    if not key:
        raise ToolError("the note key is empty; give it a short name like \"plot-style\"")
    if len(key) > MAX_KEY_CHARS:
        raise ToolError(f"the note key is too long ({len(key)} characters; at most {MAX_KEY_CHARS})")
    return key


def _check_content(content: str) -> str:
    content = str(content).strip()
    if not content:
        raise ToolError("the note content is empty")
    if len(content) > MAX_CONTENT_CHARS:
        raise ToolError(f"the note is too long ({len(content)} characters; at most {MAX_CONTENT_CHARS}); "
                        "keep notes short")
    return content


def render_memories(memories: list[Memory] | tuple[Memory, ...]) -> str:
    """The notes as a prompt section, sorted by key, without timestamps: deterministic for the prefix cache."""
    if not memories:
        return ""
    lines = [f"- {m.key}: {m.content}" for m in sorted(memories, key=lambda m: m.key)]
    return "## Saved notes (memory_* tools manage them)\n" + "\n".join(lines)
