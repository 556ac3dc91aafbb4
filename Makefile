# byu: `make demo` runs the whole loop on a synthetic cohort; `make test` runs the test suite.
# Both create .venv on first use (torch first, from the pinned CPU build, then the package with [dev]).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_data
PYTEST_ARGS ?=
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv demo test test-fast lint serve bench clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: a CPU build of 2.13.0; anything else (or monai first) pulls GBs of CUDA
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/byu demo --data-dir $(DEMO_DIR)

# pytest's exit 5 ("no tests collected") counts as a failure only when test files exist
test: venv
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$$(ls tests/test_*.py 2>/dev/null)" ]; then echo "no tests yet"; exit 0; fi; \
	exit $$rc

# the quick loop while working: every test not marked slow (no model training, no whole flows)
test-fast: venv
	@$(BIN)/python -m pytest -m "not slow" -q $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

# gates: ruff (pyflakes, import order, bugbear, pyupgrade), mypy, and the import contracts (byu never imports flows
# or Prefect; no import cycles)
lint: venv
	$(BIN)/ruff check byu flows tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

serve: venv
	$(BIN)/python -m flows.serve --with-server

bench: venv
	$(BIN)/python benchmarks/preprocess.py --quick
	$(BIN)/python benchmarks/infer.py

clean-demo:
	rm -rf $(DEMO_DIR)
