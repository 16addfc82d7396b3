# mlops-loop: `make demo` runs the loop end to end; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
export DAGSTER_HOME := $(CURDIR)/dagster_home

.PHONY: install demo test test-fast test-slow lint ui mlflow-ui bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/mlops-loop demo --workdir .demo --dagster-home dagster_home

# Fast unit tests first, then the slow end-to-end, integration and browser tests.
test: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow and not integration and not browser"
	$(BIN)/python -m pytest -m "slow or integration or browser"; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration and not browser"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

ui: $(STAMP)
	MLOPS_LOOP_CONFIG=.demo/loop.yaml $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.demo/state/mlflow.db \
		--default-artifact-root $(CURDIR)/.demo/state/mlartifacts -h 127.0.0.1 -p 5000

bench: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf .demo $(VENV)
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
