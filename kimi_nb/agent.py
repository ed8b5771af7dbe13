"""The tool-call loop: stream a turn, run the tools it asks for, send results back, until the model answers.

Proposals flow out as events; the loop never applies them to a user's notebook. Tool failures (missing cell,
malformed arguments, unknown tool) go back to the model as tool results, never raised. Every assistant turn is
kept in the history with its ``reasoning_content`` and tool results carry the model's exact ``tool_call_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Union

from kimi_nb.engine import Engine, Finished, Usage
from kimi_nb.protocol import (
    Message,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    assistant_message,
)
from kimi_nb.tools import Image, Proposal, ToolResult

if TYPE_CHECKING:
    from kimi_nb.tools import Toolbox

__all__ = [
    "ToolCallRequested",
    "ToolResultEvent",
    "ProposalMade",
    "Notice",
    "AgentDone",
    "AgentEvent",
    "run_agent",
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


async def run_agent(
    engine: Engine,
    messages: list[dict[str, Any]],
    toolbox: "Toolbox",
    *,
    max_steps: int = 8,
    max_tokens: int | None = None,
    thinking: bool | None = None,
    model: str | None = None,
) -> AsyncIterator[AgentEvent]:
    """Run the model with the toolbox's tools until it answers without calling a tool (or max_steps turns).

    Yields the engine's stream events as they arrive, then for each tool call ToolCallRequested,
    ToolResultEvent and ProposalMade (when the tool proposed a change), Usage per turn, Notice for things the
    user must be told, and finally one AgentDone. Raises EngineError when the endpoint fails.
    """
    history = list(messages)
    tools = toolbox.schemas()
    usage = Usage()
    message = Message()
    for step in range(1, max_steps + 1):
        finished: Finished | None = None
        async for event in engine.stream(history, tools=tools, max_tokens=max_tokens, thinking=thinking, model=model):
            if isinstance(event, Finished):
                finished = event
            elif isinstance(event, Usage):
                usage += event
                yield event
            elif not isinstance(event, ToolCallDone):  # the loop announces calls itself, once each, below
                yield event
        assert finished is not None, "Engine.stream must end with Finished"
        message = finished.message
        history.append(assistant_message(message))
        if not message.tool_calls:
            notice = _empty_answer_notice(message, finished.reason)
            if notice:
                yield Notice(notice)
            yield AgentDone(message, usage, step, "answer", history)
            return
        images: list[Image] = []
        for call in message.tool_calls:
            yield ToolCallRequested(call)
            result = await toolbox.call(call)
            yield ToolResultEvent(result)
            if result.proposal is not None:
                yield ProposalMade(result.proposal, call.id)
            if result.image is not None:
                images.append(result.image)
            history.append({"role": "tool", "tool_call_id": call.id, "content": result.content})
        if images:
            history.append(_image_message(images))
    yield Notice(f"Stopped after {max_steps} model turns without a final answer; the proposals so far are kept.")
    yield AgentDone(message, usage, max_steps, "max_steps", history)


def _empty_answer_notice(message: Message, reason: str) -> str | None:
    """Never show an empty answer silently: say what happened."""
    if reason == "length":
        return "The answer was cut off at the max-tokens limit; raise it (e.g. -t / max_tokens) and ask again."
    if message.content.strip():
        return None
    if message.reasoning.strip():
        return (
            "Kimi only produced reasoning and no answer (the endpoint's reasoning parser may have kept it all); "
            "try again, or turn thinking off."
        )
    return "Kimi returned an empty answer; try again or rephrase the request."


def _image_message(images: list[Image]) -> dict[str, Any]:
    """Images requested with view_image: tool messages cannot carry images, so they follow as a user turn."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": "Images returned by view_image, in call order:"}]
    parts += [{"type": "image_url", "image_url": {"url": image.data_url()}} for image in images]
    return {"role": "user", "content": parts}
