# sessionmon: `make demo` and `make test` work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick screenshots clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,web]'
	@touch $(STAMP)

## Open the monitor on the embedded default with the traffic generator running.
demo: $(STAMP)
	$(VENV)/bin/sessionmon --demo

## Run the test suite (real SQLite files, a real Redis: embedded, or SESSIONMON_TEST_REDIS_URL).
test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check sessionmon tests bench examples
	$(VENV)/bin/ruff format --check sessionmon tests bench examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

screenshots: $(STAMP)
	$(PY) -m sessionmon.tui.screenshots screenshots

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
