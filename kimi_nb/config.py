"""The one place kimi-nb's settings and their defaults live: a traitlets Configurable fed by Jupyter config and env vars.

Precedence: an explicit Jupyter config value (``c.KimiNB.model = ...``) wins over an environment variable,
which wins over the built-in default. The API key is read from the environment or server-side Jupyter config
only, and is never shown: ``describe()`` masks it.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Bool, Float, Int, Unicode, default, validate
from traitlets.config import Configurable

from kimi_nb.errors import ConfigError

__all__ = ["KimiNB", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "mask_secret", "load_settings"]

#: Moonshot's hosted OpenAI-compatible API (https://platform.moonshot.ai).
DEFAULT_BASE_URL = "https://api.moonshot.ai/v1"
#: Moonshot's hosted id of the open-weight Kimi K2.5 model (deprecated on the hosted API from 2026-08-31;
#: newer ids: kimi-k2.6, kimi-k2.7-code, kimi-k3, kimi-latest). Self-hosted vLLM serves it as
#: ``moonshotai/Kimi-K2.5``.
DEFAULT_MODEL = "kimi-k2.5"
#: Environment variables read for the key, in order.
API_KEY_ENV_VARS = ("KIMI_API_KEY", "MOONSHOT_API_KEY")


def mask_secret(secret: str | None) -> str:
    """A display form of a secret that reveals nothing useful: ``sk-…(51 chars)`` or ``(not set)``."""
    if not secret:
        return "(not set)"
    return f"{secret[:3]}…({len(secret)} chars)"


class KimiNB(Configurable):
    """kimi-nb settings shared by the magics, the JupyterLab server extension and the ``kimi-nb`` CLI."""

    base_url = Unicode(
        help="OpenAI-compatible endpoint, e.g. https://api.moonshot.ai/v1 or http://gpu-host:8000/v1 (env KIMI_BASE_URL)."
    ).tag(config=True)
    api_key = Unicode(
        help="API key for the endpoint. Prefer the KIMI_API_KEY / MOONSHOT_API_KEY environment variables; "
        "it is never sent to the browser nor written to notebooks or logs."
    ).tag(config=True)
    api_key_env = Unicode(
        "", help="Name of an environment variable to read the API key from, instead of KIMI_API_KEY / MOONSHOT_API_KEY."
    ).tag(config=True)
    model = Unicode(help=f"Model id to request (env KIMI_MODEL; default {DEFAULT_MODEL}).").tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature; unset by default because Kimi reasoning models reject all but their own."
    ).tag(config=True)
    max_tokens = Int(8192, help="Maximum tokens per model answer.").tag(config=True)
    thinking = Bool(True, help="Ask K2.5 to think before answering (reasoning is shown folded).").tag(config=True)
    reasoning_effort = Unicode(
        None, allow_none=True, help="reasoning_effort sent to reasoning models that accept it (low, medium, high)."
    ).tag(config=True)
    timeout = Float(120.0, help="Seconds to wait for the endpoint before giving up on a request.").tag(config=True)
    max_retries = Int(3, help="Retries for HTTP 429 and 5xx answers, with backoff honouring Retry-After.").tag(config=True)
    max_steps = Int(8, help="Maximum model turns (tool-call rounds) per request.").tag(config=True)
    context_budget = Int(24000, help="Token budget for notebook context in one request.").tag(config=True)
    redact_secrets = Bool(True, help="Mask API keys, tokens and passwords found in context before it is sent.").tag(
        config=True
    )
    scripted_script = Unicode(
        "",
        help="Path of a scripted-server script (JSON). When set, or when no API key and no endpoint are configured, "
        "kimi-nb answers with its offline scripted Kimi engine instead of a real model (env KIMI_SCRIPTED).",
    ).tag(config=True)
    memory_dir = Unicode(help="Folder of the persistent memory store (default: <jupyter data dir>/kimi_nb/memory).").tag(
        config=True
    )

    @default("base_url")
    def _default_base_url(self) -> str:
        return os.environ.get("KIMI_BASE_URL", "")

    @default("api_key")
    def _default_api_key(self) -> str:
        names = (self.api_key_env,) if self.api_key_env else API_KEY_ENV_VARS
        return next((os.environ[n] for n in names if os.environ.get(n)), "")

    @default("model")
    def _default_model(self) -> str:
        return os.environ.get("KIMI_MODEL", DEFAULT_MODEL)

    @default("scripted_script")
    def _default_scripted(self) -> str:
        return os.environ.get("KIMI_SCRIPTED", "")

    @default("memory_dir")
    def _default_memory_dir(self) -> str:
        from jupyter_core.paths import jupyter_data_dir

        return os.path.join(jupyter_data_dir(), "kimi_nb", "memory")

    @validate("base_url")
    def _check_base_url(self, proposal: Any) -> str:
        url = proposal["value"].strip()
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {url!r}")
        return url.rstrip("/")

    @validate("temperature")
    def _check_temperature(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and not 0.0 <= value <= 2.0:
            raise ConfigError(f"temperature must be between 0 and 2, got {value}")
        return value

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to: the configured one or Moonshot's hosted API."""
        return self.base_url or DEFAULT_BASE_URL

    @property
    def offline(self) -> bool:
        """True when kimi-nb should use its offline scripted engine: a script is configured, or nothing is."""
        return bool(self.scripted_script) or (not self.base_url and not self.api_key)

    def describe(self) -> dict[str, Any]:
        """The effective settings for display, with the key masked."""
        shown = {name: getattr(self, name) for name in self.trait_names() if self.trait_metadata(name, "config")}
        shown["api_key"] = mask_secret(self.api_key)
        shown["endpoint"] = "offline scripted engine" if self.offline else self.endpoint
        return shown

    def __repr__(self) -> str:
        return f"KimiNB(endpoint={self.endpoint!r}, model={self.model!r}, api_key={mask_secret(self.api_key)})"


def load_settings(config: Any = None, **overrides: Any) -> KimiNB:
    """Settings from a traitlets Config (or the Jupyter config files when None), then keyword overrides.

    Raises ConfigError with a one-line message for invalid values.
    """
    if config is None:
        config = _jupyter_config_files()
    try:
        settings = KimiNB(config=config)
        for name, value in overrides.items():
            if value is not None:
                setattr(settings, name, value)
    except ConfigError:
        raise
    except Exception as exc:  # traitlets TraitError: wrong type in a config file
        raise ConfigError(f"invalid kimi-nb setting: {exc}") from None
    return settings


def _jupyter_config_files() -> Any:
    """KimiNB sections of jupyter_kimi_nb_config.{py,json} in the Jupyter config path."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config import Config
    from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

    merged = Config()
    for directory in reversed(jupyter_config_path()):
        for loader_cls, name in ((JSONFileConfigLoader, "jupyter_kimi_nb_config.json"),
                                 (PyFileConfigLoader, "jupyter_kimi_nb_config.py")):
            if os.path.isfile(os.path.join(directory, name)):
                try:
                    merged.merge(loader_cls(name, path=directory).load_config())
                except Exception as exc:
                    raise ConfigError(f"cannot read {os.path.join(directory, name)}: {exc}") from None
    return merged
