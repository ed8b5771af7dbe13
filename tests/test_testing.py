"""The ScriptedServer over real HTTP: script validation, vLLM-shaped streams, faults, recording, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import openai
import pytest

from kimi_nb.errors import ScriptError
from kimi_nb.testing import ScriptedServer, demo_responder, load_script

USER = [{"role": "user", "content": "hi"}]


def post(srv: ScriptedServer, body: dict, **kwargs) -> httpx.Response:
    body = {"model": "kimi-k2.5", "messages": USER, **body}
    return httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=10, **kwargs)


def events(response: httpx.Response) -> list:
    """The SSE data payloads of a streamed answer ([DONE] kept as a string)."""
    lines = [line[len("data: "):] for line in response.text.split("\n\n") if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def deltas(response: httpx.Response) -> list[dict]:
    return [e["choices"][0]["delta"] for e in events(response) if e != "[DONE]" and e["choices"]]


# -- script validation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "script, expected",
    [
        ({"turns": [{"content": "a"}, {"contnet": "b"}]}, "turn 1: unknown key 'contnet'"),
        ({"turns": [{"fault": {"htp": 429}}]}, "turn 0 fault: unknown key 'htp'"),
        ({"turns": [{"tool_calls": [{"name": "f", "args": {}}]}]}, "tool_calls[0]: unknown key 'args'"),
        ({"turns": [{"mode": "leaky"}]}, "'mode' must be one of structured, raw"),
        ({"turns": [{"text": "x", "content": "y"}]}, "excludes content"),
        ({"turns": [{"chunk": 0}]}, "'chunk' must be at least 1"),
        ({"turns": [{"fault": {"http": 200}}]}, "HTTP error status"),
        ({"turns": [{"reasoning_field": "thoughts"}]}, "'reasoning_field' must be one of"),
        ({"turns": [{"usage": {"prompt_tokens": -1}}]}, "non-negative integer"),
        ({"turns": {"content": "x"}}, "'turns' must be a list"),
        ({"turns": [], "loop": True}, "unknown key 'loop'"),
        ({"turns": ["hello"]}, "turn 0: a turn must be a JSON object"),
        ({"turns": [{"mode": "raw", "tool_calls": [{"name": "f", "arguments": "{"}]}]}, "use 'text'"),
        ({"turns": [{"match": ""}]}, "'match' must be a non-empty string"),
    ],
)
def test_invalid_scripts_name_the_problem(script: dict, expected: str) -> None:
    with pytest.raises(ScriptError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_script(script)


def test_load_script_from_file(tmp_path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"turns": [{"content": "hi", "comment": "greeting"}], "repeat": True}))
    script = load_script(path)
    assert script.repeat and script.turns[0].content == "hi"
    path.write_text("{not json")
    with pytest.raises(ScriptError, match="not valid JSON"):
        load_script(path)
    with pytest.raises(ScriptError, match="cannot read script"):
        load_script(tmp_path / "missing.json")


def test_script_repr_hides_key() -> None:
    script = load_script({"turns": [], "api_key": "sk-very-secret-123"})
    assert "sk-very-secret-123" not in repr(script)


# -- shapes ---------------------------------------------------------------------------------------------------------
def test_stream_shapes_like_vllm() -> None:
    turn = {"reasoning": "think first", "content": "Hello there", "chunk": 4,
            "tool_calls": [{"name": "run_cell", "arguments": {"code": "1+1"}}]}
    with ScriptedServer({"turns": [turn]}) as srv:
        response = post(srv, {"stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response)
    assert got[-1] == "[DONE]"
    assert got[-2]["choices"] == [] and got[-2]["usage"]["completion_tokens"] > 0
    assert got[-3]["choices"][0]["finish_reason"] == "tool_calls"
    parts = deltas(response)
    assert parts[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning", "") for d in parts) == "think first"
    assert "".join(d.get("content", "") for d in parts) == "Hello there"
    assert max(len(d.get("content", "")) for d in parts) == 4
    calls = [d["tool_calls"][0] for d in parts if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "functions.run_cell:0", "type": "function",
                        "function": {"name": "run_cell"}}
    assert json.loads("".join(c["function"]["arguments"] for c in calls[1:])) == {"code": "1+1"}


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    with ScriptedServer({"turns": [{"content": "ok"}]}) as srv:
        got = events(post(srv, {"stream": True}))
    assert all("usage" not in e for e in got if e != "[DONE]")
    assert got[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_non_streaming_through_the_openai_client(field: str) -> None:
    turn = {"reasoning": "hmm", "content": "Answer", "reasoning_field": field,
            "tool_calls": [{"name": "f", "arguments": {"a": [1, "é"]}, "id": "functions.f:7"}]}
    with ScriptedServer({"turns": [turn]}) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        completion = client.chat.completions.create(model="kimi-k2.5", messages=USER)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Answer"
    assert choice.message.model_extra[field] == "hmm"
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("functions.f:7", "f", {"a": [1, "é"]})
    assert completion.usage.prompt_tokens > 0


def test_streaming_through_the_openai_client() -> None:
    with ScriptedServer({"turns": [{"content": "streamed words", "reasoning_field": "reasoning_content",
                                    "reasoning": "r"}]}) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        stream = client.chat.completions.create(model="kimi-k2.5", messages=USER, stream=True)
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks if c.choices)
    assert (text, reasoning) == ("streamed words", "r")


def test_default_tool_call_ids_count_across_the_conversation() -> None:
    history = USER + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "functions.a:0", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "functions.b:1", "type": "function", "function": {"name": "b", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "functions.a:0", "content": "ok"},
        {"role": "tool", "tool_call_id": "functions.b:1", "content": "ok"},
    ]
    turn = {"tool_calls": [{"name": "c", "arguments": {}}, {"name": "d", "arguments": "{bad json"}]}
    with ScriptedServer({"turns": [turn]}) as srv:
        message = post(srv, {"messages": history}).json()["choices"][0]["message"]
    assert [c["id"] for c in message["tool_calls"]] == ["functions.c:2", "functions.d:3"]
    assert message["tool_calls"][1]["function"]["arguments"] == "{bad json"


def test_text_replays_a_raw_completion_verbatim() -> None:
    raw = "thinking</think>Answer<|tool_calls_section_begin|>"
    with ScriptedServer({"turns": [{"text": raw, "chunk": 3}]}) as srv:
        response = post(srv, {"stream": True})
    assert "".join(d.get("content", "") for d in deltas(response)) == raw


def test_raw_mode_leaks_kimi_markers_into_content() -> None:
    turn = {"mode": "raw", "reasoning": "hmm", "content": "Sure.",
            "tool_calls": [{"name": "run_cell", "arguments": {"code": "1"}}]}
    with ScriptedServer({"turns": [turn]}) as srv:
        response = post(srv, {"stream": True})
        message = post(srv, {}).json()
    text = "".join(d.get("content", "") for d in deltas(response))
    assert text.startswith("<think>hmm</think>Sure.<|tool_calls_section_begin|>")
    assert "<|tool_call_begin|>functions.run_cell:0<|tool_call_argument_begin|>" in text
    assert not any("tool_calls" in d or "reasoning" in d for d in deltas(response))
    assert events(response)[-2]["choices"][0]["finish_reason"] == "stop"
    assert message["error"]["message"] == "script exhausted after 1 turns"


def test_match_routes_concurrent_conversations() -> None:
    script = {"turns": [{"match": "notebook-B", "content": "B1"}, {"match": "notebook-A", "content": "A1"},
                        {"content": "anyone"}, {"match": "notebook-A", "content": "A2"}]}
    with ScriptedServer(script) as srv:
        def ask(text: str) -> str:
            return post(srv, {"messages": [{"role": "user", "content": text}]}).json()["choices"][0]["message"]["content"]

        assert [ask("fix notebook-A"), ask("fix notebook-A"), ask("other"), ask("fix notebook-B")] == \
            ["A1", "A2", "anyone", "B1"]
        assert "exhausted after 4 turns" in post(srv, {}).json()["error"]["message"]
    with ScriptedServer({"turns": [{"match": "x", "content": "only x"}]}) as srv:
        assert "no unused script turn matches" in post(srv, {}).json()["error"]["message"]


@pytest.mark.anyio
async def test_async_context_manager() -> None:
    async with ScriptedServer({"turns": [{"content": "async"}]}) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        completion = await client.chat.completions.create(model="m", messages=USER)
        await client.close()
    assert completion.choices[0].message.content == "async"


# -- faults -------------------------------------------------------------------------------------------------------
def test_http_fault_consumes_its_turn_and_sends_retry_after() -> None:
    script = {"turns": [{"fault": {"http": 429, "retry_after": 1}}, {"fault": {"http": 500, "message": "boom"}},
                        {"content": "finally"}]}
    with ScriptedServer(script) as srv:
        first, second, third = post(srv, {}), post(srv, {}), post(srv, {})
        exhausted = post(srv, {})
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert second.status_code == 500 and second.json()["error"]["message"] == "boom"
    assert third.json()["choices"][0]["message"]["content"] == "finally"
    assert exhausted.status_code == 500
    assert exhausted.json()["error"]["message"] == "script exhausted after 3 turns"
    assert len(srv.requests) == 4


def test_drop_after_closes_the_stream_without_done() -> None:
    with ScriptedServer({"turns": [{"content": "abcdefghij", "chunk": 2, "fault": {"drop_after": 5}}]}) as srv:
        received = ""
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", f"{srv.base_url}/chat/completions", timeout=10,
                              json={"model": "m", "messages": USER, "stream": True}) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        received += json.loads(line[6:])["choices"][0]["delta"].get("content", "")
    assert received == "abcde"


def test_delay_and_no_content_faults() -> None:
    with ScriptedServer({"turns": [{"reasoning": "only thinking", "fault": {"delay": 0.01, "no_content": True}}]}) as srv:
        response = post(srv, {"stream": True})
    assert "".join(d.get("content", "") for d in deltas(response)) == "(no content)"


def test_repeat_cycles_turns() -> None:
    with ScriptedServer({"turns": [{"content": "a"}, {"content": "b"}], "repeat": True}) as srv:
        answers = [post(srv, {}).json()["choices"][0]["message"]["content"] for _ in range(3)]
    assert answers == ["a", "b", "a"]


# -- strictness, recording, usage -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"tool_choice": None}, 422, "tool_choice"),
        ({"tool_choice": "required"}, 400, "required"),
        ({"model": "gpt-4"}, 404, "gpt-4"),
        ({"messages": []}, 400, "messages"),
    ],
)
def test_rejects_what_kimi_endpoints_reject_without_consuming_a_turn(body: dict, status: int, message: str) -> None:
    with ScriptedServer({"turns": [{"content": "ok"}], "models": ["kimi-k2.5"]}) as srv:
        rejected = post(srv, body)
        accepted = post(srv, {})
    assert rejected.status_code == status and message in rejected.json()["error"]["message"]
    assert accepted.status_code == 200
    assert len(srv.requests) == 2


def test_api_key_is_required_when_the_script_sets_one() -> None:
    with ScriptedServer({"turns": [{"content": "ok"}], "api_key": "right"}) as srv:
        assert post(srv, {}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert post(srv, {}, headers={"Authorization": "Bearer right"}).status_code == 200


def test_records_requests_and_reports_prefix_cache_hits() -> None:
    with ScriptedServer({"turns": [{"content": "one"}, {"content": "two"}]}) as srv:
        system = {"role": "system", "content": "You are Kimi. " * 40}
        first = post(srv, {"messages": [system, {"role": "user", "content": "a"}]}).json()["usage"]
        second = post(srv, {"messages": [system, {"role": "user", "content": "b"}]}).json()["usage"]
    assert srv.requests[1]["messages"][1]["content"] == "b"
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    assert 100 < second["prompt_tokens_details"]["cached_tokens"] < second["prompt_tokens"]


def test_usage_override() -> None:
    with ScriptedServer({"turns": [{"content": "x", "usage": {"prompt_tokens": 7, "cached_tokens": 3}}]}) as srv:
        usage = post(srv, {}).json()["usage"]
    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == (7, 3)


def test_models_and_health() -> None:
    with ScriptedServer({"turns": []}, models=("moonshotai/Kimi-K2.5",)) as srv:
        assert httpx.get(f"{srv.base_url}/models").json()["data"][0]["id"] == "moonshotai/Kimi-K2.5"
        assert httpx.get(f"{srv.url}/health").status_code == 200
        srv.healthy = False
        assert httpx.get(f"{srv.url}/health").status_code == 503
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/health")


# -- responders -------------------------------------------------------------------------------------------------------
def test_responder_callable_and_its_failures() -> None:
    def responder(body: dict) -> dict:
        if body["messages"][-1]["content"] == "fail":
            raise ValueError("no idea")
        return {"content": body["messages"][-1]["content"].upper()}

    with ScriptedServer(responder=responder) as srv:
        assert post(srv, {}).json()["choices"][0]["message"]["content"] == "HI"
        failed = post(srv, {"messages": [{"role": "user", "content": "fail"}]})
    assert failed.status_code == 500 and "no idea" in failed.json()["error"]["message"]


def test_demo_responder_quotes_the_users_words_not_the_notebook_context() -> None:
    from kimi_nb.context import ContextRequest, build
    from kimi_nb.notebook import NotebookSnapshot

    messages = build(ContextRequest("plot the sales", snapshot=NotebookSnapshot(cells=()))).messages
    assert "You asked: *plot the sales*" in demo_responder({"messages": messages})["content"]


def test_demo_responder_answers_prompt_then_tool_result() -> None:
    tools = [{"type": "function", "function": {"name": "insert_cell", "parameters": {
        "type": "object", "properties": {"source": {"type": "string"}, "cell_type": {"type": "string"}}}}}]
    prompt = [{"role": "user", "content": "plot a sine wave"}]
    first = demo_responder({"messages": prompt, "tools": tools})
    assert "offline scripted engine" in first["content"] and "KIMI_API_KEY" in first["content"]
    assert "KIMI_BASE_URL" in first["content"] and "plot a sine wave" in first["content"]
    (call,) = first["tool_calls"]
    assert call["name"] == "insert_cell" and call["arguments"]["cell_type"] == "code"
    assert "plot a sine wave" in call["arguments"]["source"]
    assert "tool_calls" not in demo_responder({"messages": prompt})
    after_tool = prompt + [{"role": "tool", "tool_call_id": "functions.insert_cell:0", "content": "ok"}]
    assert "tool_calls" not in demo_responder({"messages": after_tool, "tools": tools})
    with ScriptedServer(responder=demo_responder) as srv:
        message = post(srv, {"messages": prompt, "tools": tools}).json()["choices"][0]["message"]
    assert message["tool_calls"][0]["id"] == "functions.insert_cell:0"


# -- the CLI subcommand -------------------------------------------------------------------------------------------------
SCRIPTED_SERVER = [sys.executable, "-m", "kimi_nb.cli", "scripted-server"]


def test_cli_scripted_server_prints_url_and_stops_on_ctrl_c(tmp_path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"turns": [{"content": "from the cli"}]}))
    proc = subprocess.Popen([*SCRIPTED_SERVER, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        base_url = line.split()[-1]
        assert base_url.endswith("/v1")
        answer = httpx.post(f"{base_url}/chat/completions", timeout=10, json={"model": "m", "messages": USER})
        assert answer.json()["choices"][0]["message"]["content"] == "from the cli"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()


def test_cli_rejects_a_bad_script(tmp_path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"turns": [{"bogus": 1}]}))
    result = subprocess.run([*SCRIPTED_SERVER, str(path)],
                            check=False, capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 2
    assert "unknown key 'bogus'" in result.stderr and "Traceback" not in result.stderr
