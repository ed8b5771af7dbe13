"""Tests for kimi_nb.protocol: wire-format vectors, the streaming invariant and the render round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimi_nb.protocol import (
    Message,
    ReasoningDelta,
    StreamParser,
    TextDelta,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    assistant_message,
    decode_arguments,
    parse,
    render,
)

SB, SE = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CB, AB, CE = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_cell",
            "parameters": {
                "type": "object",
                "properties": {"cell_id": {"type": "string"}},
                "required": ["cell_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "edit_cell",
            "parameters": {
                "type": "object",
                "properties": {"cell_id": {"type": "string"}, "source": {"type": "string"}},
                "required": ["cell_id", "source"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "list_cells", "parameters": {"type": "object", "properties": {}}},
    },
    {
        "type": "function",
        "function": {
            "name": "find",
            "parameters": {"type": "object", "properties": {"cell_id": {}, "query": {}}},
        },
    },
]


def call(name: str, args: dict, idx: int = 0, *, id: str | None = None) -> str:
    return f"{CB}{id or f'functions.{name}:{idx}'}{AB}{json.dumps(args, ensure_ascii=False)}{CE}"


def ok(name: str, args: dict, idx: int = 0, *, id: str | None = None) -> ToolCall:
    return ToolCall(id or f"functions.{name}:{idx}", name, args)


def bad(id: str, name: str, error_part: str) -> tuple[str, str, str]:
    """An expected call with an error: matched on id, name, arguments {} and a phrase of the error."""
    return (id, name, error_part)


NESTED = {
    "cell_id": "c1",
    "source": "print('héllo 世界 🚀')\n",
    "opts": {"a": [1, 2.5, None, True], "b": {"c": ""}},
}

# (test id, text, tools, thinking, content, reasoning, calls: list of ToolCall or bad(...))
VECTORS = [
    ("plain text", "Hello, world!", None, None, "Hello, world!", "", []),
    ("empty", "", None, None, "", "", []),
    (
        "one call",
        SB + call("read_cell", {"cell_id": "a"}) + SE,
        None,
        None,
        "",
        "",
        [ok("read_cell", {"cell_id": "a"})],
    ),
    (
        "two calls",
        "Let me look." + SB + call("read_cell", {"cell_id": "a"}) + call("list_cells", {}, 1) + SE,
        None,
        None,
        "Let me look.",
        "",
        [ok("read_cell", {"cell_id": "a"}), ok("list_cells", {}, 1)],
    ),
    (
        "call after reasoning",
        "<think>I should read it.</think>Reading." + SB + call("read_cell", {"cell_id": "a"}, 3) + SE,
        None,
        None,
        "Reading.",
        "I should read it.",
        [ok("read_cell", {"cell_id": "a"}, 3)],
    ),
    (
        "section ends reasoning implicitly",
        "<think>Need data" + SB + call("list_cells", {}) + SE,
        None,
        None,
        "",
        "Need data",
        [ok("list_cells", {})],
    ),
    (
        "calls inside reasoning are real",
        "thinking about it" + SB + call("list_cells", {}) + SE + "</think>",
        None,
        True,
        "",
        "thinking about it",
        [ok("list_cells", {})],
    ),
    (
        "singular section spelling",
        "<|tool_call_section_begin|>" + call("read_cell", {"cell_id": "x"}) + "<|tool_call_section_end|>",
        None,
        None,
        "",
        "",
        [ok("read_cell", {"cell_id": "x"})],
    ),
    (
        "NAME:IDX id",
        SB + call("read_cell", {"cell_id": "x"}, id="read_cell:7") + SE,
        None,
        None,
        "",
        "",
        [ok("read_cell", {"cell_id": "x"}, id="read_cell:7")],
    ),
    (
        "dotted name kept whole",
        SB + call("nb.cells.read", {"i": 1}, 2) + SE,
        None,
        None,
        "",
        "",
        [ok("nb.cells.read", {"i": 1}, 2)],
    ),
    (
        "bare counter, one tool fits",
        SB + call("", {"cell_id": "a", "source": "x"}, id="0") + SE,
        TOOLS,
        None,
        "",
        "",
        [ok("edit_cell", {"cell_id": "a", "source": "x"}, 0)],
    ),
    (
        "bare counter with spaces, no arguments",
        SB + f"{CB} 4 {AB}{{}}{CE}" + SE,
        TOOLS[:3],
        None,
        "",
        "",
        [ok("list_cells", {}, 4)],
    ),
    (
        "bare counter, ambiguous",
        SB + call("", {"cell_id": "a"}, id="1") + SE,
        TOOLS,
        None,
        "",
        "",
        [bad("1", "", "several: read_cell, find")],
    ),
    (
        "bare counter, no tools",
        SB + call("", {"cell_id": "a"}, id="0") + SE,
        None,
        None,
        "",
        "",
        [bad("0", "", "no tools")],
    ),
    (
        "bare counter, nothing fits",
        SB + call("", {"zzz": 1}, id="0") + SE,
        TOOLS,
        None,
        "",
        "",
        [bad("0", "", "no declared tool")],
    ),
    (
        "unicode and nested JSON",
        SB + call("edit_cell", NESTED) + SE,
        None,
        None,
        "",
        "",
        [ok("edit_cell", NESTED)],
    ),
    (
        "pretty-printed JSON over lines",
        SB + f"\n{CB}\n  functions.edit_cell:0\n{AB}\n" + json.dumps(NESTED, indent=2) + f"\n{CE}\n" + SE,
        None,
        None,
        "",
        "",
        [ok("edit_cell", NESTED)],
    ),
    (
        "malformed JSON",
        SB + f'{CB}functions.read_cell:0{AB}{{"cell_id": "a",}}{CE}' + SE,
        None,
        None,
        "",
        "",
        [bad("functions.read_cell:0", "read_cell", "not valid JSON")],
    ),
    (
        "non-object JSON",
        SB + f"{CB}functions.read_cell:0{AB}[1, 2]{CE}" + SE,
        None,
        None,
        "",
        "",
        [bad("functions.read_cell:0", "read_cell", "JSON object, not an array")],
    ),
    (
        "NaN is not JSON",
        SB + f'{CB}functions.read_cell:0{AB}{{"x": NaN}}{CE}' + SE,
        None,
        None,
        "",
        "",
        [bad("functions.read_cell:0", "read_cell", "not valid JSON")],
    ),
    (
        "cut-off call never leaks",
        "Editing." + SB + f'{CB}functions.edit_cell:0{AB}{{"cell_id": "a", "sour',
        None,
        None,
        "Editing.",
        "",
        [bad("functions.edit_cell:0", "edit_cell", "cut off")],
    ),
    (
        "cut off inside the id",
        "x" + SB + f"{CB}functions.edi",
        None,
        None,
        "x",
        "",
        [bad("functions.edi", "edi", "cut off")],
    ),
    (
        "call cut off by the next call",
        SB + f"{CB}functions.a:0{AB}{{" + call("list_cells", {}, 1) + SE,
        None,
        None,
        "",
        "",
        [bad("functions.a:0", "a", "cut off"), ok("list_cells", {}, 1)],
    ),
    (
        "call without argument marker",
        SB + f"{CB}functions.list_cells:0{CE}" + SE,
        None,
        None,
        "",
        "",
        [bad("functions.list_cells:0", "list_cells", "no <|tool_call_argument_begin|>")],
    ),
    (
        "complete call, missing section end",
        "ok" + SB + call("list_cells", {}),
        None,
        None,
        "ok",
        "",
        [ok("list_cells", {})],
    ),
    ("empty section", "Nothing to do." + SB + SE, None, None, "Nothing to do.", "", []),
    (
        "noise in section ignored",
        SB + "\n  junk text\n" + call("list_cells", {}) + "\n more junk " + SE,
        None,
        None,
        "",
        "",
        [ok("list_cells", {})],
    ),
    (
        "text after section end kept",
        "Before." + SB + call("list_cells", {}) + SE + " After the call.",
        None,
        None,
        "Before. After the call.",
        "",
        [ok("list_cells", {})],
    ),
    (
        "call markers without a section",
        "Sure. " + call("list_cells", {}) + " done",
        None,
        None,
        "Sure.  done",
        "",
        [ok("list_cells", {})],
    ),
    (
        "leaked template tokens",
        "<|im_assistant|>assistant<|im_middle|>Hi there<|im_end|><|im_user|>user<|im_middle|>",
        None,
        None,
        "Hi there",
        "",
        [],
    ),
    (
        "role marker without middle keeps the text",
        "<|im_system|>plain words",
        None,
        None,
        "plain words",
        "",
        [],
    ),
    ("stray im_middle", "a<|im_middle|>b", None, None, "ab", "", []),
    ("(no content) artefact", "(no content)", None, None, "", "", []),
    (
        "(no content) before an answer",
        "(no content)\n\nThe answer is 42.",
        None,
        None,
        "The answer is 42.",
        "",
        [],
    ),
    ("(no content) in reasoning", "<think>(no content)hmm</think>x", None, None, "x", "hmm", []),
    (
        "(no content) literal inside arguments",
        SB + call("edit_cell", {"source": "(no content)<think>"}) + SE,
        None,
        None,
        "",
        "",
        [ok("edit_cell", {"source": "(no content)<think>"})],
    ),
    (
        "thinking without <think>",
        "I will answer.\n</think>\n\nForty-two.",
        None,
        None,
        "Forty-two.",
        "I will answer.",
        [],
    ),
    ("thinking on, no </think>", "still thinking", None, True, "", "still thinking", []),
    ("thinking off, </think> dropped", "a</think>b", None, False, "ab", "", []),
    ("text before <think> is content", "Hi <think>r</think> there", None, None, "Hi  there", "r", []),
    ("empty think", "<think></think>Answer", None, None, "Answer", "", []),
    (
        "whitespace around markers",
        "\n<think>\n  reason  \n</think>\n\n  content  \n"
        + SB
        + "\n"
        + call("list_cells", {})
        + "\n"
        + SE
        + "\n",
        None,
        None,
        "content",
        "reason",
        [ok("list_cells", {})],
    ),
    ("inner whitespace kept", "a\n\n  b\tc", None, None, "a\n\n  b\tc", "", []),
    ("partial marker at end is text", "x <|tool_call", None, None, "x <|tool_call", "", []),
    (
        "almost markers are text",
        "<thinking> (no contents) <|im_start|>",
        None,
        None,
        "<thinking> (no contents) <|im_start|>",
        "",
        [],
    ),
]


def check(message: Message, content: str, reasoning: str, calls: list) -> None:
    assert message.content == content
    assert message.reasoning == reasoning
    assert len(message.tool_calls) == len(calls)
    for got, want in zip(message.tool_calls, calls):
        if isinstance(want, ToolCall):
            assert got == want
            assert got.error is None
        else:
            assert (got.id, got.name, got.arguments) == (want[0], want[1], {})
            assert got.error and want[2] in got.error


def stream(text: str, sizes: list[int], tools=None, thinking=None) -> tuple[Message, list]:
    parser = StreamParser(tools, thinking=thinking)
    events: list = []
    pos = i = 0
    while pos < len(text):
        size = sizes[i % len(sizes)] if sizes else len(text)
        events += parser.feed(text[pos : pos + size])
        pos += size
        i += 1
    events += parser.close()
    return parser.finish(), events


def check_events(message: Message, events: list) -> None:
    """The events spell out the message exactly."""
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == message.content
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == message.reasoning
    assert all(e.text for e in events if isinstance(e, (TextDelta, ReasoningDelta)))
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [e.index for e in started] == [e.index for e in done] == list(range(len(message.tool_calls)))
    for s, d, c in zip(started, done, message.tool_calls):
        assert d.call == c and (s.id, s.name) == (c.id, c.name)
        assert d.call.raw_arguments == c.raw_arguments
        deltas = [e for e in events if isinstance(e, ToolCallArgumentsDelta) and e.index == s.index]
        assert "".join(e.delta for e in deltas) == c.raw_arguments
        assert (
            events.index(s)
            < min([events.index(e) for e in deltas], default=events.index(d))
            <= events.index(d)
        )


@pytest.mark.parametrize(
    "text, tools, thinking, content, reasoning, calls", [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_vectors(text, tools, thinking, content, reasoning, calls):
    message = parse(text, tools, thinking=thinking)
    check(message, content, reasoning, calls)
    for sizes in ([1], [2], [3, 1, 7], [5, 11]):
        streamed, events = stream(text, sizes, tools, thinking)
        assert streamed == message
        check_events(streamed, events)


def test_raw_arguments_kept():
    text = SB + f'{CB}functions.read_cell:0{AB}  {{"cell_id":\n "a"}}  {CE}' + SE
    (got,) = parse(text).tool_calls
    assert got.raw_arguments == '{"cell_id":\n "a"}'
    (bad_call,) = parse(SB + f"{CB}functions.f:0{AB}{{oops{CE}" + SE).tool_calls
    assert bad_call.raw_arguments == "{oops" and bad_call.arguments == {}


@pytest.mark.parametrize(
    "raw, arguments, error",
    [
        ("", {}, None),
        ('{"a": [1, "é"]}', {"a": [1, "é"]}, None),
        ("{bad", {}, "not valid JSON"),
        ('"text"', {}, "not a string"),
        ("null", {}, "not null"),
        ("[" * 100_000, {}, "not valid JSON"),
        ('{"x": Infinity}', {}, "not valid JSON"),
    ],
)
def test_decode_arguments(raw, arguments, error):
    got, got_error = decode_arguments(raw)
    assert got == arguments
    assert got_error is None if error is None else error in (got_error or "")


def test_named_call_streams_arguments_as_they_arrive():
    parser = StreamParser()
    events = parser.feed(SB + CB + "functions.edit_cell:0" + AB + '{"source": "ab')
    assert events[0] == ToolCallStarted(0, "functions.edit_cell:0", "edit_cell")
    assert events[1] == ToolCallArgumentsDelta(0, '{"source": "ab')
    assert parser.feed('c"}' + CE)[-1] == ToolCallDone(
        0, ToolCall("functions.edit_cell:0", "edit_cell", {"source": "abc"})
    )


def test_plain_text_streams_when_thinking_is_known():
    parser = StreamParser(thinking=False)
    assert parser.feed("Hello ") == [TextDelta("Hello")]
    assert parser.feed("world") == [TextDelta(" world")]
    reasoning = StreamParser(thinking=True)
    assert reasoning.feed("hmm") == [ReasoningDelta("hmm")]


def test_undecided_start_is_held_until_decided():
    parser = StreamParser()
    assert parser.feed("maybe reasoning") == []
    assert parser.feed("</think>answer") == [ReasoningDelta("maybe reasoning"), TextDelta("answer")]


def test_split_marker_never_shows_as_text():
    parser = StreamParser(thinking=False)
    events = []
    for piece in ["Hi <|tool_ca", "lls_sec", "tion_begin|>", CB, "functions.f:0", AB, "{}", CE, SE]:
        events += parser.feed(piece)
    events += parser.close()
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("Hi")]


def test_close_is_idempotent_and_feed_after_close_fails():
    parser = StreamParser()
    parser.feed("x")
    assert parser.close() == [TextDelta("x")]
    assert parser.close() == []
    assert parser.finish() == Message("x")
    with pytest.raises(RuntimeError):
        parser.feed("y")


def test_malformed_tools_never_raise():
    text = SB + call("", {"a": 1}, id="0") + SE
    (got,) = parse(
        text,
        [
            {"type": "function"},
            "junk",
            {"function": {"name": 3}},
            {"function": {"name": "t", "parameters": []}},
        ],
    ).tool_calls  # type: ignore[list-item]
    assert got.error and got.arguments == {}


def test_render_canonical_form():
    message = Message("Answer", "Why", [ToolCall("functions.read_cell:0", "read_cell", {"cell_id": "é"})])
    assert render(message) == (
        "<think>Why</think>Answer<|tool_calls_section_begin|><|tool_call_begin|>functions.read_cell:0"
        '<|tool_call_argument_begin|>{"cell_id": "é"}<|tool_call_end|><|tool_calls_section_end|>'
    )
    assert render(Message("Just text")) == "Just text"


def test_render_gives_calls_without_a_kimi_id_one():
    message = Message("", "", [ToolCall("call_abc", "list_cells", {})])
    assert parse(render(message)).tool_calls == [ToolCall("functions.list_cells:0", "list_cells", {})]


def test_assistant_message_round_trips_raw_arguments():
    message = parse("<think>r</think>" + SB + f'{CB}functions.f:0{AB}{{"a": 1}}{CE}' + SE)
    assert assistant_message(message) == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "r",
        "tool_calls": [
            {"id": "functions.f:0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    }


# --- properties --------------------------------------------------------------------------------

FRAGMENTS = [
    "<think>",
    "</think>",
    SB,
    SE,
    "<|tool_call_section_begin|>",
    "<|tool_call_section_end|>",
    CB,
    AB,
    CE,
    "<|im_end|>",
    "<|im_assistant|>",
    "<|im_user|>",
    "<|im_system|>",
    "<|im_middle|>",
    "(no content)",
    "functions.read_cell:0",
    "functions.a.b:12",
    "edit_cell:3",
    "0",
    " 1 ",
    "assistant",
    "user",
    '{"cell_id": "a"}',
    '{"source": "héllo\\n世界"}',
    '{"a": [1, {"b": null}]}',
    '{\n  "x": 1\n}',
    "[1]",
    "{bad",
    "<",
    "<|",
    "<|tool_call",
    "_begin|>",
    "(no",
    " content)",
    "think>",
    "</",
    "|>",
    "(",
    ")",
    " ",
    "\n",
    "\t",
    "  \n ",
    "text",
    "Hello, world.",
    "é",
    "世界",
    "🚀",
    "a",
    "b",
    "\u00a0",
    "\u2028",
]

texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    text=texts,
    cuts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=8),
    thinking=st.sampled_from([None, True, False]),
    tools=st.sampled_from([None, TOOLS]),
)
def test_any_chunking_gives_the_parse(text, cuts, thinking, tools):
    expected = parse(text, tools, thinking=thinking)
    for sizes in (cuts, [1]):
        message, events = stream(text, sizes, tools, thinking)
        assert message == expected
        check_events(message, events)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_parse_never_raises(text):
    message = parse(text, TOOLS)
    assert isinstance(message, Message)
    assert message.content == message.content.strip()
    assert "<|im_end|>" not in message.content


safe_text = st.lists(
    st.one_of(
        st.sampled_from(["Hello", "é", "世界", " ", "\n", "<b>", "x < y", "a(b)", "🚀", "|>"]),
        st.text(alphabet="abc xyz.,!?\n", max_size=8),
    ),
    max_size=10,
).map(lambda parts: "".join(parts).strip())
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,5})?", fullmatch=True)
calls = st.builds(
    lambda name, idx, args: ToolCall(f"functions.{name}:{idx}", name, args),
    names,
    st.integers(min_value=0, max_value=999),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
messages = st.builds(Message, safe_text, safe_text, st.lists(calls, max_size=3))


@settings(max_examples=300, deadline=None)
@given(message=messages, thinking=st.sampled_from([None, False]))
def test_render_round_trip(message, thinking):
    assert parse(render(message), thinking=thinking) == message
