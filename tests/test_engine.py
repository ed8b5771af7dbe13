"""RemoteEngine against the ScriptedServer over real HTTP with the real openai client."""

from __future__ import annotations

import json
import logging

import pytest
from traitlets.config import Config

from kimi_nb.config import load_settings
from kimi_nb.engine import OFFLINE_DESCRIPTION, Finished, RemoteEngine, Usage, open_engine
from kimi_nb.errors import EngineError
from kimi_nb.protocol import ReasoningDelta, TextDelta, ToolCallArgumentsDelta, ToolCallDone, ToolCallStarted
from kimi_nb.testing import ScriptedServer

pytestmark = pytest.mark.anyio

USER = [{"role": "user", "content": "hi"}]
SECRET = "sk-KIMI-TEST-SECRET-7f3a9c"
TOOLS = [{"type": "function", "function": {"name": "run_cell", "description": "Run code.", "parameters": {
    "type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}]


def engine_for(srv: ScriptedServer, **options) -> RemoteEngine:
    options = {"model": "kimi-k2.5", "timeout": 10.0, "backoff": 0.01, **options}
    return RemoteEngine(srv.base_url, **options)


async def collect(engine: RemoteEngine, messages=USER, **kwargs) -> list:
    try:
        return [event async for event in engine.stream(messages, **kwargs)]
    finally:
        await engine.aclose()


async def failure(engine: RemoteEngine, **kwargs) -> EngineError:
    with pytest.raises(EngineError) as info:
        await collect(engine, **kwargs)
    return info.value


def text_of(events: list, kind: type) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


# -- answers ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_text_and_reasoning_in_either_field(field: str) -> None:
    turn = {"reasoning": "Let me think.", "content": "The answer is 42.", "reasoning_field": field, "chunk": 3}
    with ScriptedServer({"turns": [turn]}) as srv:
        events = await collect(engine_for(srv))
    assert text_of(events, ReasoningDelta) == "Let me think."
    assert text_of(events, TextDelta) == "The answer is 42."
    assert isinstance(events[-2], Usage) and events[-2].completion_tokens > 0
    finished = events[-1]
    assert finished == Finished("stop", finished.message)
    assert (finished.message.content, finished.message.reasoning) == ("The answer is 42.", "Let me think.")
    assert sum(isinstance(e, Finished) for e in events) == 1


async def test_answers_stream_once_the_endpoint_is_known_to_separate_reasoning() -> None:
    # An endpoint that leaks its template may put reasoning in content ("...</think>answer"), so a thinking turn's
    # content is held back until that is decided. Once the endpoint has sent reasoning in its own field, later
    # answers stream as they arrive.
    answer = "A plain answer that arrives in many small chunks."
    turns = [{"content": answer, "chunk": 4}, {"reasoning": "Hmm.", "content": "ok"},
             {"content": answer, "chunk": 4}]
    with ScriptedServer({"turns": turns}) as srv:
        engine = engine_for(srv)
        try:
            first = [event async for event in engine.stream(USER)]
            [event async for event in engine.stream(USER)]
            third = [event async for event in engine.stream(USER)]
        finally:
            await engine.aclose()
    assert [e.text for e in first if isinstance(e, TextDelta)] == [answer]  # held back, then whole
    deltas = [e.text for e in third if isinstance(e, TextDelta)]
    assert "".join(deltas) == answer and len(deltas) >= 8


async def test_structured_tool_calls_are_assembled_and_validated() -> None:
    turn = {"reasoning": "I should run it.", "chunk": 5, "tool_calls": [
        {"name": "run_cell", "arguments": {"code": "print('héllo')"}},
        {"name": "run_cell", "arguments": "{\"code\": oops"}]}
    with ScriptedServer({"turns": [turn]}) as srv:
        events = await collect(engine_for(srv), tools=TOOLS)
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert started == [ToolCallStarted(0, "functions.run_cell:0", "run_cell"),
                       ToolCallStarted(1, "functions.run_cell:1", "run_cell")]
    first_args = "".join(e.delta for e in events if isinstance(e, ToolCallArgumentsDelta) and e.index == 0)
    assert json.loads(first_args) == {"code": "print('héllo')"}
    done = [e.call for e in events if isinstance(e, ToolCallDone)]
    finished = events[-1]
    assert finished.reason == "tool_calls" and finished.message.tool_calls == done
    good, bad = done
    assert good.arguments == {"code": "print('héllo')"} and good.error is None
    assert bad.arguments == {} and bad.error and bad.raw_arguments == "{\"code\": oops"


async def test_raw_markers_leaking_into_content_become_tool_calls() -> None:
    turn = {"mode": "raw", "reasoning": "Need to run code.", "content": "Running it.", "chunk": 4,
            "tool_calls": [{"name": "run_cell", "arguments": {"code": "1 + 1"}}]}
    with ScriptedServer({"turns": [turn]}) as srv:
        events = await collect(engine_for(srv), tools=TOOLS)
    assert "<|" not in text_of(events, TextDelta)
    message = events[-1].message
    assert events[-1].reason == "tool_calls"
    assert message.content == "Running it." and message.reasoning == "Need to run code."
    assert [(c.id, c.name, c.arguments) for c in message.tool_calls] == [
        ("functions.run_cell:0", "run_cell", {"code": "1 + 1"})]
    assert [e.call for e in events if isinstance(e, ToolCallDone)] == message.tool_calls


async def test_replayed_raw_text_with_think_and_section() -> None:
    raw = ("thinking about it</think>Sure.<|tool_calls_section_begin|><|tool_call_begin|>functions.run_cell:0"
           "<|tool_call_argument_begin|>{\"code\": \"x\"}<|tool_call_end|><|tool_calls_section_end|>")
    with ScriptedServer({"turns": [{"text": raw, "chunk": 7}]}) as srv:
        events = await collect(engine_for(srv), tools=TOOLS)
    message = events[-1].message
    assert (message.reasoning, message.content) == ("thinking about it", "Sure.")
    assert message.tool_calls[0].arguments == {"code": "x"}


async def test_no_content_artefact_never_reaches_the_text() -> None:
    with ScriptedServer({"turns": [{"reasoning": "only thoughts", "fault": {"no_content": True}}]}) as srv:
        events = await collect(engine_for(srv))
    assert text_of(events, TextDelta) == ""
    assert events[-1].message.content == "" and events[-1].message.reasoning == "only thoughts"


async def test_prefix_cache_hits_are_reported() -> None:
    system = {"role": "system", "content": "You are Kimi inside Jupyter. " * 30}
    with ScriptedServer({"turns": [{"content": "a"}, {"content": "b"}]}) as srv:
        engine = engine_for(srv)
        first = await collect(engine, [system, {"role": "user", "content": "one"}])
        second = await collect(engine, [system, {"role": "user", "content": "two"}])
    assert first[-2].cached_tokens == 0 and second[-2].cached_tokens > 100


async def test_consumer_stopping_early_closes_cleanly() -> None:
    with ScriptedServer({"turns": [{"content": "x" * 400, "chunk": 1}, {"content": "next"}]}) as srv:
        engine = engine_for(srv)
        stream = engine.stream(USER)
        async for event in stream:
            break
        await stream.aclose()
        assert (await collect(engine))[-1].message.content == "next"


# -- requests -------------------------------------------------------------------------------------------------------
async def test_request_body_has_no_nulls_and_only_configured_options() -> None:
    with ScriptedServer({"turns": [{"content": "a"}, {"content": "b"}]}) as srv:
        await collect(engine_for(srv))
        await collect(engine_for(srv, temperature=0.6, reasoning_effort="high", thinking=False), tools=TOOLS)
    plain, configured = srv.requests

    def values(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from values(v)
        elif isinstance(node, list):
            for v in node:
                yield from values(v)
        else:
            yield node

    assert None not in list(values(plain)) and None not in list(values(configured))
    assert plain["stream"] is True and plain["stream_options"] == {"include_usage": True}
    for absent in ("temperature", "tool_choice", "tools", "reasoning_effort", "chat_template_kwargs", "thinking"):
        assert absent not in plain
    assert configured["tool_choice"] == "auto" and configured["tools"] == TOOLS
    assert configured["temperature"] == 0.6 and configured["reasoning_effort"] == "high"
    assert configured["chat_template_kwargs"] == {"thinking": False}


def test_thinking_off_uses_moonshots_parameter_on_moonshots_api() -> None:
    engine = RemoteEngine("https://api.moonshot.ai/v1", model="kimi-k2.5", thinking=False)
    body = engine.request_body(USER)
    assert body["thinking"] == {"type": "disabled"} and "chat_template_kwargs" not in body
    assert "thinking" not in engine.request_body(USER, thinking=True)


# -- failures -------------------------------------------------------------------------------------------------------
async def test_429_with_retry_after_then_success(caplog) -> None:
    caplog.set_level(logging.INFO, logger="kimi_nb.engine")
    script = {"turns": [{"fault": {"http": 429, "retry_after": 0.2}}, {"content": "made it"}]}
    with ScriptedServer(script) as srv:
        events = await collect(engine_for(srv, backoff=5.0))
    assert events[-1].message.content == "made it"
    assert len(srv.requests) == 2
    assert "HTTP 429" in caplog.text and "retrying in 0.2 s" in caplog.text  # Retry-After, not the 5 s backoff


async def test_500_then_success() -> None:
    with ScriptedServer({"turns": [{"fault": {"http": 500}}, {"fault": {"http": 503}}, {"content": "ok"}]}) as srv:
        events = await collect(engine_for(srv))
    assert events[-1].message.content == "ok"


async def test_retries_are_bounded() -> None:
    with ScriptedServer({"turns": [{"fault": {"http": 429, "message": "slow down"}}], "repeat": True}) as srv:
        error = await failure(engine_for(srv, max_retries=2))
    assert len(srv.requests) == 3
    assert error.status == 429 and error.retryable
    assert str(error) == f"{srv.base_url} is rate limiting requests (HTTP 429) after 2 retries: slow down"


async def test_client_errors_are_not_retried_and_carry_the_servers_message() -> None:
    with ScriptedServer({"turns": [{"fault": {"http": 400, "message": "prompt is too long"}}]}) as srv:
        error = await failure(engine_for(srv))
    assert len(srv.requests) == 1 and error.status == 400 and not error.retryable
    assert str(error) == f"{srv.base_url} rejected the request (HTTP 400): prompt is too long"


async def test_dropped_stream() -> None:
    with ScriptedServer({"turns": [{"content": "partial answer", "chunk": 2, "fault": {"drop_after": 6}}]}) as srv:
        error = await failure(engine_for(srv))
    assert "dropped" in str(error) and srv.base_url in str(error) and error.retryable


async def test_stream_cut_between_chunks_without_finish_is_a_drop() -> None:
    with ScriptedServer({"turns": [{"content": "whole", "fault": {"drop_after": 5}}]}) as srv:
        error = await failure(engine_for(srv))
    assert "before the answer finished" in str(error)


async def test_connection_refused() -> None:
    with ScriptedServer({"turns": []}) as srv:
        pass
    error = await failure(engine_for(srv))
    assert str(error) == f"cannot reach {srv.base_url}: connection refused — is the server running?"


async def test_timeout() -> None:
    with ScriptedServer({"turns": [{"content": "slow", "fault": {"delay": 2}}]}) as srv:
        error = await failure(engine_for(srv, timeout=0.3))
    assert str(error) == f"{srv.base_url} did not answer within 0.3 s (timeout)"


async def test_unknown_model() -> None:
    with ScriptedServer({"turns": [{"content": "x"}], "models": ["moonshotai/Kimi-K2.5"]}) as srv:
        error = await failure(engine_for(srv, model="kimi-k9"))
    assert error.status == 404 and "'kimi-k9'" in str(error) and "KIMI_MODEL" in str(error)


async def test_the_key_never_shows(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with ScriptedServer({"turns": [{"content": "fine"}, {"fault": {"http": 400, "message": f"bad key {SECRET}"}}],
                         "api_key": SECRET}) as srv:
        good = engine_for(srv, api_key=SECRET)
        assert (await collect(good))[-1].message.content == "fine"
        echoed = await failure(good)
        refused = await failure(engine_for(srv, api_key=SECRET + "-wrong"))
    assert SECRET not in str(echoed) and "***" in str(echoed)
    assert refused.status == 401 and "KIMI_API_KEY" in str(refused) and SECRET not in str(refused)
    assert SECRET not in repr(good) and SECRET not in good.describe()
    assert SECRET not in caplog.text


async def test_list_models() -> None:
    with ScriptedServer({"turns": []}, models=("moonshotai/Kimi-K2.5", "kimi-k2.6")) as srv:
        engine = engine_for(srv)
        assert await engine.list_models() == ["moonshotai/Kimi-K2.5", "kimi-k2.6"]
        await engine.aclose()
    with pytest.raises(EngineError, match="connection refused"):
        await engine.list_models()


# -- the factory ----------------------------------------------------------------------------------------------------
@pytest.fixture
def no_endpoint(monkeypatch):
    for name in ("KIMI_BASE_URL", "KIMI_API_KEY", "MOONSHOT_API_KEY", "KIMI_MODEL", "KIMI_SCRIPTED"):
        monkeypatch.delenv(name, raising=False)


async def test_open_engine_offline_uses_the_demo_server(no_endpoint) -> None:
    settings = load_settings(Config())
    engine = open_engine(settings)
    assert engine.describe().startswith(OFFLINE_DESCRIPTION)
    tools = [{"type": "function", "function": {"name": "insert_cell", "parameters": {
        "type": "object", "properties": {"source": {"type": "string"}}}}}]
    events = await collect(engine, [{"role": "user", "content": "load a csv"}], tools=tools)
    message = events[-1].message
    assert "offline scripted engine" in message.content and "KIMI_API_KEY" in message.content
    assert message.tool_calls[0].name == "insert_cell" and "load a csv" in message.tool_calls[0].arguments["source"]


async def test_open_engine_with_a_script(no_endpoint, tmp_path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"turns": [{"content": "scripted!"}]}))
    engine = open_engine(load_settings(Config(), scripted_script=str(path)))
    assert "offline scripted engine" in engine.describe()
    assert (await collect(engine))[-1].message.content == "scripted!"
    with pytest.raises(EngineError, match="connection refused"):  # aclose() stopped its server
        await collect(engine)


def test_open_engine_online(no_endpoint) -> None:
    engine = open_engine(load_settings(Config(), base_url="http://gpu-box:8000/v1", api_key=SECRET, model="m"))
    assert engine.describe() == "model m at http://gpu-box:8000/v1"
    assert SECRET not in repr(engine)
