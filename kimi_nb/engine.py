"""Talking to K2.5: RemoteEngine over any OpenAI-compatible endpoint (Moonshot's API, vLLM, the ScriptedServer).

(Implementation in progress: types below are the stable API.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol, Union

from kimi_nb.errors import EngineError
from kimi_nb.protocol import Message, StreamEvent

__all__ = ["Usage", "Finished", "EngineEvent", "Engine", "EngineError"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class Finished:
    """The last event of one streamed completion: why it stopped and the whole parsed turn."""

    reason: str  # "stop", "tool_calls", "length", ...
    message: Message


EngineEvent = Union[StreamEvent, Usage, Finished]


class Engine(Protocol):
    """What the agent loop needs from an engine."""

    model: str

    def describe(self) -> str:
        """One line naming the endpoint and model (never the key)."""

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        model: str | None = None,
    ) -> AsyncIterator[EngineEvent]:
        """Stream one completion: protocol events, then Usage (when reported), then exactly one Finished.

        Raises EngineError with a one-line message on failure."""
