# Quick start: `make demo` (install + run on the bundled demo dataset), `make test` (fast),
# `make test-all` (fast, then slow).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch 2.13 lies on these machines' disk; pinning it first avoids a
# multi-GB CUDA download. Elsewhere pip fetches it from PyPI as usual.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= out/demo

.PHONY: install demo test test-slow test-all lint benchmark image boutiques clean

$(BIN)/bids_sr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" || $(BIN)/pip install --quiet "torch>=2.1,<3"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/bids_sr

# The main job: the default method (auto) on one demo participant; DEMO_ARGS adds options,
# e.g. make demo DEMO_ARGS="--method auto bspline" to see the baseline beside it.
DEMO_ARGS ?=
demo: install
	$(BIN)/bids_sr bids_sr/data/demo $(DEMO_OUT) participant --participant-label 01 03 -w $(DEMO_OUT)/../demo_work $(DEMO_ARGS)
	$(BIN)/bids_sr bids_sr/data/demo $(DEMO_OUT) group
	@echo "Derivatives in $(DEMO_OUT); group report: $(DEMO_OUT)/group_summary.html"

# ruff, then the import contracts of pyproject.toml's [tool.importlinter] (the layers, no
# nipype/pybids in the core, no circles)
lint: install
	$(BIN)/ruff check bids_sr tests benchmarks experiments scripts
	$(BIN)/lint-imports --no-logo --no-cache

# Two suites split by marker. `make test`: every module on small inputs, a few minutes on two
# cores. `make test-slow`: the tests marked slow (full participant runs, training beyond a few
# steps, browser, pip/venv, SLURM, shared data). `make test-all` runs both, nothing twice.
# pytest exits 5 when a selection holds no tests (e.g. PYTEST_ARGS="-k name"): not a failure.
PYTEST := $(BIN)/python -m pytest -ra --durations=15
test: install lint
	$(PYTEST) -m "not slow and not slurm" $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: install-seg
	$(PYTEST) -m "slow or slurm" $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-all: test test-slow

# The container image, CPU variant, built here with podman from a local Debian base (needs
# root the first time: it installs podman, runc and debootstrap). See docs/container.md.
image:
	scripts/build_image.sh

# The optional tissue segmentation (antspyx, ~22 MB wheel from PyPI, not in the local index)
# for the evaluation's Dice columns and the slow tests that need it; make test-slow (so
# make test-all) installs it. It pins numpy < 2.4 and scipy < 1.16 (antspyx 0.6.3).
.PHONY: install-seg
install-seg: install
	$(BIN)/pip install --quiet -e ".[test,seg]"

# Each benchmark writes its record to benchmarks/results/<name>.json (--json PATH elsewhere);
# docs/benchmarks.md is generated from that folder (see docs below).
benchmark: install
	$(BIN)/python benchmarks/inference.py

# The Boutiques descriptor, generated from the parser; run after changing an option (a test
# fails while bids_sr/data/boutiques.json and the parser differ).
boutiques: install
	$(BIN)/python -m bids_sr.cli.boutiques bids_sr/data/boutiques.json

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link, anchor or
# page fails. docs/models.md and docs/benchmarks.md are generated:
# python -m bids_sr.cards.page > docs/models.md (from the model cards) and
# python -m bids_sr.benchmarks_page > docs/benchmarks.md (from benchmarks/results/*.json).
$(BIN)/mkdocs: pyproject.toml | $(BIN)/bids_sr
	$(BIN)/pip install --quiet -e ".[test,docs]"
	touch $@

.PHONY: docs
docs: install $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) out build *.egg-info
