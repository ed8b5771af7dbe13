"""The Kimi K2 / K2.5 wire format: parse, stream-parse and render assistant turns. Pure, no I/O.

Wire format (marker strings checked against vLLM's ``vllm/tool_parsers/kimi_k2_tool_parser.py`` and
``vllm/reasoning/kimi_k2_reasoning_parser.py``, Moonshot's ``docs/tool_call_guidance.md`` and the chat
template of MoonshotAI/Kimi-K2, whose assistant turn is
``<|im_assistant|>assistant<|im_middle|><think>R</think>C<|tool_calls_section_begin|>...<|im_end|>``)::

    <think>REASONING</think>CONTENT
    <|tool_calls_section_begin|>
    <|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{"json": "object"}<|tool_call_end|>
    ...
    <|tool_calls_section_end|>

How kimi-nb reads it (``parse`` and ``StreamParser`` share one state machine, so they always agree):

- Reasoning runs from the start (``thinking=True``) or from ``<think>`` to ``</think>``, or to the start of a
  tool-call section (vLLM's implicit end). With ``thinking=None`` (the default) text before a ``</think>``
  that had no ``<think>`` is reasoning (the prompt already opened it); text before ``<think>`` or a section,
  or text that never meets ``</think>``, is content. Until that is decided a stream holds the text back, so
  pass ``thinking`` when it is known. ``thinking=False`` starts in the content.
- A section (plural or singular spelling) ends reasoning; calls inside what the model meant as reasoning are
  real calls. Text after the section end is content again. A call outside any section counts as a section
  of its own (text after it is content).
- Inside a section, text outside calls is noise and dropped; an empty section is legal. Inside a call only
  tool-call markers count; anything else (``<think>``, ``(no content)``, ...) is literal text.
- IDs: ``functions.NAME:IDX`` (the full NAME is kept, dots included) or ``NAME:IDX``, kept exactly as written
  (whitespace around them dropped). A bare counter such as ``0`` is named from the declared ``tools`` by its
  argument keys when exactly one tool fits, and gets the id ``functions.NAME:IDX``; otherwise it is a call
  with an ``error``.
- Arguments are the text between the markers with surrounding whitespace dropped (``raw_arguments``). Empty
  means ``{}``; anything else must be a JSON object, or the call gets ``arguments == {}`` and an ``error``.
  A call without ``<|tool_call_end|>`` (cut off by max_tokens, or by a following marker) is flagged the
  same way and never executed. A complete call stays valid even when the section end never arrives.
- Artefacts never reach content or reasoning: ``(no content)``, ``<|im_end|>``, ``<|im_middle|>``, and
  ``<|im_assistant|>`` / ``<|im_user|>`` / ``<|im_system|>`` together with a role name written right after
  them and closed by ``<|im_middle|>`` (such as ``assistant<|im_middle|>``). A stray ``</think>``, a
  repeated ``<think>`` and tool-call markers outside a call are dropped too; a ``<think>`` after some
  content opens reasoning again (appended to the reasoning).
- Whitespace: content and reasoning are each stripped at both ends (``str.strip``), nothing else is changed;
  a stream achieves this by skipping leading whitespace and holding trailing whitespace back until more
  text of the same kind arrives.

Streaming: ``StreamParser.feed(delta)`` returns events (text, reasoning, and per call ``ToolCallStarted``,
``ToolCallArgumentsDelta`` as the arguments arrive, ``ToolCallDone``); ``close()`` returns the last events and
``finish()`` the message. For every split of a text the message equals ``parse`` of it, the text deltas join
to its ``content``, the reasoning deltas to its ``reasoning`` and each call's argument deltas to its
``raw_arguments``; a marker split across deltas never shows up as text.

``render`` writes the canonical form
``<think>R</think>C<|tool_calls_section_begin|>...<|tool_calls_section_end|>`` (``<think>`` only when there is
reasoning), with arguments as ``json.dumps(..., ensure_ascii=False)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ARGUMENT_BEGIN",
    "CALL_BEGIN",
    "CALL_END",
    "SECTION_BEGIN",
    "SECTION_END",
    "THINK_BEGIN",
    "THINK_END",
    "Message",
    "ReasoningDelta",
    "StreamEvent",
    "StreamParser",
    "TextDelta",
    "ToolCall",
    "ToolCallArgumentsDelta",
    "ToolCallDone",
    "ToolCallStarted",
    "assistant_message",
    "decode_arguments",
    "parse",
    "render",
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


StreamEvent = TextDelta | ReasoningDelta | ToolCallStarted | ToolCallArgumentsDelta | ToolCallDone

THINK_BEGIN = "<think>"
THINK_END = "</think>"
SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"

# Marker -> what it does. No marker is a prefix of another, so matches are unambiguous.
_MARKERS: dict[str, str] = {
    THINK_BEGIN: "think_begin",
    THINK_END: "think_end",
    SECTION_BEGIN: "section_begin",
    "<|tool_call_section_begin|>": "section_begin",
    SECTION_END: "section_end",
    "<|tool_call_section_end|>": "section_end",
    CALL_BEGIN: "call_begin",
    ARGUMENT_BEGIN: "argument_begin",
    CALL_END: "call_end",
    "<|im_assistant|>": "role",
    "<|im_user|>": "role",
    "<|im_system|>": "role",
    "<|im_middle|>": "middle",
    "<|im_end|>": "artefact",
    "(no content)": "artefact",
}
_TOOL_MARKERS = frozenset({"section_begin", "section_end", "call_begin", "argument_begin", "call_end"})
_MARKER_RE = re.compile("|".join(re.escape(marker) for marker in _MARKERS))
_MARKER_PREFIXES = frozenset(marker[:n] for marker in _MARKERS for n in range(1, len(marker)))
_LONGEST_MARKER = max(map(len, _MARKERS))
_ROLE_CHARS = re.compile(r"[A-Za-z0-9_.:-]*")
_LONGEST_ROLE = 64
_BARE_COUNTER = re.compile(r"[0-9]+")
_NAMED_ID = re.compile(r"(?:functions\.)?(.*?)(?::[0-9]+)?", re.DOTALL)
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


class _MarkerSplitter:
    """Splits streamed text into text runs and markers, holding back only a tail that could start a marker."""

    def __init__(self) -> None:
        self._tail = ""

    def split(self, delta: str) -> list[tuple[str | None, str]]:
        """(kind, text) pieces of ``delta``; kind is None for plain text."""
        text = self._tail + delta
        pieces: list[tuple[str | None, str]] = []
        pos = 0
        for match in _MARKER_RE.finditer(text):
            if match.start() > pos:
                pieces.append((None, text[pos : match.start()]))
            pieces.append((_MARKERS[match.group()], match.group()))
            pos = match.end()
        hold = _held_from(text, max(pos, len(text) - _LONGEST_MARKER + 1))
        if hold > pos:
            pieces.append((None, text[pos:hold]))
        self._tail = text[hold:]
        return pieces

    def flush(self) -> list[tuple[str | None, str]]:
        """The held tail as text: at the end of the stream it can no longer become a marker."""
        tail, self._tail = self._tail, ""
        return [(None, tail)] if tail else []


def _held_from(text: str, start: int) -> int:
    """The first index >= start from which ``text`` is a proper prefix of a marker (len(text) if none)."""
    candidates = [i for i in (text.find("<", start), text.find("(", start)) if i != -1]
    while candidates:
        i = min(candidates)
        if text[i:] in _MARKER_PREFIXES:
            return i
        candidates = [j for j in (text.find("<", i + 1), text.find("(", i + 1)) if j != -1]
    return len(text)


class _StrippedText:
    """Text streamed with leading and trailing whitespace dropped: ``text == "".join(all pushes).strip()``."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._held: list[str] = []

    def push(self, text: str) -> str:
        """Add text; returns what can be emitted now (trailing whitespace waits for more text)."""
        if not self.parts:
            text = text.lstrip()
        kept = text.rstrip()
        if not kept:
            if text:
                self._held.append(text)
            return ""
        out = "".join(self._held) + kept
        self._held = [text[len(kept) :]]
        self.parts.append(out)
        return out

    @property
    def text(self) -> str:
        return "".join(self.parts)


class StreamParser:
    """Incremental ``parse``: ``feed`` text deltas and get events, ``close()`` for the last events, then
    ``finish()`` for the message, which equals ``parse`` of the whole text however it was split.

    Each character is looked at a bounded number of times, so a stream costs O(its length).
    """

    def __init__(self, tools: list[dict[str, Any]] | None = None, *, thinking: bool | None = None) -> None:
        self._tools = tools
        self._splitter = _MarkerSplitter()
        self._state = {None: "undecided", True: "reasoning", False: "content"}[thinking]
        self._undecided: list[str] = []
        self._role: list[str] | None = None  # role name being read after <|im_KIND|>
        self._content = _StrippedText()
        self._reasoning = _StrippedText()
        self._calls: list[ToolCall] = []
        self._call_id: list[str] = []
        self._arguments: _StrippedText | None = None  # set once <|tool_call_argument_begin|> was seen
        self._started = False
        self._after_call = "section"  # "content" when the call came without a section begin
        self._events: list[StreamEvent] = []
        self._message: Message | None = None

    def feed(self, delta: str) -> list[StreamEvent]:
        """Parse the next piece of text; returns the events it completes."""
        if self._message is not None:
            raise RuntimeError("StreamParser.feed() called after close()")
        for kind, text in self._splitter.split(delta):
            self._take(kind, text)
        return self._drain()

    def close(self) -> list[StreamEvent]:
        """End of the text: the last events (held-back text, a cut-off call's ``ToolCallDone``)."""
        if self._message is None:
            for kind, text in self._splitter.flush():
                self._take(kind, text)
            self._end_role(None)
            if self._state == "undecided":
                self._to_content()
            elif self._state in ("call_id", "call_arguments"):
                self._end_call(f"cut off before {CALL_END} (output limit reached?)")
            self._message = Message(self._content.text, self._reasoning.text, list(self._calls))
        return self._drain()

    def finish(self) -> Message:
        """The parsed message (closing the stream first if ``close()`` was not called)."""
        if self._message is None:
            self.close()
        assert self._message is not None
        return self._message

    # --- state machine -------------------------------------------------------------------------

    def _take(self, kind: str | None, text: str) -> None:
        state = self._state
        if state in ("call_id", "call_arguments"):
            self._take_in_call(kind, text)
        elif state == "section":
            if kind is not None:
                self._take_in_section(kind)
        elif self._role is None or not self._take_role(kind, text):
            if kind is None:
                self._text(text)
            else:
                self._take_in_text(kind)

    def _take_role(self, kind: str | None, text: str) -> bool:
        """Read a role name after <|im_KIND|>; True when the piece was consumed."""
        assert self._role is not None
        if kind is None:
            name = _ROLE_CHARS.match(text)
            if name and name.end() == len(text) and sum(map(len, self._role)) + len(text) <= _LONGEST_ROLE:
                self._role.append(text)
                return True
            self._end_role(text)
            return True
        self._end_role(None if kind != "middle" else "")
        return kind == "middle"

    def _end_role(self, then: str | None) -> None:
        """Stop reading a role name: "" drops it (closed by <|im_middle|>), otherwise it was text."""
        if self._role is None:
            return
        role, self._role = "".join(self._role), None
        if then != "":
            self._text(role + (then or ""))

    def _take_in_text(self, kind: str) -> None:
        state = self._state
        if kind == "role":
            self._role = []
        elif kind == "think_begin":
            if state == "undecided":
                self._to_content()
            self._state = "reasoning"
        elif kind == "think_end":
            if state == "undecided":
                self._reason("".join(self._undecided))
                self._undecided = []
            self._state = "content"
        elif kind in ("section_begin", "call_begin"):
            if state == "undecided":
                self._to_content()
            self._state = self._after_call = "section"
            if kind == "call_begin":
                self._after_call = "content"
                self._begin_call()
        # other markers (artefacts, stray tool-call markers) are dropped

    def _take_in_section(self, kind: str) -> None:
        if kind == "call_begin":
            self._begin_call()
        elif kind == "section_end":
            self._state = "content"
        # noise between calls is dropped, markers included

    def _take_in_call(self, kind: str | None, text: str) -> None:
        if kind not in _TOOL_MARKERS:
            self._call_text(text)
        elif kind == "argument_begin" and self._arguments is None:
            self._begin_arguments()
        elif kind == "argument_begin":
            self._call_text(text)
        elif kind == "call_end":
            self._end_call(None if self._arguments is not None else f"no {ARGUMENT_BEGIN} in the call")
        else:
            self._end_call(f"cut off by {text} before {CALL_END}")
            if kind == "call_begin":
                self._begin_call()
            else:
                self._state = self._after_call = "content" if kind == "section_end" else "section"

    # --- text ------------------------------------------------------------------------------------

    def _text(self, text: str) -> None:
        if self._state == "undecided":
            self._undecided.append(text)
        elif self._state == "reasoning":
            self._reason(text)
        else:
            out = self._content.push(text)
            if out:
                self._events.append(TextDelta(out))

    def _reason(self, text: str) -> None:
        out = self._reasoning.push(text)
        if out:
            self._events.append(ReasoningDelta(out))

    def _to_content(self) -> None:
        self._state = "content"
        self._text("".join(self._undecided))
        self._undecided = []

    # --- calls -----------------------------------------------------------------------------------

    def _begin_call(self) -> None:
        self._state = "call_id"
        self._call_id = []
        self._arguments = None
        self._started = False

    def _begin_arguments(self) -> None:
        self._state = "call_arguments"
        self._arguments = _StrippedText()
        call_id = "".join(self._call_id).strip()
        if not _BARE_COUNTER.fullmatch(call_id):  # a bare counter is named from its arguments at the end
            self._events.append(ToolCallStarted(len(self._calls), call_id, _name_from_id(call_id)))
            self._started = True

    def _call_text(self, text: str) -> None:
        if self._arguments is None:
            self._call_id.append(text)
            return
        out = self._arguments.push(text)
        if out and self._started:
            self._events.append(ToolCallArgumentsDelta(len(self._calls), out))

    def _end_call(self, error: str | None) -> None:
        index = len(self._calls)
        call_id = "".join(self._call_id).strip()
        raw = self._arguments.text if self._arguments is not None else ""
        arguments, json_error = decode_arguments(raw)
        if _BARE_COUNTER.fullmatch(call_id) and not self._started:
            name, name_error = _name_from_tools(call_id, arguments, json_error, self._tools)
            if name:
                call_id = f"functions.{name}:{call_id}"
        else:
            name = _name_from_id(call_id)
            name_error = None if name else "the call names no tool"
        error = error or json_error or name_error
        call = ToolCall(call_id, name, {} if error else arguments, error, raw)
        if not self._started:
            self._events.append(ToolCallStarted(index, call_id, name))
            if raw:
                self._events.append(ToolCallArgumentsDelta(index, raw))
        self._events.append(ToolCallDone(index, call))
        self._calls.append(call)
        self._state = self._after_call
        self._arguments = None
        self._started = False

    def _drain(self) -> list[StreamEvent]:
        events, self._events = self._events, []
        return _coalesce(events)


def _coalesce(events: list[StreamEvent]) -> list[StreamEvent]:
    """Merge neighbouring deltas of the same kind (and call)."""
    out: list[StreamEvent] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta):
            out[-1] = TextDelta(last.text + event.text)
        elif isinstance(event, ReasoningDelta) and isinstance(last, ReasoningDelta):
            out[-1] = ReasoningDelta(last.text + event.text)
        elif (
            isinstance(event, ToolCallArgumentsDelta)
            and isinstance(last, ToolCallArgumentsDelta)
            and last.index == event.index
        ):
            out[-1] = ToolCallArgumentsDelta(event.index, last.delta + event.delta)
        else:
            out.append(event)
    return out


def _name_from_id(call_id: str) -> str:
    """NAME from ``functions.NAME:IDX`` or ``NAME:IDX`` (dots in NAME kept)."""
    match = _NAMED_ID.fullmatch(call_id)
    return match.group(1) if match else call_id


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_arguments(raw: str) -> tuple[dict[str, Any], str | None]:
    """Validate a call's raw arguments text: (the object, None), or ({}, a one-line error).

    Empty text means ``{}``; anything else must be a strict-JSON object (NaN and Infinity are refused).
    """
    if not raw:
        return {}, None
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc.msg} at character {exc.pos})"
    except (ValueError, RecursionError) as exc:
        return {}, f"arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, not {_JSON_TYPES.get(type(value), 'null')}"
    return value, None


def _name_from_tools(
    counter: str, arguments: dict[str, Any], json_error: str | None, tools: list[dict[str, Any]] | None
) -> tuple[str, str | None]:
    """Name a bare-counter call from the declared tools whose parameters fit its argument keys."""
    if json_error:
        return "", f"call {counter} names no tool and its arguments cannot tell which"
    if not tools:
        return "", f"call {counter} names no tool and no tools were declared"
    keys = set(arguments)
    fits = []
    for tool in tools:
        spec = tool.get("function", tool) if isinstance(tool, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        params = spec.get("parameters") if isinstance(spec.get("parameters"), dict) else {}
        properties = params.get("properties") if isinstance(params.get("properties"), dict) else {}
        required = params.get("required") if isinstance(params.get("required"), list) else []
        fit = keys <= set(properties) and all(isinstance(key, str) and key in keys for key in required)
        if fit and isinstance(spec.get("name"), str):
            fits.append(spec["name"])
    if len(fits) == 1:
        return fits[0], None
    if not fits:
        return "", f"call {counter} names no tool and no declared tool takes arguments {sorted(keys)}"
    return "", f"call {counter} names no tool and its arguments fit several: {', '.join(fits)}"


def parse(text: str, tools: list[dict[str, Any]] | None = None, *, thinking: bool | None = None) -> Message:
    """Parse one raw assistant completion. Never raises; problems become ``ToolCall.error``.

    ``tools`` are the request's declared OpenAI tools (to name bare-counter calls); ``thinking`` says whether
    the text starts inside the reasoning (None: decide from the text, see the module docstring).
    """
    parser = StreamParser(tools, thinking=thinking)
    parser.feed(text)
    return parser.finish()


def render(message: Message) -> str:
    """The raw text a Kimi model would write for ``message``; ``parse(render(m)) == m``."""
    parts = [f"{THINK_BEGIN}{message.reasoning}{THINK_END}"] if message.reasoning else []
    parts.append(message.content)
    if message.tool_calls:
        parts.append(SECTION_BEGIN)
        for index, call in enumerate(message.tool_calls):
            call_id = call.id if _name_from_id(call.id) == call.name else f"functions.{call.name}:{index}"
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            parts.append(f"{CALL_BEGIN}{call_id}{ARGUMENT_BEGIN}{arguments}{CALL_END}")
        parts.append(SECTION_END)
    return "".join(parts)


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
