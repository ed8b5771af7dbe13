"""Binder files: environment.yml and postBuild are valid, and the project wheel installs into a fresh venv.

Installing all of JupyterLab into a fresh venv takes over 3 minutes here, so the full Binder build is not
repeated: the wheel goes into a fresh venv without dependencies (the labextension and the server-extension
enable file must land where Jupyter looks), and pip resolves Binder's requirements with the wheel in a dry run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
TOUR = "notebooks/01_quickstart.ipynb"


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((BINDER / "environment.yml").read_text())


def pip_requirements(environment: dict) -> list[str]:
    return next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project wheel (with the prebuilt labextension), built from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(ROOT)], check=True, cwd=out, capture_output=True)
    return next(out.glob("kimi_nb-*.whl"))


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv that cannot see this interpreter's packages."""
    where = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(where)
    return where


def test_environment_has_python_node_and_a_jupyterlab_the_extension_was_built_for(environment: dict) -> None:
    assert "conda-forge" in environment["channels"]
    conda = [item for item in environment["dependencies"] if isinstance(item, str)]
    assert any(re.fullmatch(r"python=3\.1[0-9]", item) for item in conda)
    assert any(item.startswith("nodejs") for item in conda), "postBuild builds the labextension with node"
    assert "pip" in conda
    requirements = {Requirement(line).name: Requirement(line) for line in pip_requirements(environment)}
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    core = package["devDependencies"]["@jupyterlab/core-meta"].lstrip("~^")
    assert requirements["jupyterlab"].specifier.contains(core), "Binder's JupyterLab must match the build's"
    assert "matplotlib" in requirements, "03_plot_to_code.ipynb draws a figure"


def test_post_build_is_an_executable_strict_bash_script_with_valid_commands() -> None:
    script = BINDER / "postBuild"
    assert os.access(script, os.X_OK)
    mode = subprocess.run(["git", "ls-files", "--stage", "binder/postBuild"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert mode.startswith("100755"), "postBuild must be committed executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    commands = [shlex.split(line.split("|")[0]) for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "set "))]
    assert ["python", "-m", "pip", "install", "--no-cache-dir", "."] in commands
    subcommands: dict[tuple[str, ...], set[str]] = {}
    for words in commands:
        if words[0] == "jupyter":
            subcommands.setdefault(tuple(words[1:3]), set()).update(w for w in words if w.startswith("--"))
    for subcommand, options in subcommands.items():  # every jupyter subcommand and option it uses exists
        helptext = subprocess.run([sys.executable, "-m", "jupyter", *subcommand, "--help"], capture_output=True,
                                  text=True, check=True).stdout
        assert all(option in helptext for option in options), subcommand


def test_binder_badge_opens_the_tour() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\(https://mybinder\.org/v2/gh/[^)\s]+\)", readme)
    assert links, "README needs the Binder badge"
    urlpath = re.search(r"urlpath=(?:%2F)?/?lab/tree/([^)&\s]+)", links[0])
    assert urlpath and urlpath.group(1) == TOUR and (ROOT / TOUR).is_file()


def test_wheel_installs_into_a_fresh_venv_with_the_extensions_in_place(wheel: Path, fresh_venv: Path) -> None:
    python = fresh_venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    labextension = fresh_venv / "share" / "jupyter" / "labextensions" / "kimi-nb"
    assert json.loads((labextension / "package.json").read_text())["name"] == "kimi-nb"
    assert list((labextension / "static").glob("remoteEntry.*.js"))
    assert json.loads((labextension / "install.json").read_text())["packageName"] == "kimi-nb"
    enable = json.loads((fresh_venv / "etc" / "jupyter" / "jupyter_server_config.d" / "kimi_nb.json").read_text())
    assert enable == {"ServerApp": {"jpserver_extensions": {"kimi_nb": True}}}
    where = subprocess.run([str(python), "-c", "import kimi_nb; print(kimi_nb.__file__)"], capture_output=True,
                           text=True, check=True, cwd=fresh_venv).stdout.strip()
    assert Path(where).is_relative_to(fresh_venv)


def test_binder_requirements_and_the_wheel_resolve_together(environment: dict, wheel: Path,
                                                            fresh_venv: Path) -> None:
    python = fresh_venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                           "--report", "-", *pip_requirements(environment), str(wheel)],
                          capture_output=True, text=True, check=True)
    names = {item["metadata"]["name"].lower() for item in json.loads(done.stdout)["install"]}
    assert {"kimi-nb", "jupyterlab", "openai", "nbclient", "ipywidgets", "matplotlib"} <= names
