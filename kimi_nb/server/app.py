"""The Jupyter Server extension: settings, the lazily created engine and the sidebar's HTTP routes.

Loading it costs almost nothing: no model client, no agent and no kernel client is imported until the
first request that needs one (see ``bench/bench_server_startup.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
from jupyter_server.extension.application import ExtensionApp

from kimi_nb.config import KimiNB, load_settings
from kimi_nb.errors import KimiError
from kimi_nb.server.handlers import ROUTES, SERVICE_SETTING

if TYPE_CHECKING:
    from kimi_nb.engine import RemoteEngine
    from kimi_nb.memory import MemoryStore

__all__ = ["OFFLINE_NOTICE", "STATUS_TIMEOUT", "KimiExtension", "KimiService"]

#: Seconds ``GET status`` waits for the endpoint to list its models.
STATUS_TIMEOUT = 10.0
OFFLINE_NOTICE = (
    "kimi-nb: no model endpoint configured; using the offline scripted engine (set KIMI_BASE_URL / KIMI_API_KEY)"
)


class KimiService:
    """What the handlers share: the settings, the one engine (opened on first use) and the memory store.

    ``settings`` is None when the configuration is invalid; then ``problem`` says why in one line and every
    request that needs the engine or the memory fails with it.
    """

    def __init__(self, settings: KimiNB | None, *, problem: str | None = None) -> None:
        self.settings = settings
        self.problem = problem
        self._engine: RemoteEngine | None = None

    def configured(self) -> KimiNB:
        """The settings, or KimiError saying why the configuration is unusable."""
        if self.settings is None:
            raise KimiError(self.problem or "kimi-nb is not configured")
        return self.settings

    def engine(self) -> RemoteEngine:
        """The server's engine, opened on first use (the offline scripted engine starts then). Raises KimiError."""
        if self._engine is None:
            from kimi_nb.engine import open_engine

            self._engine = open_engine(self.configured())
        return self._engine

    async def status(self) -> dict[str, Any]:
        """The sidebar's ``GET status`` answer: engine, model, offline, ok, message (never the key)."""
        try:
            engine = self.engine()
        except KimiError as exc:
            return {"engine": "not configured", "model": "", "offline": False, "ok": False, "message": str(exc)}
        offline = self.configured().offline
        problem = await _unavailable(engine, check_model=not offline)
        return {"engine": engine.describe(), "model": engine.model, "offline": offline, "ok": problem is None,
                "message": problem}

    def memory(self) -> MemoryStore:
        """The persistent memory store at ``settings.memory_dir``."""
        from kimi_nb.memory import MemoryStore

        return MemoryStore(self.configured().memory_dir)

    async def aclose(self) -> None:
        """Close the engine's HTTP client (and the scripted server it started) if it was opened."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.aclose()


class KimiExtension(ExtensionApp):
    """kimi-nb's Jupyter Server extension: the JupyterLab sidebar's API under ``{base_url}kimi-nb/api/``."""

    name = "kimi_nb"
    classes: ClassVar[list[type]] = [*ExtensionApp.classes, KimiNB]

    def initialize_settings(self) -> None:
        """Read the KimiNB settings (``c.KimiNB.*`` in any Jupyter server config) and say which engine is used."""
        try:
            settings = load_settings(config=self.config)
        except KimiError as exc:
            self.log.error("kimi-nb: %s", exc)
            service = KimiService(None, problem=str(exc))
        else:
            _log_engine_choice(self.log, settings)
            service = KimiService(settings)
        self.settings[SERVICE_SETTING] = service

    def initialize_handlers(self) -> None:
        self.handlers.extend(ROUTES)

    async def stop_extension(self) -> None:
        """Close the engine when the server stops."""
        await self.settings[SERVICE_SETTING].aclose()


async def _unavailable(engine: RemoteEngine, *, check_model: bool) -> str | None:
    """Why ``engine`` cannot answer now (one line), or None when its endpoint lists its models (and the model)."""
    with anyio.move_on_after(STATUS_TIMEOUT):
        try:
            models = await engine.list_models()
        except KimiError as exc:
            return str(exc)
        if check_model and models and engine.model not in models:
            return f"{engine.endpoint} does not serve model {engine.model!r} (it serves: {', '.join(models[:5])})"
        return None
    return f"{engine.endpoint} did not answer within {STATUS_TIMEOUT:g} s"


def _log_engine_choice(log: logging.Logger | Any, settings: KimiNB) -> None:
    if settings.scripted_script:
        log.info("kimi-nb: using the offline scripted engine with script %s", settings.scripted_script)
    elif settings.offline:
        log.warning(OFFLINE_NOTICE)
    else:
        log.info("kimi-nb: model %s at %s", settings.model, settings.endpoint)
