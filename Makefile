# Everything a fresh machine needs is installed by these targets themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev
PYTEST_ARGS ?=

.PHONY: demo demo-readme benchmarks-readme test lint deps venv bench clean

# The main job on the embedded ORL faces: teacher pretraining, cross-resolution training on 2
# processes, evaluation; prints the table and writes it to runs/demo/.
demo: $(VENV)/.installed
	$(PY) -m crossres_dist.demo

# The demo, then its table and plot written into README.md (with the fingerprint of the code that
# made them; tests/test_readme.py fails when the code changes and this is not rerun).
demo-readme: $(VENV)/.installed
	$(PY) -m crossres_dist.demo --readme

# The README's example benchmark report (every protocol on trees built from the LFW sample, with
# the demo's networks; run make demo-readme first).
benchmarks-readme: $(VENV)/.installed
	$(PY) bench/benchmark_report.py --readme

# The whole suite: lint, then pytest (starts its own SLURM cluster, uses MPI and torchrun).
test: deps $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -ra --durations=25 $(PYTEST_ARGS) tests

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Debian packages for the SLURM and MPI tests (only as root, only if missing).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root or no apt-get: SLURM/MPI tests will skip (missing:$$missing)"; fi; \
	fi

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

bench: $(VENV)/.installed-dev
	$(PY) bench/pipeline.py
	$(PY) bench/step.py
	$(PY) bench/teacher.py

clean:
	rm -rf runs build *.egg-info .pytest_cache
