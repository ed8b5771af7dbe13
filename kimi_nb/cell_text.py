"""How cells and outputs read as text for the model, shared by the tools and the context builder.

ANSI stripped, carriage-return progress bars collapsed, long outputs truncated with a marker saying how much
was cut, errors as ``ename: evalue`` plus a cleaned traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kimi_nb.notebook import Cell

__all__ = [
    "IMAGE_MIMES",
    "cell_summary",
    "clean_traceback",
    "error_headline",
    "image_outputs",
    "render_cell",
    "render_error",
    "render_outputs",
    "source_text",
    "strip_ansi",
    "truncate",
]

IMAGE_MIMES = ("image/png", "image/jpeg")

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_LIBRARY_FRAME = re.compile(r"^\s*File \"?[^\n]*(?:site-packages|dist-packages|[/\\]lib[/\\]python\d)")
_FRAME_START = re.compile(r"^(?:Cell In\s*\[|Input In\s*\[|\s*File |<ipython-input-)")
_RULE = re.compile(r"^-{20,}\s*$")
_IPYTHON_HEADER = re.compile(r"^\S+\s{2,}Traceback \(most recent call last\)\s*$")


def source_text(value: Any) -> str:
    """nbformat multiline text: a string or a list of lines."""
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    return "" if value is None else str(value)


def strip_ansi(text: str) -> str:
    """Text without ANSI escapes, with carriage-return progress updates collapsed to their last state."""
    text = _ANSI.sub("", text)
    if "\r" in text:
        lines = text.replace("\r\n", "\n").split("\n")
        text = "\n".join(next((part for part in reversed(line.split("\r")) if part), "") for line in lines)
    return text


def truncate(text: str, limit: int) -> str:
    """Keep the head and the tail of ``text`` within ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    head = text[: limit // 2]
    tail = text[len(text) - limit // 2 :]
    # cut at line boundaries when one is near, so the marker sits on its own line
    if (nl := head.rfind("\n")) > limit // 4:
        head = head[: nl + 1]
    if 0 <= (nl := tail.find("\n")) < limit // 4:
        tail = tail[nl + 1 :]
    cut = len(text) - len(head) - len(tail)
    return f"{head.rstrip(chr(10))}\n[... {cut:,} characters cut ...]\n{tail}"


def clean_traceback(traceback: Iterable[str] | str) -> str:
    """A traceback as plain text: ANSI stripped, IPython's banner dropped, runs of library frames collapsed.

    Accepts IPython's list form (one frame per item) or a plain Python traceback string. Of three or more
    consecutive frames inside installed packages, the first and last are kept and the rest replaced by
    ``[... N library frames omitted ...]``.
    """
    text = strip_ansi(traceback if isinstance(traceback, str) else "\n".join(traceback))
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if _RULE.match(line):
            continue
        if _IPYTHON_HEADER.match(line):
            line = "Traceback (most recent call last):"
        if _FRAME_START.match(line) and blocks[-1]:
            blocks.append([])
        blocks[-1].append(line.rstrip())
    out: list[str] = []
    run: list[list[str]] = []

    def flush() -> None:
        if len(run) >= 3:
            out.extend(run[0])
            out.append(f"[... {len(run) - 2} library frames omitted ...]")
            out.extend(run[-1])
        else:
            for block in run:
                out.extend(block)
        run.clear()

    for block in blocks:
        if block and _LIBRARY_FRAME.match(block[0]):
            run.append(block)
        else:
            flush()
            out.extend(block)
    flush()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")


def render_error(ename: str, evalue: str, traceback: Iterable[str] | str = ()) -> str:
    """``ename: evalue`` followed by the cleaned traceback (without repeating that last line)."""
    headline = f"{strip_ansi(ename)}: {strip_ansi(evalue)}".rstrip(": ") if evalue else strip_ansi(ename)
    body = clean_traceback(traceback)
    lines = body.splitlines()
    if lines and lines[-1].strip() == headline.strip():
        lines.pop()
    body = "\n".join(lines).strip("\n")
    return f"{headline}\n{body}" if body else headline


def image_outputs(cell: Cell) -> list[tuple[int, str, str]]:
    """The cell's PNG/JPEG outputs as (output position, mime, base64 data), in output order."""
    found = []
    for position, output in enumerate(cell.outputs):
        data = output.get("data") or {}
        mime = next((m for m in IMAGE_MIMES if m in data), None)
        if mime:
            found.append((position, mime, "".join(source_text(data[mime]).split())))
    return found


def _render_output(output: dict[str, Any], image_index: int | None) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return strip_ansi(source_text(output.get("text")))
    if kind == "error":
        return render_error(source_text(output.get("ename")), source_text(output.get("evalue")), output.get("traceback") or ())
    data = output.get("data") or {}
    parts = []
    if image_index is not None:
        mime = next(m for m in IMAGE_MIMES if m in data)
        parts.append(f"[{mime} image, view_image output_index={image_index}]")
    for mime in ("text/plain", "text/markdown", "text/latex"):
        if mime in data:
            parts.append(strip_ansi(source_text(data[mime])))
            break
    else:
        if "text/html" in data:
            parts.append(re.sub(r"<[^>]+>", "", source_text(data["text/html"])).strip())
        elif image_index is None and data:
            parts.append(f"[{', '.join(sorted(data))} output]")
    return "\n".join(part.rstrip("\n") for part in parts)


def render_outputs(cell: Cell, *, limit: int = 4000, include_errors: bool = True) -> str:
    """A cell's outputs as text, truncated to ``limit`` characters with a marker saying how much was cut."""
    image_positions = {position: k for k, (position, _, _) in enumerate(image_outputs(cell))}
    rendered = [
        _render_output(output, image_positions.get(position))
        for position, output in enumerate(cell.outputs)
        if include_errors or output.get("output_type") != "error"
    ]
    text = "\n".join(part.rstrip("\n") for part in rendered if part.strip())
    return truncate(text, limit)


def error_headline(cell: Cell) -> str | None:
    """``ename: evalue`` of the cell's first error output, or None."""
    for output in cell.outputs:
        if output.get("output_type") == "error":
            return render_error(source_text(output.get("ename")), source_text(output.get("evalue"))).splitlines()[0]
    return None


def _first_line(source: str, width: int = 80) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    if not lines:
        return "(empty)"
    first = lines[0].strip()
    if len(first) > width:
        first = first[: width - 3] + "..."
    return first + (f"  (+{len(lines) - 1} lines)" if len(lines) > 1 else "")


def cell_summary(cell: Cell, index: int) -> str:
    """One line: ``#index id=ID type [count]: first line (+N lines)  [error: ...]``."""
    count = f" [{cell.execution_count}]" if cell.execution_count is not None else ""
    error = error_headline(cell)
    tail = f"  [error: {error}]" if error else ""
    return f"#{index} id={cell.id} {cell.type}{count}: {_first_line(cell.source)}{tail}"


def render_cell(cell: Cell, index: int, *, output_limit: int = 4000, include_errors: bool = True,
                language: str = "python") -> str:
    """A cell in full: a header line, the source in a fenced block, then its outputs as text."""
    count = f" [{cell.execution_count}]" if cell.execution_count is not None else ""
    fence = language if cell.type == "code" else ("markdown" if cell.type == "markdown" else "")
    parts = [f"#{index} id={cell.id} {cell.type}{count}", f"```{fence}\n{cell.source}\n```"]
    outputs = render_outputs(cell, limit=output_limit, include_errors=include_errors)
    if outputs:
        parts.append(f"Output:\n```\n{outputs}\n```")
    elif cell.type == "code" and cell.execution_count is None and not cell.outputs:
        parts.append("(not executed)")
    return "\n".join(parts)
