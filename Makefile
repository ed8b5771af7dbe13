# The two commands of README.md: `make lab` (the main job) and `make test` (the whole suite).
# Both do all the set-up on a fresh machine (Python packages, the labextension build, chromium for the UI tests).
PY ?= python3
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
PORT ?= 8888

.PHONY: install chromium lab test bench

install:
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m jupyter labextension develop --overwrite .
	$(PY) -m jupyter server extension enable --sys-prefix kimi_nb

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
