"""%%kimi and %kimi: parse the user's line, interpolate the prompt, hand the work to the session. Loads fast.

Only IPython's own magic machinery is imported when the extension loads; the engine, the agent, widgets and
the openai client are imported on first use.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser, argument, magic_arguments, parse_argstring
from IPython.utils.process import arg_split

from kimi_nb.errors import KimiError
from kimi_nb.kernel_notebook import KernelNotebook
from kimi_nb.magics_comm import LabBridge

__all__ = ["SUBCOMMANDS", "KimiMagics", "interpolate", "register", "unregister"]

SUBCOMMANDS = ("fix", "explain", "engine", "memory", "config")
_FIELD = re.compile(r"\{\{(\w+(?:\[-?\d+\])?)\}\}|\{([A-Za-z_]\w*)(?:\[(-?\d+)\])?\}")
_CELLS_SLICE = re.compile(r"(^|\s)(-c|--cells)\s+(-\d*:-?\d*)(?=\s|$)")


def interpolate(text: str, user_ns: dict[str, Any], notebook: KernelNotebook) -> str:
    """Replace ``{name}`` with ``str()`` of a user variable and ``{In[3]}`` / ``{Out[3]}`` / ``{Err[3]}`` with
    that cell's source, result repr or recorded error (negative indexes count back from the current cell).
    Unknown names are left as written; ``{{name}}`` gives a literal ``{name}``."""

    def field(match: re.Match[str]) -> str:
        if match.group(1):
            return "{" + match.group(1) + "}"
        name, index = match.group(2), match.group(3)
        if index is not None and name in ("In", "Out", "Err"):
            count = int(index) if int(index) > 0 else notebook.current + int(index)
            return _history_field(name, count, notebook)
        if index is None and name in user_ns:
            return str(user_ns[name])
        return match.group(0)

    return _FIELD.sub(field, text)


def _history_field(name: str, count: int, notebook: KernelNotebook) -> str:
    try:
        source = notebook.source(count)
    except KimiError as exc:
        raise UsageError(f"{{{name}[{count}]}}: {exc}") from None
    if name == "In":
        return source
    if name == "Out":
        text = notebook.output_text(count)
        if not text:
            raise UsageError(f"{{Out[{count}]}}: cell In[{count}] has no result")
        return text
    error = notebook.error(count)
    if error is None:
        raise UsageError(f"{{Err[{count}]}}: cell In[{count}] raised no error that kimi-nb recorded")
    return error.text()


def _parser(prog: str, *arguments: tuple[tuple[str, ...], dict[str, Any]], parents: tuple[Any, ...] = ()) -> Any:
    parser = MagicArgumentParser(prog=prog, parents=list(parents))
    for flags, options in arguments:
        parser.add_argument(*flags, **options)
    return parser


def _parse(parser: Any, words: list[str]) -> argparse.Namespace:
    return parser.parse_args(words)  # MagicArgumentParser raises UsageError with the usage line


@magics_class
class KimiMagics(Magics):
    """``%%kimi`` asks Kimi about the notebook; ``%kimi`` runs the subcommands (fix, explain, engine, ...)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.notebook = KernelNotebook(shell)
        self.bridge = LabBridge()
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            from kimi_nb.magics_session import KimiSession

            self._session = KimiSession(self.shell, self.notebook, self.bridge)
        return self._session

    @magic_arguments()
    @argument("-c", "--cells", default=None,
              help="Cells sent as context: a slice of the earlier cells (-3: the last three, :5) or ids "
                   "(In[3],In[5] or 3 5). Default: all earlier cells within the context budget.")
    @argument("--no-context", dest="context", action="store_false", help="Send the prompt alone, no notebook.")
    @argument("--image", action="store_true", help="Attach the last matplotlib figure as a PNG.")
    @argument("-m", "--model", default=None, help="Model id for this request.")
    @argument("-t", "--max-tokens", type=int, default=None, help="Maximum tokens of the answer.")
    @argument("--think", dest="thinking", action="store_true", default=None, help="Let Kimi think first.")
    @argument("--no-think", dest="thinking", action="store_false", help="Answer without thinking.")
    @argument("-f", "--format", choices=("markdown", "code", "explain"), default="markdown",
              help="markdown: the answer, rendered (default); code: its code block becomes a new cell below; "
                   "explain: prose only.")
    @cell_magic("kimi")
    def kimi_cell(self, line: str, cell: str) -> None:
        """Ask Kimi K2.5 about this notebook; the answer streams below.

        The cell body is the prompt. ``{name}`` is replaced by a variable's value, ``{In[3]}``, ``{Out[3]}``
        and ``{Err[3]}`` by that cell's source, result and error. Code Kimi writes arrives as a new cell
        below (never run for you); edits to existing cells are shown as diffs to Accept or Reject.
        Stop with the kernel's interrupt button.
        """
        args = parse_argstring(self.kimi_cell, _CELLS_SLICE.sub(r"\1\2=\3", line))
        if not cell.strip():
            raise UsageError("%%kimi needs a prompt in the cell body, e.g. %%kimi followed by: plot df by month")
        self._ask(self._ask_from(args, interpolate(cell, self.shell.user_ns, self.notebook)))

    @line_magic("kimi")
    def kimi_line(self, line: str) -> None:
        """Kimi subcommands, or a one-line question (``%kimi why is df empty?``).

        %kimi fix [options] [note]      propose a fixed version of the last failing cell (a diff)
        %kimi explain [options] [note]  explain the last error
        %kimi engine status | stop | use URL [--model M] | launch MODEL [--tp N] [--port P] [--host SSH_HOST] [-- VLLM ARGS]
        %kimi memory list | show KEY | forget KEY | clear
        %kimi config                    the effective settings (the API key masked)

        fix and explain take the %%kimi options (-m, -t, --think/--no-think, --image, -c, -f).
        """
        words = line.split(maxsplit=1)
        if not words:
            raise UsageError("usage: %kimi fix | explain | engine ... | memory ... | config | QUESTION (see %kimi?)")
        if words[0] not in SUBCOMMANDS:
            self._ask(self._ask_from(parse_argstring(self.kimi_cell, ""),
                                     interpolate(line, self.shell.user_ns, self.notebook)))
            return
        command, rest = words[0], _words(_CELLS_SLICE.sub(r"\1\2=\3", line.partition(words[0])[2]))
        self._guarded(getattr(self, f"_{command}"), rest)

    # -- subcommands -----------------------------------------------------------------------------------------
    def _fix(self, words: list[str], *, explain: bool = False) -> None:
        prog = "%kimi explain" if explain else "%kimi fix"
        args = _parse(_parser(prog, (("note",), {"nargs": "*", "help": "Anything to add to the request."}),
                              parents=(self.kimi_cell.parser,)), words)
        base = self._ask_from(args, interpolate(" ".join(args.note), self.shell.user_ns, self.notebook))
        self._ask(self.session.fix_request(explain=explain, ask=base))

    def _explain(self, words: list[str]) -> None:
        self._fix(words, explain=True)

    def _engine(self, words: list[str]) -> None:
        from kimi_nb.magics_engine import engine_command

        engine_command(self.session, words, say=self._say)

    def _memory(self, words: list[str]) -> None:
        args = _parse(_parser("%kimi memory", (("action",), {"choices": ("list", "show", "forget", "clear")}),
                              (("key",), {"nargs": "?"})), words)
        store = self.session.memory()
        if args.action in ("show", "forget") and not args.key:
            raise UsageError(f"%kimi memory {args.action} needs a KEY (see %kimi memory list)")
        if args.action == "list":
            memories = store.list()
            self._say("\n".join(f"{m.key}: {m.content}" for m in memories) or "No memories saved.")
        elif args.action == "show":
            memory = store.get(args.key)
            self._say(f"{memory.key} (updated {memory.updated_at}):\n{memory.content}")
        elif args.action == "forget":
            self._say(f"Forgot {store.delete(args.key).key}.")
        else:
            self._say(f"Forgot {store.clear()} memories.")

    def _config(self, words: list[str]) -> None:
        _parse(_parser("%kimi config"), words)
        shown = self.session.settings.describe()
        self._say("\n".join(f"{name} = {shown[name]!r}" for name in sorted(shown)))

    # -- plumbing --------------------------------------------------------------------------------------------
    def _ask_from(self, args: argparse.Namespace, prompt: str) -> Any:
        from kimi_nb.magics_session import Ask

        return Ask(prompt=prompt.strip(), cells=args.cells, context=args.context, image=args.image,
                   model=args.model, max_tokens=args.max_tokens, thinking=args.thinking, format=args.format)

    def _ask(self, ask: Any) -> None:
        self._guarded(self.session.ask, ask)

    def _guarded(self, action: Any, *args: Any) -> None:
        """Run ``action``; failures become one line in the output, never a traceback from inside kimi-nb."""
        try:
            action(*args)
        except UsageError:
            raise
        except KimiError as exc:
            self._say(f"kimi-nb: {exc}")
        except KeyboardInterrupt:
            self._say("kimi-nb: cancelled")
        except Exception as exc:  # noqa: BLE001 (a kimi-nb bug: still one line in the user's notebook)
            self._say(f"kimi-nb: internal error ({type(exc).__name__}: {exc}); please report it")

    def _say(self, message: str) -> None:
        from kimi_nb.magics_display import show_line

        show_line(message, live=self.session.live)


def _words(text: str) -> list[str]:
    """Shell-like words with quotes removed (``--vllm "python -m x"``); a lone apostrophe ("what's") keeps
    the text as typed."""
    try:
        return arg_split(text, posix=True)
    except ValueError:
        return arg_split(text, posix=False)


def register(ipython: Any) -> None:
    """Register the magics and start recording errors and figures (``%load_ext kimi_nb``)."""
    magics = KimiMagics(ipython)
    ipython.register_magics(magics)
    magics.notebook.attach()
    magics.bridge.register(ipython)


def unregister(ipython: Any) -> None:
    """Remove the magics, stop recording, stop a vLLM server the session launched (``%unload_ext kimi_nb``)."""
    magics = ipython.magics_manager.registry.pop(KimiMagics.__name__, None)
    if magics is None:
        return
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("kimi", None)
    magics.notebook.detach()
    magics.bridge.unregister()
    if magics._session is not None:
        magics._session.close()
