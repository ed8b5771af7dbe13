"""The messages for one model request: system prompt and memories, history, then the notebook and the prompt.

Deterministic and prefix-stable: the system message (prompt + saved notes, sorted) is byte-identical across
requests, the conversation history follows unchanged, and the volatile part (notebook view, error, variables,
the user's prompt, images) comes last in one user message, so vLLM's prefix cache and Moonshot's context
cache hit. Everything that leaves is passed through ``redact`` when ``redact_secrets`` is on.

Token estimates (``estimate_tokens``): UTF-8 bytes / 4, which is close to Kimi's tokenizer for English and
code (about 4 characters per token) and for CJK text (about 1.3 characters per token, 3 bytes each), plus 4
tokens per message and ``IMAGE_TOKENS`` per image. Estimates decide what fits the budget; exact counts come
back from the endpoint as usage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kimi_nb.cell_text import cell_summary, error_headline, render_cell, render_error, truncate
from kimi_nb.memory import Memory, render_memories
from kimi_nb.notebook import Cell, NotebookSnapshot
from kimi_nb.redact import redact
from kimi_nb.tools import Image

__all__ = [
    "IMAGE_TOKENS",
    "SYSTEM_PROMPT",
    "BuiltContext",
    "ContextRequest",
    "ErrorInfo",
    "build",
    "estimate_text_tokens",
    "estimate_tokens",
    "system_message",
]

#: Heads the user's own words, the last section of the request message.
REQUEST_HEADING = "## Request\n"

SYSTEM_PROMPT = """\
You are Kimi, an AI assistant built into Jupyter (kimi-nb). You help with the user's notebook: explain code, \
outputs and errors, fix bugs, write and refactor cells, analyse data and plots.

How to work:
- The user's message starts with a view of the notebook: the cells most relevant to the request in full, \
the others as one line with their id. Call read_cell to see any cell in full and list_cells for an overview; \
do not guess at code you have not seen.
- To change the notebook, call edit_cell (small search/replace changes), replace_cell, insert_cell or \
delete_cell instead of pasting code into your answer. Each call is a proposal the user accepts or rejects; \
afterwards say briefly what you changed and why.
- Fix the cause of an error, not the symptom. Keep the user's style, names and libraries; change only what \
is needed.
- You cannot run code: tell the user which cells to run to check a change.
- Secrets are masked as [REDACTED:...]. Never try to reveal or reconstruct them; edit around them.
- Answer concisely, in the user's language, in Markdown. Put code in fenced blocks only when you are not \
editing the notebook.
- When the user states a lasting preference or project fact, save it with memory_create if that tool is \
available."""

#: Estimated tokens per attached image (K2.5's vision encoder: about 1 token per 28x28 pixels; a typical
#: 640x480 matplotlib figure is ~400, a large screenshot ~1500).
IMAGE_TOKENS = 1000
#: Characters of outputs per cell shown in the notebook view (read_cell shows more).
CELL_OUTPUT_LIMIT = 2000
#: Characters of the failing cell's traceback.
ERROR_LIMIT = 6000
#: Characters per variable summary.
VARIABLE_LIMIT = 400
#: Cells shown in full when they are picked automatically (the model reads others with read_cell).
MAX_AUTO_FULL_CELLS = 8


@dataclass(frozen=True)
class ErrorInfo:
    """The error a request is about. ``traceback`` as IPython's list of frames or one string."""

    cell_id: str | None
    ename: str
    evalue: str
    traceback: Sequence[str] | str = ()


@dataclass(frozen=True)
class ContextRequest:
    """What a front door wants to ask.

    ``cell_ids``: cells to show in full (None: picked automatically around the error / active / last-run cell).
    ``images``: figures to attach (newest last). ``variables``: short summaries like ``df: DataFrame (100, 5)``.
    ``history``: the conversation so far as OpenAI messages (system messages in it are dropped; ``build``
    writes its own).
    """

    prompt: str
    snapshot: NotebookSnapshot | None = None
    cell_ids: Sequence[str] | None = None
    error: ErrorInfo | None = None
    images: Sequence[Image] = ()
    variables: Sequence[str] = ()
    history: Sequence[dict[str, Any]] = ()


@dataclass(frozen=True)
class BuiltContext:
    """The messages to send, notes on what was left out to fit the budget, and the estimated prompt tokens."""

    messages: list[dict[str, Any]]
    dropped: list[str]
    estimated_tokens: int


# ------------------------------------------------------------------------------------------------- tokens


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of a text: UTF-8 bytes / 4, rounded up."""
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    total = 0
    for part in content or ():
        if part.get("type") == "image_url":
            total += IMAGE_TOKENS
        else:
            total += estimate_text_tokens(str(part.get("text", "")))
    return total


def estimate_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """Estimated prompt tokens of OpenAI chat messages (text, image parts, reasoning, tool calls)."""
    total = 0
    for message in messages:
        total += 4 + _content_tokens(message.get("content"))
        total += estimate_text_tokens(message.get("reasoning_content") or "")
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            total += 8 + estimate_text_tokens(function.get("name", "") + function.get("arguments", ""))
    return total


# ------------------------------------------------------------------------------------------------- build


def system_message(memories: Sequence[Memory] = (), *, system_prompt: str = SYSTEM_PROMPT,
                   redact_secrets: bool = True) -> dict[str, Any]:
    """The stable first message: the system prompt, then the saved notes (sorted by key)."""
    notes = render_memories(tuple(memories))
    if redact_secrets:
        notes = redact(notes)
    return {"role": "system", "content": f"{system_prompt}\n\n{notes}" if notes else system_prompt}


def build(request: ContextRequest, *, memories: Sequence[Memory] = (), budget: int = 24000,
          redact_secrets: bool = True, system_prompt: str = SYSTEM_PROMPT) -> BuiltContext:
    """Assemble the messages for ``request`` within ``budget`` estimated tokens (tool declarations not counted).

    The system message, the prompt and the error are always sent. Images take at most a quarter of what is
    left, the history at most half of what then remains (oldest turns dropped first), and the notebook view
    the rest: one line per cell, and in full the cells nearest the error / active / last-run cell.
    """
    clean = redact if redact_secrets else (lambda text: text)
    dropped: list[str] = []
    system = system_message(memories, system_prompt=system_prompt, redact_secrets=redact_secrets)

    tail_sections = []
    if request.error is not None:
        tail_sections.append(_error_section(request.error, request.snapshot))
    if request.variables:
        lines = [truncate(" ".join(str(v).split("\n")), VARIABLE_LIMIT) for v in request.variables]
        tail_sections.append("## Variables\n" + "\n".join(f"- {line}" for line in lines))
    tail_sections.append(f"{REQUEST_HEADING}{request.prompt}")
    tail = clean("\n\n".join(tail_sections))
    left = budget - estimate_tokens([system]) - estimate_text_tokens(tail) - 8

    images = _fit_images(list(request.images), left // 4, dropped)
    left -= IMAGE_TOKENS * len(images)

    history = _fit_history(_clean_history(request.history, clean), max(left // 2, 0), dropped)
    left -= estimate_tokens(history)

    text = tail
    if request.snapshot is not None:
        view = _notebook_view(request.snapshot, request, max(left, 0), dropped)
        text = clean(view) + "\n\n" + tail

    content: Any = text
    if images:
        content = [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {"url": image.data_url()}} for image in images
        ]
    messages = [system, *history, {"role": "user", "content": content}]
    return BuiltContext(messages, dropped, estimate_tokens(messages))


def _error_section(error: ErrorInfo, snapshot: NotebookSnapshot | None) -> str:
    where = ""
    if error.cell_id:
        index = snapshot.index_of(error.cell_id) if snapshot is not None else None
        where = f" in cell #{index} (id {error.cell_id})" if index is not None else f" in cell {error.cell_id}"
    return f"## Error{where}\n```\n{truncate(render_error(error.ename, error.evalue, error.traceback), ERROR_LIMIT)}\n```"


def _fit_images(images: list[Image], allowance: int, dropped: list[str]) -> list[Image]:
    keep = max(0, min(len(images), allowance // IMAGE_TOKENS))
    if keep < len(images):
        dropped.append(f"{len(images) - keep} of {len(images)} images (the oldest) left out to fit the budget")
    return images[len(images) - keep :]


def _clean_history(history: Sequence[dict[str, Any]], clean: Any) -> list[dict[str, Any]]:
    """History without system messages, with every text redacted (deterministically, so the prefix holds)."""
    out = []
    for message in history:
        if message.get("role") == "system":
            continue
        message = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = clean(content)
        elif isinstance(content, list):
            message["content"] = [
                {**part, "text": clean(part["text"])} if part.get("type") == "text" and "text" in part else part
                for part in content
            ]
        if message.get("reasoning_content"):
            message["reasoning_content"] = clean(message["reasoning_content"])
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": clean(call["function"].get("arguments", ""))}}
                if isinstance(call.get("function"), dict) else call
                for call in message["tool_calls"]
            ]
        out.append(message)
    return out


def _fit_history(history: list[dict[str, Any]], allowance: int, dropped: list[str]) -> list[dict[str, Any]]:
    """The newest whole turns (a turn starts at a user message) within ``allowance`` tokens."""
    starts = [i for i, message in enumerate(history) if message.get("role") == "user"]
    if not history or estimate_tokens(history) <= allowance:
        return history
    for start in starts:
        if estimate_tokens(history[start:]) <= allowance:
            dropped.append(f"{start} earlier conversation messages left out to fit the budget")
            return history[start:]
    dropped.append(f"the {len(history)} earlier conversation messages left out to fit the budget")
    return []


# ----------------------------------------------------------------------------------------- notebook view


def _priorities(snapshot: NotebookSnapshot, focus: list[int]) -> list[int]:
    """Cell indices, most relevant first: focus cells, cells with errors, then by distance to the focus
    (earlier cells first at equal distance: that is where names are defined)."""
    cells = snapshot.cells
    if not focus:
        executed = [(c.execution_count, i) for i, c in enumerate(cells) if c.execution_count is not None]
        focus = [max(executed)[1]] if executed else [len(cells) - 1]

    def key(index: int) -> tuple[int, int, int]:
        distance = min(abs(index - f) for f in focus)
        tier = 0 if index in focus else 1 if error_headline(cells[index]) else 2
        return tier, distance, 0 if any(index < f for f in focus) else 1

    return sorted(range(len(cells)), key=key)


def _notebook_view(snapshot: NotebookSnapshot, request: ContextRequest, allowance: int, dropped: list[str]) -> str:
    cells = snapshot.cells
    name = snapshot.path or "notebook"
    header = (f"## Notebook {name} ({snapshot.language}, {len(cells)} cells)\n"
              "Cells in order: the most relevant in full, the others as one line (read_cell shows any cell).")
    if not cells:
        return f"## Notebook {name} ({snapshot.language}): no cells yet"
    error_id = request.error.cell_id if request.error else None
    explicit = [snapshot.index_of(cell_id) for cell_id in request.cell_ids or ()]
    explicit = [index for index in explicit if index is not None]
    focus = explicit or [i for i in (snapshot.index_of(error_id or ""), snapshot.index_of(
        snapshot.active_cell_id or "")) if i is not None]
    order = _priorities(snapshot, list(dict.fromkeys(focus)))
    summaries = [cell_summary(cell, index) for index, cell in enumerate(cells)]

    def full(index: int) -> str:
        cell: Cell = cells[index]
        return render_cell(cell, index, output_limit=CELL_OUTPUT_LIMIT, include_errors=cell.id != error_id,
                           language=snapshot.language)

    left = allowance - estimate_text_tokens(header) - 16
    # one line per cell, most relevant first, within a third of the allowance
    shown: dict[int, str] = {}
    for index in order:
        cost = estimate_text_tokens(summaries[index]) + 1
        if cost > left - 2 * allowance // 3 and shown:
            break
        shown[index] = summaries[index]
        left -= cost
    # then upgrade cells to full, most relevant first
    candidates = explicit if request.cell_ids is not None else order[:MAX_AUTO_FULL_CELLS]
    in_full = 0
    for index in candidates:
        text = full(index)
        cost = estimate_text_tokens(text) - (estimate_text_tokens(shown[index]) if index in shown else 0)
        if cost <= left:
            shown[index] = text
            left -= cost
            in_full += 1
    if in_full < len(candidates):
        dropped.append(f"{len(candidates) - in_full} relevant cells shown as one line only to fit the budget")

    lines, run = [header], []
    for index in range(len(cells)):
        if index in shown:
            if run:
                lines.append(_omitted(run))
                run = []
            lines.append(shown[index])
        else:
            run.append(index)
    if run:
        lines.append(_omitted(run))
    omitted = len(cells) - len(shown)
    if omitted:
        dropped.append(f"{omitted} cells left out of the notebook view to fit the budget")
    return "\n".join(lines)


def _omitted(run: list[int]) -> str:
    span = f"#{run[0]}" if len(run) == 1 else f"#{run[0]}-#{run[-1]}"
    return f"[{len(run)} cell{'s' if len(run) > 1 else ''} ({span}) omitted to fit the context budget]"
