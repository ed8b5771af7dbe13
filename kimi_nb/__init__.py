"""kimi-nb: Kimi K2.5 inside Jupyter. Entry points only; nothing heavy is imported here."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext kimi_nb`: register the %%kimi / %kimi magics."""
    from kimi_nb.magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext kimi_nb`: remove the magics again."""
    from kimi_nb.magics import unregister

    unregister(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "kimi-nb"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from kimi_nb.server.app import KimiExtension

    return [{"module": "kimi_nb", "app": KimiExtension}]
