"""The tools the model may call: OpenAI function schemas and their implementations over a NotebookBackend.

(Implementation in progress: types below are the stable API.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Proposal", "ToolResult", "Image"]


@dataclass(frozen=True)
class Proposal:
    """A change the model proposes. Front doors decide: apply (repair), or show for Accept / Reject.

    kind: "insert" | "edit" | "replace" | "delete". For "insert", ``cell_id`` is the new cell's id and
    ``after_cell_id`` where it goes (None: at the top); ``before`` is "". For "delete", ``after`` is "".
    """

    kind: str
    cell_id: str
    before: str
    after: str
    diff: str
    cell_type: str = "code"
    after_cell_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cell_id": self.cell_id,
            "before": self.before,
            "after": self.after,
            "diff": self.diff,
            "cell_type": self.cell_type,
            "after_cell_id": self.after_cell_id,
        }


@dataclass(frozen=True)
class Image:
    """An image for the next model turn."""

    mime: str  # "image/png" | "image/jpeg"
    data: str  # base64

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.data}"


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned. ``content`` goes back to the model as the ``role: "tool"`` message."""

    call_id: str
    name: str
    content: str
    is_error: bool = False
    proposal: Proposal | None = None
    image: Image | None = None
