"""The tool-call loop: stream a turn, run the tools it asks for, send results back, until the model answers.

(Implementation in progress: types below are the stable API.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kimi_nb.engine import Usage
from kimi_nb.protocol import Message, ToolCall
from kimi_nb.tools import Proposal, ToolResult

__all__ = ["ToolCallRequested", "ToolResultEvent", "ProposalMade", "Notice", "AgentDone"]


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
