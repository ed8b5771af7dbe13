"""The Kimi K2 / K2.5 wire format: parse, stream-parse and render assistant turns. Pure, no I/O.

(Implementation in progress: types below are the stable API.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "ToolCall",
    "Message",
    "TextDelta",
    "ReasoningDelta",
    "ToolCallStarted",
    "ToolCallArgumentsDelta",
    "ToolCallDone",
    "StreamEvent",
    "parse",
    "StreamParser",
    "render",
    "assistant_message",
]


@dataclass(frozen=True)
class ToolCall:
    """One tool call. ``error`` is set (and ``arguments`` is ``{}``) when the call cannot be trusted:
    malformed argument JSON, cut off by max_tokens, an ambiguous bare-counter id. ``raw_arguments`` keeps
    the text the model wrote (not part of equality)."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    raw_arguments: str = field(default="", compare=False)


@dataclass(frozen=True)
class Message:
    """A parsed assistant turn."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArgumentsDelta:
    index: int
    delta: str


@dataclass(frozen=True)
class ToolCallDone:
    index: int
    call: ToolCall


StreamEvent = Union[TextDelta, ReasoningDelta, ToolCallStarted, ToolCallArgumentsDelta, ToolCallDone]


def assistant_message(message: Message) -> dict[str, Any]:
    """The OpenAI chat message for an assistant turn in the history.

    ``reasoning_content`` is kept (Moonshot's API rejects tool-call turns without it when thinking is on);
    no field is ever null (vLLM answers 422 to nulls); arguments go back exactly as the model wrote them
    when they were valid JSON.
    """
    out: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.reasoning:
        out["reasoning_content"] = message.reasoning
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.raw_arguments or json.dumps(call.arguments, ensure_ascii=False),
                },
            }
            for call in message.tool_calls
        ]
    return out
