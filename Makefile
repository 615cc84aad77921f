# Sluice: `make run` starts everything, `make test` runs every test. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

KUSTOMIZE := .sluice/bin/kustomize
KUSTOMIZE_VERSION := v5.7.1

.PHONY: run test lint kafka jars native clients clean bench soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gbstats==0.8.0  # the stats oracle in tests: see pyproject's dev extras
	touch $(STAMP)

jars: $(STAMP)
	$(BIN)/python -c "from commands.localkafka import ensure_jars; ensure_jars()"

# The worker's per-event modules compiled by mypyc (pipeline/native.py): a no-op when fresh,
# and the source runs where there is no C compiler
native: $(STAMP)
	$(BIN)/python -c "from pipeline import native; native.main()"

run: $(STAMP) jars native
	$(BIN)/sluice run

kafka: $(STAMP) jars
	$(BIN)/sluice kafka

# kustomize, to build the Kubernetes overlays in the test suite: compiled from its Go module
$(KUSTOMIZE):
	GOBIN=$(CURDIR)/.sluice/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

# The ClickHouse clients that tests/test_warehouse_clients.py runs against `sluice warehouse`: the Node
# client (npm) and the JDBC driver (Maven), pinned in tests/clients/, fetched into .sluice/clients
clients:
	tests/clients/fetch.sh
	tests/clients/sdks/install.sh  # the Segment and PostHog Node SDKs and posthog-js (tests/test_sdk_segment_posthog*.py)

test: $(STAMP) jars native clients $(KUSTOMIZE)
	@[ -x /usr/bin/chromium ] || apt-get install -y chromium || (apt-get update && apt-get install -y chromium) || sudo apt-get install -y chromium  # Playwright drives it (tests/test_results_page.py)
	$(BIN)/pytest -n 2 --dist loadgroup --ignore=tests/test_openapi_fuzz.py  # two xdist workers; the fault and timing modules stay serial (tests/conftest.py)
	$(BIN)/pytest tests/test_openapi_fuzz.py  # not under xdist: schemathesis gives its 58 cases one node id, and xdist would run only one

# The fault suite at larger sizes and for longer (minutes, not part of `make test`)
soak: $(STAMP) jars native
	SLUICE_SOAK=1 $(BIN)/pytest tests/test_faults_workers.py tests/test_crash.py tests/test_faults.py tests/test_gateway_kafka.py tests/test_worker_fuzz.py

bench: $(STAMP) jars native
	@command -v wrk >/dev/null || apt-get install -y wrk || sudo apt-get install -y wrk  # the C load generator
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy bench

clean:
	rm -rf $(VENV) .sluice .pytest_cache .mypy_cache .ruff_cache pipeline/native.stamp
	find pipeline -name "*.so" -delete
