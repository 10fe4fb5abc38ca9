# tickgate — set-up is two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test lint typecheck pytest browser promtool demo bench fuzz chaos week cluster bad-input clean

$(STAMP): pyproject.toml
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)  # none, or half-made
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) browser promtool
	$(BIN)/pytest -q

browser:  # the dashboard test's Chromium (Debian's; apt-get when missing and usable)
	@scripts/ensure-deb chromium chromium "the dashboard test's browser"

promtool:  # checks docs/alerts.yml (Debian's prometheus package; its daemon is not started)
	@scripts/ensure-deb promtool prometheus "checks docs/alerts.yml"

demo: $(STAMP)
	$(BIN)/tickgate demo

# Every bench at its default (issue-target) size, then docs/PERFORMANCE.md from their results. A failing bench
# does not stop the others; the report is written from what ran (a failed bench shows as failed, never with
# figures) and then make fails naming it.
BENCHES := decode registry planner ingest api cli backfill analytics accounts cluster

bench: $(STAMP)
	@scripts/ensure-deb wrk wrk "the option-chain load generator"
	rm -rf bench/out/results
	@failed=""; \
	for b in $(BENCHES); do \
		echo "=== bench/$$b.py"; \
		$(BIN)/python bench/$$b.py || failed="$$failed $$b"; \
	done; \
	$(BIN)/python bench/report.py --failed "$$failed" || exit 1; \
	if [ -n "$$failed" ]; then echo "make bench: failed:$$failed" >&2; exit 1; fi

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/dhan/test_decoding.py -k garbage

chaos: $(STAMP)
	TICKGATE_CHAOS_SECONDS=900 TICKGATE_CHAOS_RECOVERY_S=10 $(BIN)/pytest -q -s tests/chaos

# Five trading days of the real service against the simulator on a virtual clock (tests/week; its one-day
# form runs in `make test`). Prints a summary table and writes it to tests/week/out/.
week: $(STAMP)
	TICKGATE_WEEK_DAYS=5 $(BIN)/pytest -q -s -p no:logging tests/week

# The split mode's multi-process tests (tests/gateway; their short form runs in `make test`) with the fault
# rounds repeated and 20 push clients per replica: gateways, standby, replicas on hosts of their own.
cluster: $(STAMP)
	TICKGATE_CLUSTER_ROUNDS=3 $(BIN)/pytest -q -s tests/gateway tests/bus tests/store/test_lease.py

bad-input: $(STAMP)  # long bad-input runs: schemathesis >= 1,000 cases, decoder fuzz >= 1,000,000 frames
	TICKGATE_SCHEMATHESIS_EXAMPLES=100 TICKGATE_SCHEMATHESIS_MIN_CASES=1000 $(BIN)/pytest -q -s tests/api/test_schemathesis.py
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -s tests/failure_modes/test_bad_input.py -k decoder_garbage_fuzz

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
