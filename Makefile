# Two entry points do all the set-up on a fresh machine: `make study` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXPERIMENTS ?= runs
PRESET ?= mnist1d
STUDY ?= $(PRESET)

.PHONY: study test install demo mutation clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv: the same pinned packages as pip, ~10x faster on a fresh machine (scripts/uv_args.py
	@# passes pip's index settings on); pip itself if uv cannot install them. Bytecode compiled
	@# here, as pip does: with PYTHONDONTWRITEBYTECODE set (as on CI) every process, each Ray
	@# worker included, would compile torch and ray again (import 8.5 s instead of 3.5 s)
	($(PY) -m pip install --quiet uv==0.13.9 && \
	  $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) $$($(PY) scripts/uv_args.py) -e ".[dev,dashboard]") || \
	  $(PY) -m pip install --quiet -e ".[dev,dashboard]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# Mutants of the study's rules (pyproject.toml, [tool.mutmut]), each against the fast suite,
# then the score (README, "Tests"). From scratch every time: mutmut's cache outlives test edits.
mutation: $(STAMP)
	rm -rf mutants
	$(VENV)/bin/mutmut run > mutation.log 2>&1 || (tail -40 mutation.log; exit 1)
	$(PY) scripts/mutation_score.py

# The default study (MNIST-1D, local Ray) end to end, then its report. Run again, it
# resumes the experiment (a finished one just gets its summary and report rewritten).
study: $(STAMP)
	$(PY) run_study.py run --preset $(PRESET) --storage $(EXPERIMENTS) --name $(STUDY) \
		$$(test -f $(EXPERIMENTS)/$(STUDY)/study.json && echo --resume)

# kd/ alone, no Ray: the MNIST-1D teacher and one student per method, as a table.
demo: $(STAMP)
	$(PY) -m kd demo --store $(EXPERIMENTS)/teachers

clean:
	rm -rf $(VENV) $(EXPERIMENTS) .pytest_cache mutants mutation.log
