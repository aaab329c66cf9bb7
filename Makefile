# The README's two commands: `make repro` (set up, then run the default pipeline) and
# `make test` (set up, then the test suite). Both work on a fresh clone with nothing installed.
#
# CUDA machines choose their torch build through their own constraints file:
#   make repro CONSTRAINTS=my-constraints.txt   (a file that pins e.g. torch==2.5.1+cu124)
# and PIP_ARGS for an extra index, e.g. PIP_ARGS="--extra-index-url https://..."

PYTHON      ?= python3
VENV        ?= .venv
CONSTRAINTS ?= constraints.txt
PIP_ARGS    ?=

BIN   := $(VENV)/bin
# The stamp's name carries a hash of the pins and dependency list, so choosing other
# constraints (or editing them) reinstalls, whatever the files' timestamps say.
INSTALL_KEY := $(shell cat $(CONSTRAINTS) requirements.lock pyproject.toml requirements-nodeps.txt 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(INSTALL_KEY)

# Container images often set PYTHONDONTWRITEBYTECODE=1; then every process (each DVC stage, each
# torchrun rank, each test subprocess) compiles every module it imports from source: 8 of the 13 s
# a stage spent importing torch and transformers here. Unset, the first import writes the bytecode
# (into .venv and the repository's __pycache__ folders, which git and DVC ignore) and later ones reuse it.
unexport PYTHONDONTWRITEBYTECODE
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup browser repro test bench mutmut lock clean-venv

setup: $(STAMP) .dvc/config

$(STAMP):
	test -f $(CONSTRAINTS) || { echo "constraints file $(CONSTRAINTS) not found" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet --no-compile $(PIP_ARGS) -c $(CONSTRAINTS) -c requirements.lock -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-compile $(PIP_ARGS) --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-*
	touch $@

# DVC is initialised in the repository already (.dvc/config is versioned, with Hydra
# composition on and analytics off); this only repairs a checkout that lost it.
.dvc/config: | $(STAMP)
	test -d .dvc || $(BIN)/dvc init --quiet $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	$(BIN)/dvc config core.analytics false
	$(BIN)/dvc config core.check_update false
	$(BIN)/dvc config hydra.enabled true

# `dvc repro` runs the profile in params.yaml (smoke as committed). Other profiles:
#   dvc exp run -S profile=ci      (Hydra composes conf/ into params.yaml first)
repro: setup
	$(BIN)/dvc repro

# Two pytest-xdist workers, one torch thread each (OMP_NUM_THREADS=1; the ci profile and the
# AudioCaps fixture set run.threads=1 for the stages they run): whole files go to a worker, the two
# longest first (tests/conftest.py). Measured on a fresh clone: 11.3 minutes of tests against 14.4
# for one process at two threads. (Two workers at two threads each measured 17.5 minutes: four
# busy threads on 2 cores.)
test: setup browser
	SIREN_BENCH_REQUIRE_BROWSER=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# Debian's Chromium and ChromeDriver, for the tests that open the report in a real browser
# (tests/browser.py; `make test` fails them if the browser is missing, plain pytest skips them).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver || \
	  { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver; }

bench: setup
	SIREN_BENCH_FULL=1 $(BIN)/python -m pytest benchmarks --benchmark-enable --benchmark-only

# requirements.lock pins every package the install resolves (pip-compile over pyproject's
# dependencies and the test extra, under the constraints file); torch stays with $(CONSTRAINTS),
# so a CUDA machine's own build still applies. Refresh it after changing a dependency, commit it:
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip-tools==7.6.2
	$(BIN)/pip-compile --quiet --extra test --strip-extras --unsafe-package torch --no-emit-index-url \
		--no-emit-find-links -c $(CONSTRAINTS) -o requirements.lock pyproject.toml

# Mutation testing of siren_bench/metrics, the scoring code (scoring.py, evaluation/score.py,
# evaluation/ranking.py, report/paired.py), the verdict rules (report/verdicts.py) and the seed
# combination (replicates.py); [tool.mutmut] in pyproject.toml; survivors are listed at the end
# (README: "Tests that catch wrong metrics"; docs/mutation_testing.md).
mutmut: setup
	$(BIN)/python -m pip install -q -c constraints.txt mutmut==3.8.1
	rm -rf mutants
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean-venv:
	rm -rf $(VENV)
