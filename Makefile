# Two entry points do all the set-up on a fresh machine: `make study` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXPERIMENTS ?= runs
STUDY ?= mnist1d-default

.PHONY: study test install demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) -m kd demo --store $(EXPERIMENTS)/teachers

study: $(STAMP)
	$(PY) -m kd demo --store $(EXPERIMENTS)/teachers

clean:
	rm -rf $(VENV) $(EXPERIMENTS) .pytest_cache
