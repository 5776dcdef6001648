# snakepool — `make run` (demo) and `make test` are the two set-up commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS ?= test,dev,dspy

.PHONY: run test lint bench chaos install redis-server clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "snakepool needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@# This machine sets PYTHONDONTWRITEBYTECODE: without .pyc files every interpreter
	@# start is 4-5x slower, so compile once here.
	$(PY) -m compileall -q -j 0 snakepool config pool sessions tasks benchmarks $(VENV)/lib > /dev/null || true
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakepool demo

# Tests start their own redis-server on a free port; install Debian's when missing.
redis-server:
	@command -v redis-server > /dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server > /dev/null; }

test: $(STAMP) redis-server
	$(PY) -m compileall -q snakepool config pool sessions tasks tests > /dev/null || true
	$(PY) -m pytest -n auto --maxprocesses 2 --dist loadfile

# The chaos tests at full scale (`make test` runs a short version of each), with reports.
chaos: $(STAMP) redis-server
	SNAKEPOOL_CHAOS_SCALE=full $(PY) -m pytest -m chaos -s -p no:cacheprovider -o faulthandler_timeout=900

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
