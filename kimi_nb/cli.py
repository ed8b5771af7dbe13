"""The `kimi-nb` command: subcommands are thin; each maps to one library function and errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

#: subcommand -> module providing ``add_arguments(parser)`` and ``run(args) -> int``
SUBCOMMANDS = {
    "repair": ("kimi_nb.repair_command", "Execute notebooks and repair failing cells with Kimi."),
    "scripted-server": ("kimi_nb.testing.command", "Serve a scripted Kimi-protocol endpoint for tests and demos."),
}


def build_parser() -> argparse.ArgumentParser:
    from kimi_nb import __version__

    parser = argparse.ArgumentParser(prog="kimi-nb", description="Kimi K2.5 inside Jupyter.")
    parser.add_argument("--version", action="version", version=f"kimi-nb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sub_parser)
        sub_parser.set_defaults(module=module)
    return parser


def _skip_iri_grammar() -> None:
    """Skip a 1.4 s import no notebook needs.

    nbformat validates with jsonschema, which compiles an RFC 3987 grammar with lark at import when the optional
    ``rfc3987_syntax`` is installed (Jupyter's own dependencies install it), only to check the "iri" string
    format, which no notebook schema uses. This process never runs user code (kernels are separate processes),
    so hiding that module here changes nothing but the start-up time of every ``kimi-nb`` command.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "import fails"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failures found, 2 usage or configuration error)."""
    from kimi_nb.errors import KimiError

    _skip_iri_grammar()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return importlib.import_module(args.module).run(args)
    except KimiError as exc:
        print(f"kimi-nb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kimi-nb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
