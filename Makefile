# ami-bridge: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test unit lint sandbox postgres browser docker-compose bench test-faults clean

# A fresh Debian's python3 has no venv module until python3-venv is installed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); apt-get update -q && \
		apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The sandbox Asterisk 22 + SIPp root (Debian unstable packages), cached outside the repo.
sandbox:
	./scripts/provision-sandbox

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# PostgreSQL server binaries for the personal store's tests (harness/postgres.py starts a
# throw-away server per test session, as the `postgres` user). Debian's packages would also
# create and start a "main" cluster: createcluster.conf says not to, before the server
# package is installed; nothing here starts a service. A no-op once a server is there.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { set -e; \
		apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-common; \
		conf=/etc/postgresql-common/createcluster.conf; \
		if grep -qE '^#? *create_main_cluster' $$conf; then \
			sed -i -E 's/^#? *create_main_cluster.*/create_main_cluster = false/' $$conf; \
		else echo 'create_main_cluster = false' >> $$conf; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }

# Debian's chromium and its chromedriver for the workstation page's browser test
# (tests/integration/test_workstation_page.py; harness/browser.py). Nothing else fetches a
# browser or a driver. A no-op once both are there.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		apt-get update -q && apt-get install -y -q chromium chromium-driver; }

# Debian's docker-compose (v1), only to check docker/compose.yaml (`config -q` needs no
# Docker engine; tests/unit/test_docker.py). A no-op once it is there.
docker-compose:
	@command -v docker-compose >/dev/null || { \
		apt-get update -q && apt-get install -y -q docker-compose; }

# Unit and loopback tests only: no sandbox, no root, seconds.
unit: $(STAMP) postgres docker-compose
	$(BIN)/pytest -m "not asterisk"

test: $(STAMP) sandbox postgres browser docker-compose lint
	$(BIN)/pytest

demo: $(STAMP) sandbox
	$(BIN)/python -m harness.demo

# Then the long scale-out run (docs/scale-out.md): two Asterisks, two bridges, bridges
# SIGKILLed and restarted under load for 60 s (harness/scale_faults.py).
# The fault run (docs/reliability.md): every fault scenario in full (a 10-minute soak
# included, about 20 minutes), then the page regenerated from its results. Short
# variants of the same scenarios run in `make test` (tests/integration/test_faults.py).
# The long profile of the property tests (10,000 examples each: the VTS message parser,
# tenant isolation at the intermediary and at the AGI side; about 10 minutes), then the
# fault run and its report (docs/reliability.md).
test-faults: $(STAMP) sandbox
	AMI_BRIDGE_HYPOTHESIS_PROFILE=long $(BIN)/pytest -q tests/unit/test_vts_protocol.py \
		tests/unit/test_isolation_property.py tests/unit/test_isolation_agi.py \
		tests/unit/test_intermediary.py
	$(BIN)/python -m harness.faults run; status=$$?; \
		$(BIN)/python -m harness.faults report || status=1; \
		$(BIN)/python -m harness.scale_faults || status=1; exit $$status

# Benchmarks (not part of `make test`): see bench/README.md. About 50 minutes.
# `make bench BASELINE=/path/to/old/checkout` also runs the old code side by side
# (agi-load bridge@baseline, bridge-cost routed@baseline and routed-noami@baseline).
BASELINE ?=
bench: $(STAMP) sandbox
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench $(if $(BASELINE),--baseline $(BASELINE))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
