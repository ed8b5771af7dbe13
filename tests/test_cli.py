"""The `kimi-nb` entry point: subcommand dispatch, exit codes, and what the CLI process skips at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kimi_nb import __version__
from kimi_nb.cli import main


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "repair" in out and "scripted-server" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kimi-nb {__version__}"


def test_cli_process_skips_the_iri_grammar_but_still_validates_notebooks() -> None:
    probe = (
        "import sys\n"
        "from kimi_nb.cli import _skip_iri_grammar\n"
        "_skip_iri_grammar()\n"
        "import nbformat\n"
        "assert sys.modules['rfc3987_syntax'] is None\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')])\n"
        "nbformat.validate(nb)\n"
        "nb.cells[0]['cell_type'] = 'bogus'\n"
        "try:\n"
        "    nbformat.validate(nb)\n"
        "except nbformat.ValidationError:\n"
        "    print('invalid notebook rejected')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "invalid notebook rejected"
