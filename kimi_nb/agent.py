"""The tool-call loop: stream a turn, run the tools it asks for, send results back, until the model answers.

(Implementation in progress: types below are the stable API.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from kimi_nb.engine import Usage
from kimi_nb.protocol import (
    Message,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallStarted,
)
from kimi_nb.tools import Proposal, ToolResult

__all__ = [
    "ToolCallRequested",
    "ToolResultEvent",
    "ProposalMade",
    "Notice",
    "AgentDone",
    "AgentEvent",
    "event_to_json",
    "error_json",
]


@dataclass(frozen=True)
class ToolCallRequested:
    """The model asked for a tool (emitted before it runs)."""

    call: ToolCall


@dataclass(frozen=True)
class ToolResultEvent:
    result: ToolResult


@dataclass(frozen=True)
class ProposalMade:
    """A tool produced a change for the front door to apply or to show for Accept / Reject."""

    proposal: Proposal
    call_id: str


@dataclass(frozen=True)
class Notice:
    """Something the user should be told that is not the model's answer (e.g. an empty reasoning-only turn)."""

    text: str


@dataclass(frozen=True)
class AgentDone:
    """The loop ended. ``stopped``: "answer" | "max_steps" | "cancelled". ``messages`` is the whole history
    (OpenAI chat messages) to continue the conversation with."""

    final_message: Message
    usage: Usage
    steps: int
    stopped: str = "answer"
    messages: list[dict[str, Any]] = field(default_factory=list)


AgentEvent = Union[
    TextDelta,
    ReasoningDelta,
    ToolCallStarted,
    ToolCallArgumentsDelta,
    ToolCallRequested,
    ToolResultEvent,
    ProposalMade,
    Usage,
    Notice,
    AgentDone,
]


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
    }


def event_to_json(event: AgentEvent) -> dict[str, Any]:
    """The JSON form of an agent event: the one schema the browser and the kernel comm mirror."""
    if isinstance(event, TextDelta):
        return {"type": "text", "text": event.text}
    if isinstance(event, ReasoningDelta):
        return {"type": "reasoning", "text": event.text}
    if isinstance(event, ToolCallStarted):
        return {"type": "tool_call_started", "index": event.index, "id": event.id, "name": event.name}
    if isinstance(event, ToolCallArgumentsDelta):
        return {"type": "tool_call_arguments", "index": event.index, "delta": event.delta}
    if isinstance(event, ToolCallRequested):
        call = event.call
        return {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments, "error": call.error}
    if isinstance(event, ToolResultEvent):
        result = event.result
        return {
            "type": "tool_result",
            "id": result.call_id,
            "name": result.name,
            "content": result.content,
            "is_error": result.is_error,
            "has_image": result.image is not None,
        }
    if isinstance(event, ProposalMade):
        return {"type": "proposal", "call_id": event.call_id, **event.proposal.to_json()}
    if isinstance(event, Usage):
        return {"type": "usage", **_usage_json(event)}
    if isinstance(event, Notice):
        return {"type": "notice", "text": event.text}
    if isinstance(event, AgentDone):
        return {
            "type": "done",
            "content": event.final_message.content,
            "reasoning": event.final_message.reasoning,
            "steps": event.steps,
            "stopped": event.stopped,
            "usage": _usage_json(event.usage),
            "messages": event.messages,
        }
    raise TypeError(f"not an agent event: {type(event).__name__}")


def error_json(message: str) -> dict[str, Any]:
    """The JSON form of a failure a front door reports instead of a traceback."""
    return {"type": "error", "message": message}
