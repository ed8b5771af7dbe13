"""VLLMLauncher with the stand-in vllm executable: command line, health wait, crash, never healthy, stop."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import anyio
import pytest

from kimi_nb.errors import LauncherError
from kimi_nb.launcher import VLLMLauncher
from kimi_nb.protocol import TextDelta

FAKE_VLLM = [sys.executable, "-m", "kimi_nb.testing.fake_vllm"]


def launcher(tmp_path, *extra: str, **options) -> VLLMLauncher:
    return VLLMLauncher("moonshotai/Kimi-K2.5", executable=FAKE_VLLM, extra_args=extra,
                        log_path=tmp_path / "vllm.log", **options)


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for an absent reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_command_line() -> None:
    local = VLLMLauncher("moonshotai/Kimi-K2.5", tensor_parallel=8, port=8123, extra_args=["--max-model-len", "65536"])
    assert local.command == [
        "vllm", "serve", "moonshotai/Kimi-K2.5", "--tool-call-parser", "kimi_k2", "--reasoning-parser", "kimi_k2",
        "--enable-auto-tool-choice", "--trust-remote-code", "--tensor-parallel-size", "8",
        "--host", "127.0.0.1", "--port", "8123", "--max-model-len", "65536"]
    assert local.base_url == "http://127.0.0.1:8123/v1"
    remote = VLLMLauncher("moonshotai/Kimi-K2.5", ssh_host="me@gpu-box", tensor_parallel=8)
    assert remote.command[:6] == ["ssh", "-tt", "-o", "ExitOnForwardFailure=yes", "-L", "8000:127.0.0.1:8000"]
    assert remote.command[6] == "me@gpu-box"
    assert remote.command[7].startswith("vllm serve moonshotai/Kimi-K2.5 --tool-call-parser kimi_k2")
    assert remote.base_url == "http://127.0.0.1:8000/v1"


def test_missing_executable_suggests_the_extra(tmp_path) -> None:
    with pytest.raises(LauncherError, match=re.escape('not found — install vLLM with pip install "kimi-nb[vllm]"')):
        VLLMLauncher("m", executable="kimi-nb-no-such-vllm", log_path=tmp_path / "log").start()


@pytest.mark.anyio
async def test_launch_wait_healthy_talk_and_stop(tmp_path) -> None:
    server = launcher(tmp_path, "--workers", "2", "--startup-delay", "0.5")
    seen: list[str] = []
    with server:
        server.wait_healthy(timeout=60, progress=seen.append, interval=0.1)
        assert seen and seen[0].startswith("waiting for vLLM (")  # progress was reported while it was loading
        assert "running, pid" in server.describe()
        assert any("Starting vLLM API server" in line for line in server.tail_log())
        engine = server.engine()
        assert await engine.list_models() == ["moonshotai/Kimi-K2.5"]
        events = [e async for e in engine.stream([{"role": "user", "content": "hello"}])]
        await engine.aclose()
        assert "offline scripted engine" in "".join(e.text for e in events if isinstance(e, TextDelta))
        workers = [int(m) for m in re.findall(r"worker pid=(\d+)", "\n".join(server.tail_log()))]
        assert len(workers) == 2
    assert not server.running
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in [server.process.pid, *workers]) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    assert all(gone(pid) for pid in [server.process.pid, *workers])


@pytest.mark.anyio
async def test_crash_reports_the_last_log_line(tmp_path) -> None:
    server = launcher(tmp_path, "--crash").start()
    with pytest.raises(LauncherError) as info:
        await server.wait_healthy_async(timeout=60, interval=0.05)
    message = str(info.value)
    assert message.startswith("vllm exited with code 1 before becoming healthy; last log line: ")
    assert "No CUDA GPUs are available" in message and str(tmp_path / "vllm.log") in message
    server.stop()
    assert "exited with code 1" in server.describe()


def test_never_healthy_times_out_and_keeps_running_until_stopped(tmp_path) -> None:
    server = launcher(tmp_path, "--never-healthy").start()
    try:
        with pytest.raises(LauncherError, match=r"not healthy after 1\.5 s \(still running\)"):
            server.wait_healthy(timeout=1.5, interval=0.1)
        assert server.running
    finally:
        server.stop()
    assert not server.running


def test_script_through_the_environment_and_settings_engine(tmp_path, monkeypatch) -> None:
    from traitlets.config import Config

    from kimi_nb.config import load_settings
    from kimi_nb.sync import run_sync

    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [{"content": "from the script"}]}))
    monkeypatch.setenv("KIMI_FAKE_VLLM_SCRIPT", str(script))
    monkeypatch.setenv("KIMI_API_KEY", "sk-not-for-vllm")
    with launcher(tmp_path, "--served-model-name", "kimi") as server:
        server.wait_healthy(timeout=60, interval=0.1)
        engine = server.engine(load_settings(Config(), max_tokens=100))
        assert engine.model == "kimi" and "api_key=not set" in repr(engine)

        async def ask() -> str:
            try:
                return [e async for e in engine.stream([{"role": "user", "content": "hi"}])][-1].message.content
            finally:
                await engine.aclose()

        assert run_sync(ask) == "from the script"


@pytest.mark.anyio
async def test_wait_healthy_async(tmp_path) -> None:
    with launcher(tmp_path, "--startup-delay", "0.3") as server:
        lines: list[str] = []
        await server.wait_healthy_async(timeout=60, progress=lines.append, interval=0.1)
        assert lines and "Starting vLLM API server" in lines[-1]
        await server.wait_healthy_async(timeout=0)  # already healthy: returns at once
