"""VLLMLauncher: run `vllm serve` for K2.5 as a child process group, wait for /health, keep its log, stop it.

The command is ``vllm serve MODEL --tool-call-parser kimi_k2 --reasoning-parser kimi_k2 --enable-auto-tool-choice
--trust-remote-code --tensor-parallel-size N --host H --port P [extra args]``. With ``ssh_host`` it runs on that
host through ``ssh -tt -L P:H:P HOST``: vLLM binds to H on the remote side (loopback by default, nothing exposed)
and the forwarded port makes it reachable here at ``http://127.0.0.1:P/v1``; closing ssh hangs up the remote
server. The process runs in its own session, so ``stop()`` (also called at interpreter exit) ends the whole group:
SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kimi_nb.errors import LauncherError

if TYPE_CHECKING:
    from kimi_nb.config import KimiNB
    from kimi_nb.engine import RemoteEngine

__all__ = ["KIMI_PARSER_ARGS", "VLLMLauncher"]

#: What vLLM needs to speak Kimi's protocol (tool calls and reasoning as structured fields).
KIMI_PARSER_ARGS = ("--tool-call-parser", "kimi_k2", "--reasoning-parser", "kimi_k2", "--enable-auto-tool-choice",
                    "--trust-remote-code")
INSTALL_HINT = 'install vLLM with pip install "kimi-nb[vllm]"'


class VLLMLauncher:
    """One vLLM server for ``model``. ``executable`` is a program name or an argv prefix (e.g. a stand-in)."""

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel: int = 1,
        host: str = "127.0.0.1",
        port: int | None = None,
        ssh_host: str | None = None,
        extra_args: Sequence[str] = (),
        executable: str | Sequence[str] = "vllm",
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model
        self.tensor_parallel = tensor_parallel
        self.host = host
        self.ssh_host = ssh_host
        self.port = port or (8000 if ssh_host else _free_port())
        self.extra_args = tuple(extra_args)
        self.executable = (executable,) if isinstance(executable, str) else tuple(executable)
        self.log_path = Path(log_path) if log_path else _new_log_path()
        self.process: subprocess.Popen[bytes] | None = None

    # -- what runs -------------------------------------------------------------------------------------------------
    @property
    def serve_command(self) -> list[str]:
        """The ``vllm serve`` argv, as run on the serving host."""
        return [*self.executable, "serve", self.model, *KIMI_PARSER_ARGS,
                "--tensor-parallel-size", str(self.tensor_parallel), "--host", self.host, "--port", str(self.port),
                *self.extra_args]

    @property
    def command(self) -> list[str]:
        """The argv started here: the serve command, behind ``ssh`` for a remote host."""
        if not self.ssh_host:
            return self.serve_command
        return ["ssh", "-tt", "-o", "ExitOnForwardFailure=yes", "-L", f"{self.port}:{self.host}:{self.port}",
                self.ssh_host, shlex.join(self.serve_command)]

    @property
    def url(self) -> str:
        """Where the server answers from here (``http://HOST:PORT``)."""
        host = "127.0.0.1" if self.ssh_host or self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def served_model(self) -> str:
        """The model id requests must name (``--served-model-name`` if given, else the model)."""
        args = list(self.extra_args)
        if "--served-model-name" in args[:-1]:
            return args[args.index("--served-model-name") + 1]
        return self.model

    def describe(self) -> str:
        """One line: model, URL, state and log file."""
        if self.process is None:
            state = "not started"
        elif self.running:
            state = f"running, pid {self.process.pid}"
        else:
            state = f"exited with code {self.process.returncode}"
        where = f" on {self.ssh_host}" if self.ssh_host else ""
        return f"{self.model}{where} at {self.base_url} ({state}; log {self.log_path})"

    def __repr__(self) -> str:
        return f"VLLMLauncher({self.describe()})"

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> VLLMLauncher:
        """Start the server (returns at once; see ``wait_healthy``)."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
            except FileNotFoundError:
                raise LauncherError(f"cannot start {self.command[0]!r}: not found — {INSTALL_HINT} "
                                    f"(or pass the vllm executable)") from None
            except OSError as exc:
                raise LauncherError(f"cannot start {self.command[0]!r}: {exc.strerror or exc}") from None
        atexit.register(self.stop)
        return self

    def wait_healthy(
        self,
        timeout: float = 1800.0,
        *,
        progress: Callable[[str], None] | None = None,
        interval: float = 1.0,
    ) -> None:
        """Block until ``/health`` answers 200; ``progress`` gets a one-line status (elapsed time and the last
        log line) after each unsuccessful poll.

        Raises LauncherError (one line, with the last log line) if the process exits or ``timeout`` passes;
        on timeout the server keeps running (call ``stop()`` or wait again).
        """
        started = time.monotonic()
        while not self._poll(started, timeout, _healthy(f"{self.url}/health")):
            if progress is not None:
                progress(self._progress_line(started))
            time.sleep(min(interval, max(0.0, timeout - (time.monotonic() - started))))

    async def wait_healthy_async(
        self,
        timeout: float = 1800.0,
        *,
        progress: Callable[[str], None] | None = None,
        interval: float = 1.0,
    ) -> None:
        """``wait_healthy`` for async callers: polls without blocking the event loop."""
        import anyio

        started = time.monotonic()
        url = f"{self.url}/health"
        while not self._poll(started, timeout, await anyio.to_thread.run_sync(_healthy, url)):
            if progress is not None:
                progress(self._progress_line(started))
            await anyio.sleep(min(interval, max(0.0, timeout - (time.monotonic() - started))))

    def _poll(self, started: float, timeout: float, healthy: bool) -> bool:
        """True once healthy; raises LauncherError when the process died or the time is up."""
        if self.process is None:
            raise LauncherError("the vLLM server was not started (call start() first)")
        if healthy:
            return True
        code = self.process.poll()
        if code is not None:
            raise LauncherError(f"vllm exited with code {code} before becoming healthy; "
                                f"last log line: {self._last_line()}; log: {self.log_path}")
        if time.monotonic() - started >= timeout:
            raise LauncherError(f"vllm at {self.url} not healthy after {timeout:g} s (still running); "
                                f"last log line: {self._last_line()}; log: {self.log_path}")
        return False

    def _progress_line(self, started: float) -> str:
        return f"waiting for vLLM ({time.monotonic() - started:.0f} s): {self._last_line()}"

    def stop(self, timeout: float = 10.0) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        atexit.unregister(self.stop)
        process = self.process
        if process is None:
            return
        group = process.pid  # start_new_session: the group id is the leader's pid
        _signal_group(group, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            process.wait()
        _signal_group(group, signal.SIGKILL)  # workers that outlived the leader

    def __enter__(self) -> VLLMLauncher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- log and engine ------------------------------------------------------------------------------------------------
    def tail_log(self, n: int = 20) -> list[str]:
        """The last ``n`` lines of the server's log."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return [line.rstrip("\n") for line in deque(log, maxlen=n)]
        except OSError:
            return []

    def engine(self, settings: KimiNB | None = None) -> RemoteEngine:
        """A RemoteEngine for this server (options from ``settings``; the key only when ``--api-key`` is set)."""
        from kimi_nb.engine import RemoteEngine

        if settings is None:
            return RemoteEngine(self.base_url, model=self.served_model)
        api_key = settings.api_key if "--api-key" in self.extra_args else ""
        return RemoteEngine(self.base_url, api_key=api_key, model=self.served_model, timeout=settings.timeout,
                            max_retries=settings.max_retries, temperature=settings.temperature,
                            thinking=settings.thinking, reasoning_effort=settings.reasoning_effort,
                            max_tokens=settings.max_tokens)

    def _last_line(self) -> str:
        lines = [line for line in self.tail_log(20) if line.strip()]
        return lines[-1].strip() if lines else "(empty log)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _new_log_path() -> Path:
    handle, path = tempfile.mkstemp(prefix="kimi-nb-vllm-", suffix=".log")
    os.close(handle)
    return Path(path)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass
