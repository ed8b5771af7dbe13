"""How a scripted Turn becomes an OpenAI chat completion: streamed chunks (vLLM's shapes) or one JSON body."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kimi_nb.testing.script import Turn

__all__ = ["NO_CONTENT", "Piece", "Reply", "chunk_body", "completion_body", "plan_reply", "prompt_text", "usage_body"]

#: The empty-turn artefact some clients and proxies put in ``content``.
NO_CONTENT = "(no content)"


@dataclass(frozen=True)
class Piece:
    """One streamed delta: ``kind`` is reasoning | content | tool_start | tool_args."""

    kind: str
    text: str = ""
    index: int = 0
    id: str = ""
    name: str = ""

    def truncated(self, length: int) -> Piece:
        return Piece(self.kind, self.text[:length], self.index, self.id, self.name)


@dataclass(frozen=True)
class Reply:
    """A planned answer: the pieces to stream, the whole message and why it finished."""

    pieces: tuple[Piece, ...]
    message: dict[str, Any]
    finish_reason: str
    completion_chars: int
    reasoning_field: str = "reasoning"

    def delta(self, piece: Piece) -> dict[str, Any]:
        """The ``choices[0].delta`` object of one chunk, shaped as vLLM streams it."""
        if piece.kind == "reasoning":
            return {self.reasoning_field: piece.text}
        if piece.kind == "content":
            return {"content": piece.text}
        if piece.kind == "tool_start":
            return {"tool_calls": [{"index": piece.index, "id": piece.id, "type": "function",
                                    "function": {"name": piece.name}}]}
        return {"tool_calls": [{"index": piece.index, "function": {"arguments": piece.text}}]}


def plan_reply(turn: Turn, request: dict[str, Any]) -> Reply:
    """The answer ``turn`` gives to ``request`` (used for default tool-call ids)."""
    content, reasoning, calls = _parts(turn, _calls_in_history(request.get("messages", [])))
    if turn.fault.no_content:
        content = NO_CONTENT + content
    pieces = [*_split("reasoning", reasoning, turn.chunk), *_split("content", content, turn.chunk)]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message[turn.reasoning_field] = reasoning
    if calls:
        message["tool_calls"] = []
        for index, (call_id, name, arguments) in enumerate(calls):
            pieces.append(Piece("tool_start", index=index, id=call_id, name=name))
            pieces.extend(_split("tool_args", arguments, turn.chunk, index=index))
            message["tool_calls"].append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            )
    finish_reason = turn.finish_reason or ("tool_calls" if calls else "stop")
    chars = sum(len(p.text) + len(p.name) for p in pieces)
    return Reply(tuple(pieces), message, finish_reason, chars, turn.reasoning_field)


def _parts(turn: Turn, first_index: int) -> tuple[str, str, list[tuple[str, str, str]]]:
    """(content, reasoning, structured calls) as the server sends them for the turn's mode."""
    if turn.text is not None:
        return turn.text, "", []
    calls = [
        (call.id or f"functions.{call.name}:{first_index + number}", call.name, call.arguments_text)
        for number, call in enumerate(turn.tool_calls)
    ]
    if turn.mode == "structured":
        return turn.content, turn.reasoning, calls
    from kimi_nb.protocol import Message, ToolCall, render

    tool_calls = [ToolCall(id=i, name=n, arguments=_as_dict(a), raw_arguments=a) for i, n, a in calls]
    return render(Message(content=turn.content, reasoning=turn.reasoning, tool_calls=tool_calls)), "", []


def _as_dict(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _calls_in_history(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(
        len(m.get("tool_calls") or [])
        for m in messages
        if isinstance(m, dict) and m.get("role") == "assistant"
    )


def _split(kind: str, text: str, size: int, index: int = 0) -> Iterator[Piece]:
    for start in range(0, len(text), size):
        yield Piece(kind, text[start:start + size], index=index)


def prompt_text(request: dict[str, Any]) -> str:
    """The prompt as the server "sees" it, tools first like Kimi's template (for token counts and caching)."""
    return json.dumps(request.get("tools") or [], ensure_ascii=False) + json.dumps(
        request.get("messages") or [], ensure_ascii=False
    )


def usage_body(turn: Turn, reply: Reply, prompt: str, previous_prompt: str) -> dict[str, Any]:
    """Plausible usage (about 4 characters per token); cached tokens cover the prefix shared with the
    previous request, as vLLM's prefix cache would."""
    shared = 0
    for a, b in zip(prompt, previous_prompt):
        if a != b:
            break
        shared += 1
    override = turn.usage
    prompt_tokens = override.prompt_tokens if override.prompt_tokens is not None else math.ceil(len(prompt) / 4)
    completion = override.completion_tokens
    completion = completion if completion is not None else math.ceil(reply.completion_chars / 4)
    cached = override.cached_tokens if override.cached_tokens is not None else min(shared // 4, prompt_tokens)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def completion_body(reply: Reply, model: str, usage: dict[str, Any], number: int) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-scripted-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply.message, "finish_reason": reply.finish_reason}],
        "usage": usage,
    }


def chunk_body(model: str, number: int, delta: dict[str, Any] | None, finish_reason: str | None = None,
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` gives the final usage-only chunk (empty choices)."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-scripted-{number}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body
