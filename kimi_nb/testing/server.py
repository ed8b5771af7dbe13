"""ScriptedServer: a real OpenAI-compatible HTTP server on 127.0.0.1 answering chat requests from a script.

Endpoints: ``POST /v1/chat/completions`` (SSE when ``stream`` is true, one JSON body otherwise),
``GET /v1/models``, ``GET /health``. It runs in a background thread (stdlib ``http.server``), so it serves
while the caller's event loop runs an async client.

It is as strict as real Kimi endpoints where kimi-nb must behave: a null top-level field gets 422 (vLLM rejects
``tool_choice: null``), ``tool_choice: "required"`` gets 400 (Moonshot's API), an unknown model 404 when the
script names its ``models``, a missing or wrong key 401 when the script sets ``api_key``. Requests rejected this
way are recorded but consume no turn. A request after the last turn gets HTTP 500 "script exhausted after N
turns" (unless the script repeats).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kimi_nb.errors import ScriptError
from kimi_nb.testing.replies import Reply, chunk_body, completion_body, plan_reply, prompt_text, usage_body
from kimi_nb.testing.script import Script, Turn, load_script, parse_turn

__all__ = ["Responder", "ScriptedServer"]

#: A responder answers one chat request body with a turn (a TURN dict as in scripts, or a Turn).
Responder = Callable[[dict[str, Any]], "Mapping[str, Any] | Turn"]


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class ScriptedServer:
    """An OpenAI-compatible Kimi-protocol server answering from a script or a responder callable.

    ``with ScriptedServer({"turns": [{"content": "hi"}]}) as srv: srv.base_url`` (ends in ``/v1``).
    ``srv.requests`` holds every chat request body (parsed JSON), in order. ``srv.healthy = False`` makes
    ``/health`` answer 503 (a server still loading). ``models`` overrides the script's served model ids.
    """

    def __init__(
        self,
        script: Script | Mapping[str, Any] | str | None = None,
        *,
        responder: Responder | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: tuple[str, ...] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if (script is None) == (responder is None):
            raise ScriptError("ScriptedServer needs exactly one of a script or a responder")
        self.script = load_script(script) if script is not None else None
        self.responder = responder
        self.host = host
        self.models = tuple(models) if models is not None else (self.script.models if self.script else ())
        self.log = log
        self.healthy = True
        self.requests: list[dict[str, Any]] = []
        self.turns_served = 0
        self._used: set[int] = set()
        self._requested_port = port
        self._lock = threading.Lock()
        self._previous_prompt = ""
        self._httpd: _HTTPServer | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        try:
            self._httpd = _HTTPServer((self.host, self._requested_port), _Handler, self)
        except OSError as exc:
            raise ScriptError(f"scripted server cannot listen on {self.host}:{self._requested_port}: "
                              f"{exc.strerror or exc}") from None
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="kimi-nb-scripted-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedServer:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (still known after ``stop()``, e.g. to test a refused connection)."""
        if self._port is None:
            raise ScriptError("the scripted server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no path)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        return f"{self.url}/v1"

    def __repr__(self) -> str:
        where = self.base_url if self._httpd is not None else "stopped"
        return f"ScriptedServer({where}, requests={len(self.requests)})"

    # -- answering ---------------------------------------------------------------------------------------------
    def _record(self, body: dict[str, Any]) -> int:
        with self._lock:
            self.requests.append(body)
            return len(self.requests)

    def _next_turn(self, body: dict[str, Any]) -> Turn:
        if self.responder is not None:
            try:
                answer = self.responder(body)
            except Exception as exc:  # noqa: BLE001 - a broken responder must answer, not hang the client
                raise _HTTPError(500, f"scripted responder failed: {type(exc).__name__}: {exc}") from None
            return parse_turn(answer)
        assert self.script is not None
        text = _request_text(body.get("messages"))
        with self._lock:
            index = self._pick(text)
            if index is None and self.script.repeat and self._used:
                self._used.clear()
                index = self._pick(text)
            if index is None:
                turns = self.script.turns
                if len(self._used) == len(turns):
                    raise _HTTPError(500, f"script exhausted after {len(turns)} turns")
                raise _HTTPError(500, f"no unused script turn matches this request "
                                      f"({len(turns) - len(self._used)} of {len(turns)} turns left, all with 'match')")
            self._used.add(index)
            self.turns_served += 1
            return self.script.turns[index]

    def _pick(self, text: str) -> int | None:
        """The first unused turn whose ``match`` occurs in the request, else the first unused turn without one."""
        unused = [(i, t) for i, t in enumerate(self.script.turns) if i not in self._used]  # type: ignore[union-attr]
        matched = next((i for i, t in unused if t.match is not None and t.match in text), None)
        if matched is not None:
            return matched
        return next((i for i, t in unused if t.match is None), None)

    def _usage(self, turn: Turn, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        prompt = prompt_text(body)
        with self._lock:
            previous, self._previous_prompt = self._previous_prompt, prompt
        return usage_body(turn, reply, prompt, previous)

    def _check(self, body: dict[str, Any], authorization: str | None) -> None:
        """Reject what real Kimi endpoints reject (see the module docstring)."""
        key = self.script.api_key if self.script else None
        if key and authorization != f"Bearer {key}":
            raise _HTTPError(401, "Incorrect API key provided.")
        nulls = sorted(name for name, value in body.items() if value is None)
        if nulls:
            raise _HTTPError(422, f"{nulls[0]}: Input should be a valid value, not null")
        if body.get("tool_choice") == "required":
            raise _HTTPError(400, "tool_choice 'required' is not supported")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise _HTTPError(400, "messages: a non-empty list is required")
        model = body.get("model")
        if self.models and model not in self.models:
            raise _HTTPError(404, f"The model `{model}` does not exist.")


def _request_text(messages: Any) -> str:
    """Every text of a request's messages (contents, text parts, tool-call arguments), for ``match``."""
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                parts.append(str(call["function"].get("arguments", "")))
    return "\n".join(parts)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's default of 5 resets concurrent streams; vLLM's uvicorn uses 2048

    def __init__(self, address: tuple[str, int], handler: type, owner: ScriptedServer) -> None:
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kimi-nb-scripted-server"
    # small SSE writes on a kept-alive connection would otherwise wait ~40 ms (Nagle + delayed ACK), which real
    # servers (uvicorn) avoid with TCP_NODELAY too
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log = self.server.owner.log
        if log is not None:
            log(f"{self.address_string()} {format % args}")

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True

    # -- routes ----------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        owner = self.server.owner
        if path == "/health":
            self._send_bytes(200 if owner.healthy else 503, b"", "text/plain")
        elif path == "/v1/models":
            from kimi_nb.config import DEFAULT_MODEL

            data = [{"id": m, "object": "model", "created": 0, "owned_by": "kimi-nb"}
                    for m in owner.models or (DEFAULT_MODEL,)]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_error(_HTTPError(404, f"no route for GET {path}"))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if path != "/v1/chat/completions":
            self._send_error(_HTTPError(404, f"no route for POST {path}"))
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send_error(_HTTPError(400, "request body is not valid JSON"))
            return
        if not isinstance(body, dict):
            self._send_error(_HTTPError(400, "request body must be a JSON object"))
            return
        owner = self.server.owner
        number = owner._record(body)
        try:
            owner._check(body, self.headers.get("Authorization"))
            turn = owner._next_turn(body)
            fault = turn.fault
            if fault.http is not None:
                headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                raise _HTTPError(fault.http, fault.message or f"scripted HTTP {fault.http} fault", headers)
            reply = plan_reply(turn, body)
        except _HTTPError as exc:
            self._send_error(exc)
            return
        except Exception as exc:  # noqa: BLE001 - an invalid responder answer, a render failure: answer, never hang
            self._send_error(_HTTPError(500, f"scripted server failed: {type(exc).__name__}: {exc}"))
            return
        usage = owner._usage(turn, reply, body)
        model = str(body.get("model") or "")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(turn, reply, model, number, usage if include_usage else None)
        else:
            self._complete(turn, reply, model, number, usage)

    # -- answers -------------------------------------------------------------------------------------------------
    def _complete(self, turn: Turn, reply: Reply, model: str, number: int, usage: dict[str, Any]) -> None:
        data = json.dumps(completion_body(reply, model, usage, number), ensure_ascii=False).encode()
        time.sleep(turn.fault.delay)
        drop = turn.fault.drop_after
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if drop is not None:
            self.wfile.write(data[: min(drop, len(data) - 1)])
            self.close_connection = True
            return
        self.wfile.write(data)

    def _stream(self, turn: Turn, reply: Reply, model: str, number: int, usage: dict[str, Any] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._event(chunk_body(model, number, {"role": "assistant", "content": ""}))
        drop, sent = turn.fault.drop_after, 0
        for piece in reply.pieces:
            time.sleep(turn.fault.delay)
            if drop is not None and sent + len(piece.text) > drop:
                if drop > sent:
                    self._event(chunk_body(model, number, reply.delta(piece.truncated(drop - sent))))
                self.close_connection = True
                return
            sent += len(piece.text)
            self._event(chunk_body(model, number, reply.delta(piece)))
        if drop is not None:
            self.close_connection = True
            return
        self._event(chunk_body(model, number, {}, reply.finish_reason))
        if usage is not None:
            self._event(chunk_body(model, number, None, usage=usage))
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _event(self, body: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_error(self, error: _HTTPError) -> None:
        kind = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 422: "BadRequestError",
                429: "RateLimitError"}.get(error.status, "InternalServerError")
        body = {"error": {"message": error.message, "type": kind, "code": error.status}}
        self._send_json(error.status, body, error.headers)

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), "application/json", headers)

    def _send_bytes(self, status: int, data: bytes, content_type: str,
                    headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
