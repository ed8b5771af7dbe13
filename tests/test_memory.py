"""The persistent memory store: CRUD on a real JSON file, search, errors, and the prompt rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimi_nb.errors import KimiError, ToolError
from kimi_nb.memory import MAX_CONTENT_CHARS, Memory, MemoryStore, render_memories


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    return MemoryStore(tmp_path / "kimi_nb" / "memory")


def test_crud_persists_across_instances(store: MemoryStore) -> None:
    assert store.list() == [] and store.read() == []
    created = store.create("  plot  style ", "Prefer seaborn\n")
    assert created.key == "plot style" and created.content == "Prefer seaborn"
    assert created.updated_at.endswith("Z")
    store.create("units", "Celsius")
    again = MemoryStore(store.directory)
    assert [m.key for m in again.list()] == ["plot style", "units"]
    assert again.update("UNITS", "Kelvin").key == "units"  # keys match case-insensitively
    assert store.get("units").content == "Kelvin"
    assert again.delete("plot style").content == "Prefer seaborn"
    assert [m.key for m in store.list()] == ["units"]
    assert store.clear() == 1 and store.list() == []
    data = json.loads(Path(store.path).read_text())
    assert data == {"version": 1, "memories": []}


def test_file_is_deterministic_json_with_no_temp_leftovers(store: MemoryStore) -> None:
    store.create("b", "second")
    store.create("a", "first ünïcode")
    text = Path(store.path).read_text(encoding="utf-8")
    assert [m["key"] for m in json.loads(text)["memories"]] == ["a", "b"]
    assert "ünïcode" in text
    assert sorted(p.name for p in Path(store.directory).iterdir()) == ["memories.json"]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda s: s.create("units", "again"), "a note with key 'units' already exists; use memory_update"),
        (lambda s: s.update("nope", "x"), "no note with key 'nope'; existing keys: units"),
        (lambda s: s.delete("nope"), "no note with key 'nope'"),
        (lambda s: s.get("nope"), "no note with key 'nope'"),
        (lambda s: s.create(" ", "x"), "the note key is empty"),
        (lambda s: s.create("k" * 81, "x"), "the note key is too long (81 characters; at most 80)"),
        (lambda s: s.create("k", "  "), "the note content is empty"),
        (lambda s: s.create("k", "x" * (MAX_CONTENT_CHARS + 1)), "the note is too long"),
    ],
)
def test_errors_are_one_line_tool_errors(store: MemoryStore, action, message: str) -> None:
    store.create("units", "Celsius")
    with pytest.raises(ToolError) as info:
        action(store)
    assert isinstance(info.value, KimiError)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_read_matches_keywords_over_keys_and_contents(store: MemoryStore) -> None:
    store.create("plot-style", "Use seaborn with a dark theme")
    store.create("units", "Temperatures are in Celsius")
    store.create("data-source", "Readings come from the plant's sensor API")
    assert [m.key for m in store.read("")] == ["data-source", "plot-style", "units"]
    assert [m.key for m in store.read("CELSIUS")] == ["units"]
    assert [m.key for m in store.read("plot")] == ["plot-style"]
    # whole-query matches first, then by words matched
    assert [m.key for m in store.read("dark theme sensor")] == ["plot-style", "data-source"]
    assert [m.key for m in store.read("sensor API")] == ["data-source"]
    assert store.read("nothing like this") == []


def test_corrupt_file_is_a_clear_error(store: MemoryStore) -> None:
    Path(store.directory).mkdir(parents=True)
    Path(store.path).write_text("{broken")
    with pytest.raises(ToolError, match="cannot read the memory file"):
        store.list()
    Path(store.path).write_text('{"memories": [{"nokey": 1}]}')
    with pytest.raises(ToolError, match="not in kimi-nb's format"):
        store.list()


def test_render_is_sorted_and_timestamp_free() -> None:
    memories = [Memory("units", "Celsius", "2026-01-02T00:00:00Z"), Memory("a-style", "seaborn", "2025-01-01T00:00:00Z")]
    rendered = render_memories(memories)
    assert rendered == render_memories(list(reversed([Memory(m.key, m.content, "other") for m in memories])))
    assert rendered.splitlines()[1:] == ["- a-style: seaborn", "- units: Celsius"]
    assert render_memories([]) == ""
