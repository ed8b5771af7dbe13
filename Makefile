# The two commands of README.md: `make lab` (the main job) and `make test` (the whole suite).
# Both do all the set-up on a fresh machine: Python packages, the labextension build (node + the npm
# registry), and Debian's chromium for the browser tests.
PY ?= python3
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
PORT ?= 8888
# jlpm (JupyterLab's bundled yarn) sits beside the interpreter, which may be a venv that is not on PATH
JLPM = $(shell $(PY) -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "jlpm"))')

.PHONY: install labextension check-install chromium lab test bench

# A link left by an earlier `labextension develop` (maybe of another checkout) would make pip uninstall the old
# install through it, and fail on the files that build no longer has: drop the link first; develop restores it.
install:
	@link="$$($(PY) -c 'import sys; print(sys.prefix)')/share/jupyter/labextensions/kimi-nb"; \
	  if [ -L "$$link" ]; then rm "$$link"; fi
	$(PY) -m pip install --quiet -e ".[test]"
	$(MAKE) labextension
	$(PY) -m jupyter labextension develop --overwrite .
	$(PY) -m jupyter server extension enable --sys-prefix kimi_nb >/dev/null
	$(MAKE) check-install

# pip skips the npm build when a build already exists; rebuild so a stale bundle is never tested.
labextension:
	cd labextension && $(JLPM) install --immutable >/dev/null && $(JLPM) build >/dev/null

check-install:
	@$(PY) -m jupyter server extension list 2>&1 | grep -ie "kimi_nb.*OK" >/dev/null \
	  || { echo "kimi_nb server extension is not enabled"; exit 1; }
	@$(PY) -m jupyter labextension list 2>&1 | grep -ie "kimi-nb.*enabled.*OK" >/dev/null \
	  || { echo "kimi-nb labextension is not installed"; exit 1; }
	@echo "kimi-nb: server extension and labextension installed"

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

lab: install
	$(PY) -m jupyterlab --notebook-dir=notebooks --port=$(PORT) $(ROOT_FLAG)

test: install chromium
	$(PY) -m pytest

bench: install
	$(PY) -m bench
