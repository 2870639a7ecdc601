# Two commands on a fresh machine: `make book` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The local CPU wheel; override (e.g. TORCH_SPEC='torch>=2.4,<2.14') on a machine with CUDA.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,book,data,cluster,export
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# The notebook profile `make book` runs: cpu (the default book), gpu (paper scale, CUDA), smoke (minutes).
PROFILE ?= cpu

.PHONY: setup book test test-fast clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['sgn']['install-without-deps']))")
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "installed into $(VENV)"

# Executes the notebooks (cached) and builds book/_build/html; needs npm for the widget JavaScript.
book: setup
	$(VENV)/bin/sgn book --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
