"""Talking to K2.5: RemoteEngine over any OpenAI-compatible endpoint (Moonshot's API, vLLM, the ScriptedServer).

``RemoteEngine.stream`` always streams. It merges what structured endpoints send (``delta.reasoning`` and
``delta.reasoning_content``; ``tool_calls`` deltas assembled by index, their arguments validated as JSON) with a
``protocol.StreamParser`` over ``content``, so raw Kimi markers leaking into the text still become tool calls.

Requests follow what real Kimi endpoints accept (``PROTOCOL.md``): no null field ever; ``tools`` with
``tool_choice: "auto"`` only when tools are given (never ``"required"``); ``temperature`` and
``reasoning_effort`` only when configured. K2.5 thinks by default, so thinking on sends nothing; thinking off
sends ``thinking: {"type": "disabled"}`` to Moonshot's hosted API and ``chat_template_kwargs: {"thinking":
false}`` to everything else (vLLM, SGLang). HTTP 429 and 5xx are retried with bounded exponential backoff
honouring ``Retry-After`` (the openai client's own retries are off). Failures become one-line ``EngineError``
messages naming the endpoint; the API key never appears in a message, log or repr.

``openai`` is imported inside functions: ``import kimi_nb`` stays light.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Union
from urllib.parse import urlsplit, urlunsplit

import anyio

from kimi_nb.errors import EngineError
from kimi_nb.protocol import (
    Message,
    ReasoningDelta,
    StreamEvent,
    StreamParser,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    decode_arguments,
)

if TYPE_CHECKING:
    from kimi_nb.config import KimiNB

__all__ = [
    "OFFLINE_DESCRIPTION",
    "Engine",
    "EngineError",
    "EngineEvent",
    "Finished",
    "RemoteEngine",
    "Usage",
    "open_engine",
]

log = logging.getLogger("kimi_nb.engine")

OFFLINE_DESCRIPTION = "offline scripted engine (no model endpoint configured)"
#: Hosts of Moonshot's own API, which takes ``thinking: {"type": ...}`` instead of chat-template kwargs.
MOONSHOT_HOSTS = ("moonshot.ai", "moonshot.cn", "kimi.ai")
#: Longest wait between retries, whatever Retry-After asks for (seconds).
MAX_RETRY_WAIT = 30.0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class Finished:
    """The last event of one streamed completion: why it stopped and the whole parsed turn."""

    reason: str  # "stop", "tool_calls", "length", ...
    message: Message


EngineEvent = Union[StreamEvent, Usage, Finished]


class Engine(Protocol):
    """What the agent loop needs from an engine."""

    model: str

    def describe(self) -> str:
        """One line naming the endpoint and model (never the key)."""

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        model: str | None = None,
    ) -> AsyncIterator[EngineEvent]:
        """Stream one completion: protocol events, then Usage (when reported), then exactly one Finished.

        Raises EngineError with a one-line message on failure."""


class RemoteEngine:
    """An engine for any OpenAI-compatible endpoint. ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str,
        timeout: float = 120.0,
        max_retries: int = 3,
        temperature: float | None = None,
        thinking: bool = True,
        reasoning_effort: str | None = None,
        max_tokens: int | None = 8192,
        backoff: float = 0.5,
        label: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.temperature = temperature
        self.thinking = thinking
        self.reasoning_effort = reasoning_effort
        self.max_tokens = max_tokens
        self.backoff = backoff
        self.label = label
        self.__api_key = api_key
        self._client_obj: Any = None
        self._client_loop: Callable[[], Any] = _no_loop
        self._closers: list[Any] = []  # resources to release in aclose() (an owned scripted server)
        # Whether the endpoint sends reasoning in its own field (a reasoning parser is configured). Until that is
        # known, content of a thinking turn may still be inside the reasoning, so the parser holds it back;
        # once known, content streams at once. Moonshot's API always separates reasoning.
        self._separates_reasoning = (urlsplit(self.base_url).hostname or "").endswith(MOONSHOT_HOSTS)

    # -- description ---------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The base URL for display (any user:password part removed)."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) \
            if parts.hostname else self.base_url

    def describe(self) -> str:
        if self.label:
            return f"{self.label}, model {self.model}"
        return f"model {self.model} at {self.endpoint}"

    def __repr__(self) -> str:
        key = "set" if self.__api_key else "not set"
        return f"RemoteEngine({self.endpoint!r}, model={self.model!r}, api_key={key})"

    # -- requests ----------------------------------------------------------------------------------------------------
    def request_body(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """The chat-completions body ``stream`` sends (no null fields; see the module docstring)."""
        body: dict[str, Any] = {
            "model": model or self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens or self.max_tokens:
            body["max_tokens"] = max_tokens or self.max_tokens
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.reasoning_effort:
            body["reasoning_effort"] = self.reasoning_effort
        if not (self.thinking if thinking is None else thinking):
            if (urlsplit(self.base_url).hostname or "").endswith(MOONSHOT_HOSTS):
                body["thinking"] = {"type": "disabled"}
            else:
                body["chat_template_kwargs"] = {"thinking": False}
        return body

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        model: str | None = None,
    ) -> AsyncIterator[EngineEvent]:
        """Stream one completion: protocol events, then Usage (when reported), then exactly one Finished."""
        import openai

        body = self.request_body(messages, tools=tools, max_tokens=max_tokens, thinking=thinking, model=model)
        response = await self._open(body)
        thinking = self.thinking if thinking is None else thinking
        turn = _TurnAssembler(tools, thinking=thinking and not self._separates_reasoning)
        try:
            async with response:
                async for chunk in response:
                    for event in turn.feed(chunk):
                        yield event
        except openai.APIError as exc:
            raise self._error(exc, body["model"], streaming=True) from None
        self._separates_reasoning = self._separates_reasoning or bool(turn.reasoning)
        for event in turn.finish(self.endpoint):
            yield event

    async def list_models(self) -> list[str]:
        """The model ids the endpoint offers (``GET /v1/models``)."""
        import openai

        try:
            page = await self._client().models.list()
            return [model.id async for model in page]
        except openai.APIError as exc:
            raise self._error(exc, self.model, streaming=False) from None

    async def aclose(self) -> None:
        """Close HTTP clients and stop a scripted server this engine started."""
        client, self._client_obj, self._client_loop = self._client_obj, None, _no_loop
        if client is not None:
            try:
                await client.close()
            except RuntimeError:  # created on another, already closed event loop
                pass
        closers, self._closers = self._closers, []
        for close in closers:
            close()

    # -- internals -----------------------------------------------------------------------------------------------------
    def _client(self) -> Any:
        """The AsyncOpenAI client for the running event loop (httpx connection pools are loop-bound)."""
        import asyncio

        import openai

        try:
            loop: Any = asyncio.get_running_loop()
        except RuntimeError:  # another anyio backend: a client per call
            loop = None
        if loop is None or self._client_loop() is not loop:
            self._client_obj = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.__api_key or "not-needed",
                                                  timeout=self.timeout, max_retries=0)
            self._client_loop = weakref.ref(loop) if loop is not None else _no_loop
        return self._client_obj

    async def _open(self, body: dict[str, Any]) -> Any:
        """Start the streamed request, retrying 429 and 5xx with bounded backoff."""
        import openai

        extra = {name: body[name] for name in ("chat_template_kwargs", "thinking") if name in body}
        standard = {name: value for name, value in body.items() if name not in extra}
        for attempt in range(self.max_retries + 1):
            try:
                return await self._client().chat.completions.create(**standard, extra_body=extra or None)
            except openai.APIStatusError as exc:
                retryable = exc.status_code == 429 or exc.status_code >= 500
                if not retryable or attempt == self.max_retries:
                    raise self._error(exc, body["model"], streaming=False, retries=attempt) from None
                wait = self._retry_wait(exc, attempt)
                log.warning("HTTP %s from %s; retrying in %.1f s (retry %d of %d)", exc.status_code,
                            self.endpoint, wait, attempt + 1, self.max_retries)
                await anyio.sleep(wait)
            except openai.APIError as exc:
                raise self._error(exc, body["model"], streaming=False) from None
        raise AssertionError("unreachable")

    def _retry_wait(self, exc: Any, attempt: int) -> float:
        header = exc.response.headers.get("retry-after") if exc.response is not None else None
        try:
            wait = float(header) if header is not None else self.backoff * 2**attempt
        except ValueError:  # an HTTP date: fall back to our own backoff
            wait = self.backoff * 2**attempt
        return max(0.0, min(wait, MAX_RETRY_WAIT))

    def _error(self, exc: Any, model: str, *, streaming: bool, retries: int = 0) -> EngineError:
        """One-line EngineError for an openai exception (never containing the key)."""
        import openai

        where = self.endpoint
        if isinstance(exc, openai.APITimeoutError):
            return EngineError(f"{where} did not answer within {self.timeout:g} s (timeout)", retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            if streaming:
                return EngineError(f"the stream from {where} dropped before the answer finished", retryable=True)
            return EngineError(f"cannot reach {where}: {_connection_reason(exc)}", retryable=True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._scrub(_server_message(exc))[:200]  # scrub first: a cut could split the key
            after = f" after {retries} retries" if retries else ""
            if status in (401, 403):
                text = f"{where} refused the API key (HTTP {status}) — check KIMI_API_KEY"
            elif status == 404:
                text = f"{where}: model {model!r} or route not found (HTTP 404) — check KIMI_MODEL and that " \
                       f"the base URL ends in /v1"
            elif status == 429:
                text = f"{where} is rate limiting requests (HTTP 429){after}"
            elif status >= 500:
                text = f"{where} failed with HTTP {status}{after}"
            else:
                text = f"{where} rejected the request (HTTP {status})"
            return EngineError(f"{text}: {detail}" if detail else text, status=status,
                               retryable=status == 429 or status >= 500)
        return EngineError(f"{where}: {self._scrub(str(exc))[:200]}")

    def _scrub(self, text: str) -> str:
        return text.replace(self.__api_key, "***") if self.__api_key else text


def _no_loop() -> None:
    return None


def _server_message(exc: Any) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return " ".join(str(message).split())
    return ""


def _connection_reason(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return "connection refused — is the server running?"
        if "name or service not known" in str(seen).lower() or "nodename nor servname" in str(seen).lower():
            return "host not found — check KIMI_BASE_URL"
        seen = seen.__cause__ or seen.__context__
    return "connection failed — check KIMI_BASE_URL and the network"


@dataclass
class _StructuredCall:
    id: str
    name: str
    index: int  # the index events use
    arguments: list[str] = field(default_factory=list)


class _TurnAssembler:
    """Turns chat-completion chunks into protocol events and the final message."""

    def __init__(self, tools: list[dict[str, Any]] | None, *, thinking: bool) -> None:
        self.tools = tools
        self.thinking = thinking
        self.reasoning: list[str] = []
        self.parser: StreamParser | None = None  # made at the first content delta
        self.structured: dict[int, _StructuredCall] = {}
        self.parsed_index: dict[int, int] = {}  # parser's call index -> event index
        self.next_index = 0
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def feed(self, chunk: Any) -> list[EngineEvent]:
        events: list[EngineEvent] = []
        if chunk.usage is not None:
            details = getattr(chunk.usage, "prompt_tokens_details", None)
            self.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0,
                               getattr(details, "cached_tokens", None) or 0)
        for choice in chunk.choices[:1]:
            delta = choice.delta
            extra = delta.model_extra or {}
            for name in ("reasoning", "reasoning_content"):
                text = extra.get(name) or getattr(delta, name, None)
                if isinstance(text, str) and text:
                    self.reasoning.append(text)
                    events.append(ReasoningDelta(text))
            if delta.content:
                if self.parser is None:
                    # after structured reasoning (or with thinking off) content starts as content; otherwise
                    # a leaking template may still be inside the reasoning
                    decided = bool(self.reasoning) or not self.thinking
                    self.parser = StreamParser(self.tools, thinking=False if decided else None)
                events.extend(self._parsed(self.parser.feed(delta.content)))
            for call in delta.tool_calls or []:
                events.extend(self._structured(call))
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return events

    def finish(self, endpoint: str) -> list[EngineEvent]:
        if self.finish_reason is None:
            raise EngineError(f"the stream from {endpoint} ended before the answer finished (dropped?)",
                              retryable=True)
        events: list[EngineEvent] = self._parsed(self.parser.close()) if self.parser else []
        parsed = self.parser.finish() if self.parser else Message()
        calls: list[tuple[int, ToolCall]] = []
        for call in self.structured.values():
            done = _validated(call)
            events.append(ToolCallDone(call.index, done))
            calls.append((call.index, done))
        calls.extend((self.parsed_index[i], c) for i, c in enumerate(parsed.tool_calls))
        reasoning = "\n".join(part for part in ("".join(self.reasoning).strip(), parsed.reasoning) if part)
        message = Message(parsed.content, reasoning, [call for _, call in sorted(calls, key=lambda c: c[0])])
        if self.usage is not None:
            events.append(self.usage)
        reason = "tool_calls" if message.tool_calls and self.finish_reason == "stop" else self.finish_reason
        events.append(Finished(reason, message))
        return events

    def _index_for_parsed(self, index: int) -> int:
        if index not in self.parsed_index:
            self.parsed_index[index] = self.next_index
            self.next_index += 1
        return self.parsed_index[index]

    def _parsed(self, events: list[StreamEvent]) -> list[EngineEvent]:
        """Parser events with their call indexes moved into the turn's numbering."""
        out: list[EngineEvent] = []
        for event in events:
            if isinstance(event, ToolCallStarted):
                out.append(ToolCallStarted(self._index_for_parsed(event.index), event.id, event.name))
            elif isinstance(event, ToolCallArgumentsDelta):
                out.append(ToolCallArgumentsDelta(self._index_for_parsed(event.index), event.delta))
            elif isinstance(event, ToolCallDone):
                out.append(ToolCallDone(self._index_for_parsed(event.index), event.call))
            else:
                out.append(event)
        return out

    def _structured(self, delta: Any) -> list[EngineEvent]:
        call = self.structured.get(delta.index)
        function = delta.function
        if call is None:
            name = (function.name if function else None) or ""
            call = _StructuredCall(delta.id or "", name, self.next_index)
            self.next_index += 1
            self.structured[delta.index] = call
            events: list[EngineEvent] = [ToolCallStarted(call.index, call.id, call.name)]
        else:
            events = []
        if function is not None and function.arguments:
            call.arguments.append(function.arguments)
            events.append(ToolCallArgumentsDelta(call.index, function.arguments))
        return events


def _validated(call: _StructuredCall) -> ToolCall:
    raw = "".join(call.arguments).strip()
    arguments, error = decode_arguments(raw)
    if not call.name:
        error = "the endpoint sent a tool call without a name"
    call_id = call.id or f"functions.{call.name}:{call.index}"
    return ToolCall(call_id, call.name, arguments, error, raw_arguments=raw)


# -- the one factory every front door uses ---------------------------------------------------------------------
_demo_server: Any = None
_demo_lock = threading.Lock()


def open_engine(settings: KimiNB) -> RemoteEngine:
    """The engine for ``settings``: its endpoint, or (``settings.offline``) a RemoteEngine talking to a
    ScriptedServer started in the background — the demo responder (one shared server per process) or
    ``settings.scripted_script`` (a fresh server per engine, stopped by ``aclose()``)."""
    options: dict[str, Any] = {
        "model": settings.model, "timeout": settings.timeout, "max_retries": settings.max_retries,
        "temperature": settings.temperature, "thinking": settings.thinking,
        "reasoning_effort": settings.reasoning_effort, "max_tokens": settings.max_tokens,
    }
    if not settings.offline:
        return RemoteEngine(settings.endpoint, api_key=settings.api_key, **options)
    from kimi_nb.testing.server import ScriptedServer

    if settings.scripted_script:
        server = ScriptedServer(settings.scripted_script).start()
        engine = RemoteEngine(server.base_url, label=f"offline scripted engine ({settings.scripted_script})",
                              **options)
        engine._closers.append(server.stop)
        return engine
    global _demo_server
    with _demo_lock:
        if _demo_server is None:
            from kimi_nb.testing.demo import demo_responder

            _demo_server = ScriptedServer(responder=demo_responder).start()
    return RemoteEngine(_demo_server.base_url, label=OFFLINE_DESCRIPTION, **options)
