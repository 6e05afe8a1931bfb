# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean check-exports coverage mutation

$(BASE): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[examples]'
	@touch $(BASE)

$(DEV): $(BASE)
	$(BIN)/python -m pip install --quiet -e '.[dev,mlflow,examples,s3,gcs,azure,ssh,k8s,ray]'
	@touch $(DEV)

# Runs examples/rlhf end to end on this machine: the plan, live progress, and where lineage went.
demo: $(BASE)
	$(BIN)/skyflow run examples/rlhf/pipeline.yaml

test: $(DEV)
	bash tests/services/prepare.sh
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25 tests

# The whole suite under coverage.py, every Python process it starts measured too (pyproject's
# [tool.coverage.run]); lines and branches reported apart against the goals, the HTML in htmlcov/.
coverage: $(DEV)
	bash tests/services/prepare.sh
	rm -rf .coverage-data htmlcov
	$(BIN)/coverage run -m pytest -n 2 --dist loadgroup tests
	$(BIN)/coverage combine -q
	$(BIN)/coverage html -q
	$(BIN)/python tests/services/coverage_summary.py

# Mutants of skyflow/artifacts, skyflow/runner and five planner modules ([tool.mutmut] in pyproject)
# against the unit tests; survivors listed by `mutmut results` (and with why in docs/testing.md).
# About two hours on two cores.
mutation: $(DEV)
	$(BIN)/python -m pip install --quiet "mutmut==3.8.1"
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

# The Airflow export run by Airflow itself (own virtualenv, slow to install): not part of `make test`.
check-exports: $(DEV)
	bash tests/services/check_exports.sh

lint: $(DEV)
	$(BIN)/ruff check skyflow tests bench examples pipelines
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(DEV)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .bench .coverage-data htmlcov mutants
