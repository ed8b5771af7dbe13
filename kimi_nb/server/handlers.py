"""HTTP handlers of the sidebar API under ``{base_url}kimi-nb/api/``: status, streamed chat, memory.

Every route requires Jupyter's authentication, its authorization (resource "kimi_nb") and XSRF protection for
cookie-authenticated requests, like Jupyter's own APIs. Errors are JSON ``{"message": "<one line>"}``: 400 for
bad input, 502 when the engine fails before the answer started streaming; a failure during the stream is its
last NDJSON line, ``{"type": "error", "message": ...}``. The engine and the model's modules are imported on the
first request. The request's ``path`` is only a label: no handler reads or writes a file named by the browser.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.iostream import StreamClosedError

from kimi_nb.errors import KimiError, ToolError

if TYPE_CHECKING:
    from kimi_nb.server.app import KimiService

__all__ = ["ROUTES", "SERVICE_SETTING", "ChatHandler", "MemoryHandler", "MemoryItemHandler", "StatusHandler"]

#: The tornado setting holding the extension's KimiService.
SERVICE_SETTING = "kimi_nb_service"


class KimiHandler(APIHandler):
    """Base of the sidebar handlers: the shared service and one-line JSON errors.

    ``auth_resource`` lets a custom Jupyter Authorizer (e.g. JupyterHub's) allow or deny the sidebar as a whole:
    "read" for GET, "write" for POST and DELETE.
    """

    auth_resource = "kimi_nb"

    @property
    def service(self) -> KimiService:
        return self.settings[SERVICE_SETTING]

    def fail(self, status: int, message: str) -> None:
        """Finish with ``status`` and ``{"message": message}`` (message: one line, no secret)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))


class StatusHandler(KimiHandler):
    """``GET status``: which engine answers, and whether it can now (the key is never part of it)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps(await self.service.status()))


class ChatHandler(KimiHandler):
    """``POST chat``: run the agent on the browser's notebook and stream its events as NDJSON.

    Headers are sent with the first event, so a failure before it (endpoint unreachable, key refused) is a
    502 with a JSON message; later failures end the stream with an error line. Closing the connection
    cancels the agent (and its request to the model).
    """

    _scope: anyio.CancelScope | None = None

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from kimi_nb.agent import run_agent
        from kimi_nb.server.chat import BadRequest, ChatRequest, prepare_conversation

        try:
            request = ChatRequest.from_json(_decode(self.request.body))
            settings = self.service.configured()
            conversation = prepare_conversation(request, settings, self.service.memory())
            engine = self.service.engine()
        except BadRequest as exc:
            return self.fail(400, str(exc))
        except KimiError as exc:
            return self.fail(502, str(exc))
        events = run_agent(
            engine,
            conversation.messages,
            conversation.toolbox,
            max_steps=settings.max_steps,
            max_tokens=settings.max_tokens,
            thinking=settings.thinking if request.thinking is None else request.thinking,
        )
        with anyio.CancelScope() as self._scope:
            try:
                await self._relay(events, notices=[f"Context: {note}" for note in conversation.dropped])
            except StreamClosedError:
                self._scope.cancel()
        if self._scope.cancel_called:
            self.log.info("kimi-nb chat cancelled: the browser closed the connection")

    async def _relay(self, events: AsyncIterator[Any], *, notices: list[str]) -> None:
        """Write each agent event as one NDJSON line, then finish; ``notices`` go out first, with the first event.
        A failure is a 502 before the first line, else the last line."""
        from kimi_nb.agent import Notice, error_json, event_to_json

        started = False
        try:
            async with aclosing(events):
                async for event in events:
                    if not started:
                        self.set_header("Content-Type", "application/x-ndjson")
                        self.set_header("Cache-Control", "no-cache")
                        self.set_header("X-Accel-Buffering", "no")
                        started = True
                        for text in notices:
                            self._write_line(event_to_json(Notice(text)))
                    self._write_line(event_to_json(event))
                    await self.flush()
            return self.finish()
        except KimiError as exc:
            message = str(exc)
            self.log.warning("kimi-nb chat failed: %s", message)
        except StreamClosedError:
            raise
        except Exception:
            if not started:
                raise
            self.log.exception("kimi-nb chat failed")
            message = "kimi-nb failed unexpectedly; the Jupyter server log has the details"
        if not started:
            return self.fail(502, message)
        self._write_line(error_json(message))
        self.finish()

    def _write_line(self, event: dict[str, Any]) -> None:
        self.write(json.dumps(event, ensure_ascii=False) + "\n")

    def on_connection_close(self) -> None:
        """The browser aborted (stop button, page closed): cancel the agent and its model request."""
        if self._scope is not None:
            self._scope.cancel()
        super().on_connection_close()


class MemoryHandler(KimiHandler):
    """``GET memory`` lists the memories; ``DELETE memory`` clears them all (204)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            memories = self.service.memory().list()
        except KimiError as exc:
            return self.fail(500, str(exc))
        self.finish(json.dumps({"memories": [_memory_json(memory) for memory in memories]}))

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        try:
            self.service.memory().clear()
        except KimiError as exc:
            return self.fail(500, str(exc))
        self.set_status(204)
        self.finish()


class MemoryItemHandler(KimiHandler):
    """``DELETE memory/<key>`` forgets one memory (204; 404 when there is none)."""

    @web.authenticated
    @authorized
    async def delete(self, key: str) -> None:
        try:
            self.service.memory().delete(key)
        except ToolError as exc:  # no such note
            return self.fail(404, str(exc))
        except KimiError as exc:
            return self.fail(500, str(exc))
        self.set_status(204)
        self.finish()


def _decode(body: bytes) -> Any:
    from kimi_nb.server.chat import BadRequest

    try:
        return json.loads(body or b"null")
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None


def _memory_json(memory: Any) -> dict[str, Any]:
    return {"key": memory.key, "content": memory.content, "updated_at": memory.updated_at}


#: URL patterns (joined to the server's base_url by ExtensionApp) and their handlers.
ROUTES: list[tuple[str, type[KimiHandler]]] = [
    (r"/kimi-nb/api/status", StatusHandler),
    (r"/kimi-nb/api/chat", ChatHandler),
    (r"/kimi-nb/api/memory", MemoryHandler),
    (r"/kimi-nb/api/memory/(?P<key>[^/]+)", MemoryItemHandler),
]
