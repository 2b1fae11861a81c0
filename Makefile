# jointcap: set-up, training, tests and benchmarks. Every target makes the venv first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The torch pair that installs on the project's CPU machines (pip takes it from a local cache).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install run test test-all lint format bench bench-paper clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m jointcap.run $(ARGS)

# The suite in parallel worker processes (pytest-xdist): one per core, at most 4; all tests of a file run on one
# worker, in order, so a module's fixture (test_learning's two runs) is built once. ARGS="-n 0": one process.
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -x -n $(TEST_WORKERS) --maxprocesses=4 --dist loadfile

test: $(STAMP)
	$(PYTEST) tests $(ARGS)

# The whole suite plus the torch.compile test (its cold compile takes 40-80 s on a 2-core CPU).
test-all: $(STAMP)
	JOINTCAP_TEST_COMPILE=1 $(PYTEST) tests $(ARGS)

# ruff (lint + format check) and mypy, as configured in pyproject.toml; CI runs this before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m jointcap.tools.bench $(ARGS)

# The paper's setting (cub_cam's ResNet-50 at 224 px, batch 64, bf16); on a CPU add e.g. ARGS="--batch-size 8 --steps 2".
bench-paper: $(STAMP)
	$(PY) -m jointcap.tools.bench --profile paper $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
