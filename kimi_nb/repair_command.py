"""`kimi-nb repair PATH...`: execute notebooks, repair failing cells with Kimi, write the results and a report.

Thin front door: options become ``RepairOptions`` and an engine; ``repair.repair_notebook`` does the work for
each notebook, ``--jobs`` of them at once; this module writes outputs, shows progress and the summary, and
maps the outcome to an exit code (0 every notebook runs, 1 some still fail, 2 usage error, 130 interrupted).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kimi_nb.errors import ConfigError, KimiError

if TYPE_CHECKING:
    from rich.console import Console

    from kimi_nb.config import KimiNB
    from kimi_nb.engine import Engine
    from kimi_nb.repair import RepairOptions, Slots
    from kimi_nb.repair_output import OutputPlan, Source
    from kimi_nb.repair_progress import Display
    from kimi_nb.repair_report import Outcome

__all__ = ["add_arguments", "run"]


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="notebooks, or folders searched recursively for *.ipynb")
    out = parser.add_argument_group("output (default: NAME.repaired.ipynb next to each repaired notebook)")
    where = out.add_mutually_exclusive_group()
    where.add_argument("--in-place", action="store_true",
                       help="overwrite repaired notebooks atomically, keeping NAME.ipynb.bak")
    where.add_argument("-o", "--output-dir", metavar="DIR", help="write repaired notebooks under DIR, keeping "
                       "their paths relative to the folder argument they were found in")
    where.add_argument("--diff", action="store_true", help="print a unified diff of the changed cells instead "
                       "of writing anything")
    where.add_argument("--check", action="store_true", help="only execute and report (exit 1 if any notebook "
                       "fails); no model is contacted")
    out.add_argument("--no-backup", action="store_true", help="with --in-place, keep no .bak copy")
    out.add_argument("--report", metavar="FILE.json", help="write a JSON report: status, attempts, diffs, "
                     "tokens and durations per notebook")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the summary")
    run_group = parser.add_argument_group("execution")
    run_group.add_argument("--max-attempts", type=_positive(int), metavar="N",
                           help="model rounds per notebook (default 3)")
    run_group.add_argument("--restart", action="store_true", help="after each fix, re-run from the top in a "
                           "fresh kernel (default: re-run from the edited cell in the same kernel)")
    run_group.add_argument("--timeout", type=_positive(float), metavar="SECONDS",
                           help="time limit per cell (default 60)")
    run_group.add_argument("--kernel", metavar="NAME", help="kernel to use instead of each notebook's kernelspec")
    run_group.add_argument("-j", "--jobs", type=_positive(int), default=1, metavar="N",
                           help="notebooks repaired at once, each in its own kernel (default 1)")
    model = parser.add_argument_group("model (the API key comes from the environment only)")
    model.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint (default: KIMI_BASE_URL or "
                       "Moonshot's API)")
    model.add_argument("--model", metavar="ID", help="model id (default: KIMI_MODEL or kimi-k2.5)")
    model.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the API key "
                       "(default: KIMI_API_KEY, then MOONSHOT_API_KEY)")
    model.add_argument("--engine", metavar="scripted:SCRIPT.json", help="answer from a scripted-server script "
                       "instead of a model (offline runs and tests)")
    model.add_argument("--launch-vllm", metavar="MODEL", help="start a local vLLM server for MODEL around the run")


def run(args: argparse.Namespace) -> int:
    """Repair every notebook named by ``args``; returns the exit code."""
    import anyio
    from rich.console import Console

    from kimi_nb.repair import RepairOptions
    from kimi_nb.repair_output import OutputPlan, find_notebooks

    if args.no_backup and not args.in_place:
        raise ConfigError("--no-backup only makes sense with --in-place")
    sources = list(find_notebooks(args.paths))
    missing = [s.path for s in sources if not os.path.exists(s.path)]
    if missing:
        raise ConfigError(f"no such file or folder: {missing[0]}")
    if not sources:
        raise ConfigError(f"no notebooks (*.ipynb) found in {' '.join(args.paths)}")
    settings = _settings(args)
    given = {"max_attempts": args.max_attempts, "timeout": args.timeout}
    options = RepairOptions(
        restart=args.restart, kernel_name=args.kernel, check_only=args.check, max_steps=settings.max_steps,
        max_tokens=settings.max_tokens, thinking=settings.thinking, context_budget=settings.context_budget,
        redact_secrets=settings.redact_secrets, **{name: value for name, value in given.items() if value is not None},
    )
    plan = OutputPlan(in_place=args.in_place, directory=args.output_dir, backup=not args.no_backup)
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # logs: one table row per line where possible
    batch = _Batch(sources, options, plan, write=not (args.diff or args.check), console=console)
    started = time.monotonic()
    interrupted = False
    try:
        anyio.run(batch.run, args, settings)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if batch.display is not None:
            batch.display.close()
    outcomes = batch.outcomes(interrupted)
    if args.diff:
        _print_diffs(console, outcomes)
    from kimi_nb.repair_report import print_summary, report_json, write_report

    print_summary(console, outcomes)
    if args.report:
        write_report(args.report, report_json(outcomes, engine=batch.engine_line, interrupted=interrupted,
                                              seconds=time.monotonic() - started))
    if interrupted:
        print("kimi-nb: interrupted; no input file was changed by an unfinished notebook", file=sys.stderr)
        return 130
    return 0 if all(o.result.status in ("ok", "repaired") for o in outcomes) else 1


class _Batch:
    """The notebooks of one run, repaired ``jobs`` at a time; collects each one's outcome as it finishes."""

    def __init__(self, sources: list[Source], options: RepairOptions, plan: OutputPlan, *, write: bool,
                 console: Console) -> None:
        self.sources = sources
        self.options = options
        self.plan = plan
        self.write = write
        self.console = console
        self.display: Display | None = None
        self.engine_line: str | None = None
        self.done: dict[str, Outcome] = {}
        self.last_status: dict[str, str] = {}

    async def run(self, args: argparse.Namespace, settings: KimiNB) -> None:
        import anyio

        from kimi_nb.repair import Slots
        from kimi_nb.repair_progress import open_display

        async with _open_engine(args, settings) as engine:
            self.engine_line = engine.describe() if engine is not None else None
            self.display = open_display(self.console, [s.path for s in self.sources], quiet=args.quiet)
            slots = Slots.for_jobs(args.jobs)
            async with anyio.create_task_group() as group:
                for source in self.sources:
                    group.start_soon(self._one, source, engine, slots)

    async def _one(self, source: Source, engine: Engine | None, slots: Slots) -> None:
        from kimi_nb.repair import RepairResult, repair_notebook
        from kimi_nb.repair_report import Outcome

        assert self.display is not None
        display = self.display

        def status(text: str) -> None:
            self.last_status[source.path] = text
            display.update(source.path, text)

        try:
            result = await repair_notebook(source.path, engine, self.options, on_status=status, slots=slots)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one notebook, not the run
            result = RepairResult(source.path, "error", f"unexpected {type(exc).__name__}: {exc}")
        written = None
        if self.write and result.status == "repaired" and result.notebook is not None:
            try:
                written = self.plan.write(source, result.notebook)
            except KimiError as exc:
                result = replace(result, status="error", reason=f"repaired but not written: {exc}")
        self.done[source.path] = Outcome(result, written)
        display.finish(result, written)

    def outcomes(self, interrupted: bool) -> list[Outcome]:
        """Every notebook's outcome in command-line order; after Ctrl+C the unfinished ones say so."""
        from kimi_nb.repair import RepairResult
        from kimi_nb.repair_report import Outcome

        outcomes = []
        for source in self.sources:
            if source.path in self.done:
                outcomes.append(self.done[source.path])
            elif interrupted:
                last = self.last_status.get(source.path)
                reason = f"interrupted while {last}" if last else "interrupted before it ran"
                outcomes.append(Outcome(RepairResult(source.path, "error", reason)))
        return outcomes


def _settings(args: argparse.Namespace) -> KimiNB:
    """kimi-nb settings with the engine options of the command line applied (raises ConfigError)."""
    from kimi_nb.config import load_settings

    if args.api_key_env and not os.environ.get(args.api_key_env):
        raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    script = None
    if args.engine:
        kind, _, script = args.engine.partition(":")
        if kind != "scripted" or not script:
            raise ConfigError(f"--engine takes scripted:SCRIPT.json, got {args.engine!r}")
        if not os.path.isfile(script):
            raise ConfigError(f"--engine: no such script file {script}")
    return load_settings(base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
                         scripted_script=script)


@asynccontextmanager
async def _open_engine(args: argparse.Namespace, settings: KimiNB) -> AsyncIterator[Engine | None]:
    """The engine for the run (None with --check), closed afterwards; --launch-vllm starts and stops vLLM."""
    if args.check:
        yield None
        return
    from kimi_nb.engine import open_engine

    if args.launch_vllm:
        async with _launched_vllm(args.launch_vllm, quiet=args.quiet) as launcher:
            engine = launcher.engine(settings)
            try:
                yield engine
            finally:
                await engine.aclose()
        return
    if settings.offline and not settings.scripted_script:
        raise ConfigError("no model endpoint configured: set KIMI_API_KEY (Moonshot's API) or pass --base-url, "
                          "--launch-vllm MODEL or --engine scripted:SCRIPT.json (or use --check)")
    engine = open_engine(settings)
    try:
        yield engine
    finally:
        await engine.aclose()


@asynccontextmanager
async def _launched_vllm(model: str, *, quiet: bool) -> AsyncIterator[Any]:
    """A vLLM server for ``model`` while the run lasts; its whole process group is stopped afterwards."""
    import anyio

    from kimi_nb.launcher import VLLMLauncher

    say = None if quiet else (lambda line: print(f"kimi-nb: {line}", file=sys.stderr, flush=True))
    launcher = VLLMLauncher(model).start()
    try:
        await launcher.wait_healthy_async(progress=say)
        yield launcher
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(launcher.stop)


def _print_diffs(console: Console, outcomes: list[Outcome]) -> None:
    """The changed cells of every notebook the model edited, coloured on a terminal."""
    from rich.text import Text

    from kimi_nb.repair_output import cell_diff

    styles = {"+": "green", "-": "red", "@": "cyan"}
    for outcome in outcomes:
        result = outcome.result
        if not result.changed or result.notebook is None or result.original is None:
            continue
        diff = cell_diff(result.path, result.original, result.notebook.snapshot())
        for line in diff.splitlines():
            head = line[:3] if line.startswith(("+++", "---")) else line[:1]
            style = "bold" if head in ("+++", "---") else styles.get(head, "")
            console.print(Text(line, style=style), soft_wrap=True)
