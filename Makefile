# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates the virtualenv and installs what it needs by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench postgres clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# PostgreSQL server binaries are a prerequisite (no pip package ships pg_trgm,
# citext, uuid-ossp and pg_stat_statements); install them only when missing.
postgres: $(STAMP)
	@$(BIN)/python -c "from bot.devcluster import bindir; bindir()" 2>/dev/null || \
	  { echo "PostgreSQL server binaries not found: installing postgresql postgresql-contrib"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql postgresql-contrib; }

demo: postgres
	$(BIN)/migrate-bot demo

test: postgres
	$(BIN)/pytest -q

# Benchmarks print ratios measured in one run; they assert nothing. squawk-cli is
# installed only here, for the lint comparison.
BENCHES := lint_score gate_score gate_bench refresh_bench ack_latency idle_cpu digest_bench perf_bench
bench: postgres
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .demo
