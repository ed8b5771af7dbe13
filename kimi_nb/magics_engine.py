"""``%kimi engine status | use | launch | stop``: which model endpoint the session's magics talk to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

__all__ = ["engine_command"]


def _parsers() -> dict[str, MagicArgumentParser]:
    status = MagicArgumentParser(prog="%kimi engine status", description="Show the endpoint and model in use.")
    stop = MagicArgumentParser(prog="%kimi engine stop", description="Stop the vLLM server this kernel launched.")
    use = MagicArgumentParser(prog="%kimi engine use", description="Send requests to an OpenAI-compatible URL.")
    use.add_argument("url", help="Base URL, e.g. http://gpu-host:8000/v1")
    use.add_argument("--model", default=None, help="Model id served there.")
    launch = MagicArgumentParser(prog="%kimi engine launch",
                                 description="Start vLLM serving MODEL and use it (vLLM args after --).")
    launch.add_argument("model", help="Model to serve, e.g. moonshotai/Kimi-K2.5")
    launch.add_argument("--tp", type=int, default=None, help="Tensor-parallel size (GPUs).")
    launch.add_argument("--port", type=int, default=None, help="Port to serve on.")
    launch.add_argument("--host", default=None, help="Run vLLM on this ssh host instead of this machine.")
    launch.add_argument("--vllm", default=None, help="The vllm command, if not `vllm` on PATH (e.g. a venv's).")
    return {"status": status, "stop": stop, "use": use, "launch": launch}


def engine_command(session: Any, words: list[str], *, say: Callable[[str], None]) -> None:
    """Run one ``%kimi engine`` subcommand. Bad arguments raise UsageError; failures raise KimiError."""
    parsers = _parsers()
    if not words or words[0] not in parsers:
        raise UsageError("usage: %kimi engine status | stop | use URL [--model M] | "
                         "launch MODEL [--tp N] [--port P] [--host SSH_HOST] [-- VLLM ARGS]")
    action, rest = words[0], words[1:]
    extra: list[str] = []
    if action == "launch" and "--" in rest:
        rest, extra = rest[:rest.index("--")], rest[rest.index("--") + 1:]
    args = parsers[action].parse_args(rest)
    if action == "status":
        say(status_line(session))
    elif action == "use":
        session.use_endpoint(args.url, args.model)
        say(f"Using {status_line(session)}")
    elif action == "stop":
        if session.launcher is None:
            say("No vLLM server was launched from this kernel.")
        else:
            session.close()
            say("Stopped the vLLM server.")
    else:
        launch(session, args, extra, say=say)


def status_line(session: Any) -> str:
    """The endpoint, model and where the key comes from (masked), plus a launched server's state."""
    settings = session.settings
    where = "offline scripted engine (set KIMI_BASE_URL / KIMI_API_KEY, or %kimi engine use URL)" \
        if settings.offline else settings.endpoint
    line = f"{where}, model {settings.model}, key {settings.describe()['api_key']}"
    if session.launcher is not None:
        line += f"; launched vLLM: {session.launcher.describe()}"
    return line


def launch(session: Any, args: Any, extra: list[str], *, say: Callable[[str], None]) -> None:
    """Start vLLM with the launcher, wait until it is healthy (one progress line updated in place), then use it."""
    import shlex

    from kimi_nb.launcher import VLLMLauncher
    from kimi_nb.magics_display import StatusLine

    if session.launcher is not None:
        raise UsageError("a vLLM server is already running; %kimi engine stop first")
    options = {name: value for name, value in (("tensor_parallel", args.tp), ("port", args.port),
                                               ("ssh_host", args.host)) if value is not None}
    if args.vllm:
        options["executable"] = shlex.split(args.vllm)
    launcher = VLLMLauncher(args.model, extra_args=list(extra), **options)
    progress = StatusLine(live=session.live)
    progress.show(f"Starting vLLM for {args.model}…")
    session.launcher = launcher.start()
    try:
        launcher.wait_healthy(progress=progress.show)
    except BaseException:
        session.close()
        progress.show(f"vLLM for {args.model} did not start; stopped it")
        raise
    # a local server only gets the key when it was started with --api-key
    session.use_endpoint(launcher.base_url, launcher.served_model,
                         api_key=None if "--api-key" in extra else "")
    progress.show(f"Ready: {status_line(session)}")
