# Quick start: `make demo` (install + run on the bundled demo dataset), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch 2.13 lies on these machines' disk; pinning it first avoids a
# multi-GB CUDA download. Elsewhere pip fetches it from PyPI as usual.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= out/demo

.PHONY: install demo test lint benchmark clean

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

lint: install
	$(BIN)/ruff check bids_sr tests benchmarks scripts

test: install lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

# The optional tissue segmentation (antspyx, ~22 MB wheel from PyPI, not in the local index)
# for the evaluation's Dice columns and the tests that need it; make test-all installs it.
.PHONY: install-seg test-all
install-seg: install
	$(BIN)/pip install --quiet -e ".[test,seg]"

test-all: install-seg lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

benchmark: install
	$(BIN)/python benchmarks/inference.py

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link, anchor or
# page fails. docs/models.md is generated: python -m bids_sr.cards_page > docs/models.md
$(BIN)/mkdocs: pyproject.toml | $(BIN)/bids_sr
	$(BIN)/pip install --quiet -e ".[test,docs]"
	touch $@

.PHONY: docs
docs: install $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) out build *.egg-info
