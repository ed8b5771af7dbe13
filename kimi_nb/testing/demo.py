"""The offline demo responder: plausible, deterministic answers without a model, for kimi-nb with no endpoint."""

from __future__ import annotations

import re
from typing import Any

from kimi_nb.context import REQUEST_HEADING

__all__ = ["OFFLINE_NOTE", "demo_responder"]

OFFLINE_NOTE = (
    "This answer comes from **kimi-nb's offline scripted engine**: no model endpoint is configured, so no model "
    "ran. To talk to Kimi K2.5, set `KIMI_API_KEY` (Moonshot's API) or `KIMI_BASE_URL` (e.g. a vLLM server at "
    "`http://gpu-host:8000/v1`), optionally `KIMI_MODEL`, then restart the kernel or JupyterLab."
)


def demo_responder(request: dict[str, Any]) -> dict[str, Any]:
    """A TURN dict answering ``request``: after a tool result a short final answer; after a user prompt a
    markdown note about offline mode plus, when ``insert_cell`` is declared, one call inserting a small cell."""
    messages = request.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return {
            "reasoning": "The tool call went through; I will wrap up briefly.",
            "content": "Done — the proposed cell is above. (offline scripted engine: no model endpoint configured)",
        }
    prompt = _text(last.get("content"))
    # kimi-nb's context puts the notebook first and the user's words last, under "## Request"
    prompt = prompt.rpartition(REQUEST_HEADING)[2] or prompt
    first_line = next((line.strip() for line in prompt.splitlines() if line.strip()), "your request")[:80]
    turn: dict[str, Any] = {
        "reasoning": f"The user asked: {first_line!r}. No model is configured, so I explain offline mode.",
        "content": f"You asked: *{first_line}*\n\n{OFFLINE_NOTE}\n",
    }
    tool = _declared_tool(request, "insert_cell")
    if tool is not None:
        turn["tool_calls"] = [{"name": "insert_cell", "arguments": _cell_arguments(tool, first_line)}]
    return turn


def _text(content: Any) -> str:
    """The text of a message's content (a string or OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _declared_tool(request: dict[str, Any], name: str) -> dict[str, Any] | None:
    for tool in request.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            return function
    return None


def _cell_arguments(function: dict[str, Any], first_line: str) -> dict[str, Any]:
    """Arguments fitting the declared schema: the code goes into the source-like property."""
    slug = re.sub(r"[^\w ]+", "", first_line).strip() or "demo"
    code = f"# kimi-nb offline demo for: {slug}\nprint('Hello from the offline scripted engine')\n"
    properties = (function.get("parameters") or {}).get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in properties:
        if name in ("source", "code", "content", "text"):
            arguments[name] = code
        elif name == "cell_type":
            arguments[name] = "code"
    return arguments or {"source": code}
