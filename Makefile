# Two commands do everything on a fresh machine with Python >= 3.10 and pip:
#   make demo   - create .venv, install every package (editable, with extras), run each package's quick demo
#   make test   - same install step, then ruff and every test (what CI runs)
# `make help` lists the rest.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# commons first; every other directory under packages/ is picked up automatically.
PACKAGES := commons $(filter-out commons,$(sort $(patsubst packages/%/pyproject.toml,%,$(wildcard packages/*/pyproject.toml))))
EDITABLES := $(foreach p,$(PACKAGES),-e packages/$(p)[test])
STAMP := $(VENV)/.installed
INSTALL_INPUTS := constraints-dev.txt $(wildcard packages/*/pyproject.toml)
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM = false
export HF_HUB_OFFLINE = 1

.PHONY: help install demo test test-fast lint format bench dist release clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) $(INSTALL_INPUTS)
	$(PIP) install -q -c constraints-dev.txt torch torchvision
	$(PIP) install -q -c constraints-dev.txt $(EDITABLES) hatch build ruff pytest-xdist
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install every package editable with its extras (pinned by constraints-dev.txt)

demo: install  ## run every package's quick demo; writes runs/demo/REPORT.md and PNGs
	$(PY) tools/demo.py --out runs/demo

lint: install  ## ruff check
	$(VENV)/bin/ruff check .

format: install  ## ruff format + autofix
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint  ## lint, then every package's tests and the cross-package tests (what CI runs)
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: install  ## tests without the slow and install markers
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow and not install" $(PYTEST_ARGS)

bench: install  ## every benchmark in its quick CPU setting; results under runs/bench/ (GPU-only *_gpu.py skipped)
	@failed=""; for f in $(filter-out %_gpu.py,$(wildcard tools/bench/*.py)); do echo "== $$f"; \
		$(PY) $$f --quick || failed="$$failed $$f"; done; \
		if [ -n "$$failed" ]; then echo "failed or sanity bars missed:$$failed"; exit 1; fi

dist: install  ## build sdist + wheel of every package into dist/ (hatchling backend, no network)
	@set -e; mkdir -p dist; for p in $(PACKAGES); do \
		$(PY) -m build --no-isolation --sdist --wheel --outdir dist packages/$$p >/dev/null; done; ls dist

release:  ## bump a package: make release PKG=vqcore PART=patch [TAG=1]
	$(PY) tools/release.py $(PKG) $(PART) $(if $(TAG),--tag,)

clean:  ## remove build outputs (keeps .venv and runs/)
	rm -rf dist build packages/*/dist .pytest_cache .ruff_cache
