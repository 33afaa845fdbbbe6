# The two commands a fresh machine needs are `make run` and `make test`; each makes .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint lint-ci typecheck unit plan bench bench-quick test-localstack clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[infra,local,dev]'
	@touch $(STAMP)

## run: the whole system locally on the embedded SQS emulator, with a demo workload
run: $(STAMP)
	$(VENV)/bin/amply-jobs dev --demo 200 --exit-when-done

## test: lint, types, the CI/image lint and the whole suite
test: $(STAMP) lint lint-ci typecheck
	$(PY) -m pytest -q -p no:cacheprovider --durations=20

## lint: ruff, and the boundaries between packages (import-linter contracts in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## lint-ci: the worker Dockerfile (hadolint) and the GitHub workflows (schema, zizmor audit)
# zizmor: any finding above "low" fails; low and informational ones are printed only.
lint-ci: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --min-severity medium .github/workflows/

typecheck: $(STAMP)
	$(VENV)/bin/mypy infra jobs contract __main__.py

unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

## plan: the offline plan of a stack (make plan STACK=prod; one JSON document: ARGS=--json)
STACK ?= dev
ARGS ?=
plan: $(STAMP)
	$(PY) -m infra.plan $(STACK) $(ARGS)

## bench: every benchmark (docs/benchmarks.md); outputs in build/bench/. Not part of make test.
bench: $(STAMP)
	$(PY) -m bench.run_all

## bench-quick: every benchmark in its quick mode, under 2 minutes
bench-quick: $(STAMP)
	$(PY) -m bench.run_all --quick

## test-localstack: the integration tests against LocalStack 4.9, run as a plain process
# LocalStack lives in a virtualenv of its own: its pinned dependencies clash with the project's.
LOCALSTACK_VENV := .venv-localstack
LOCALSTACK_STAMP := $(LOCALSTACK_VENV)/.installed
# The suites whose outcome depends on what the SQS endpoint answers. Left out:
# tests/reliability/test_broker_outage.py, whose faults a proxy makes in front of whatever
# endpoint (it runs on moto in make test), and the suites that never send to SQS.
LOCALSTACK_TESTS ?= tests/jobs tests/tasks tests/dlq tests/webhooks/test_on_a_worker.py tests/local \
	tests/reliability/test_worker_killed.py tests/reliability/test_bad_input.py
$(LOCALSTACK_STAMP):
	$(PYTHON) -m venv $(LOCALSTACK_VENV)
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet 'localstack-core[runtime]==4.9.2' \
		'cbor2==5.6.5' 'pyopenssl==24.2.1' 'cryptography==43.0.3' 'service_identity<25'
	@touch $(LOCALSTACK_STAMP)

test-localstack: $(STAMP) $(LOCALSTACK_STAMP)
	$(PY) -m jobs.local.localstack --python $(LOCALSTACK_VENV)/bin/python -- \
		$(PY) -m pytest -q -p no:cacheprovider --durations=20 $(LOCALSTACK_TESTS)

clean:
	rm -rf $(VENV) $(LOCALSTACK_VENV) .mypy_cache .ruff_cache .pytest_cache
