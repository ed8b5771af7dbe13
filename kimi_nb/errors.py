"""Every error kimi-nb raises on purpose: one base class, flat subclasses, one-line user-facing messages."""

from __future__ import annotations

__all__ = [
    "KimiError",
    "ConfigError",
    "EngineError",
    "LauncherError",
    "ScriptError",
    "ToolError",
    "NotebookError",
]


class KimiError(Exception):
    """Base of kimi-nb's errors. ``str(err)`` is one line a front door can print as is.

    Messages never contain secrets: build them from endpoint URLs and names, never from keys or headers.
    """

    def __init__(self, message: str) -> None:
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(KimiError):
    """The configuration is invalid or incomplete (bad URL, unknown option value)."""


class EngineError(KimiError):
    """The model endpoint failed: unreachable, auth refused, timeout, dropped stream, HTTP error.

    ``status`` is the HTTP status when there was one; ``retryable`` tells the agent loop whether trying
    again could help.
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class LauncherError(KimiError):
    """Launching or stopping a vLLM server failed (crash, never healthy, missing executable)."""


class ScriptError(KimiError):
    """A scripted-server script is invalid (unknown key, wrong type, out of turns)."""


class ToolError(KimiError):
    """A tool call cannot be carried out (missing cell, ambiguous edit, bad arguments).

    The agent loop sends the message back to the model as the tool result instead of raising it.
    """


class NotebookError(KimiError):
    """A notebook cannot be read, validated or written."""
