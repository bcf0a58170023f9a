# modelstream — `make demo` and `make test` do all the set-up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NODE_DIR := tests/interop/node

.PHONY: install demo test test-fast bench lint system-deps clean fuzz chaos soak

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## demo: the whole stack on this machine, with demo traffic and a closing summary
demo: $(STAMP)
	$(VENV)/bin/modelstream demo

## system-deps: Debian's kcat, chromium and prometheus (promtool), and the kafkajs client, for the tests
system-deps:
	@command -v kcat >/dev/null 2>&1 || { \
	  echo "installing kcat (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq kcat >/dev/null; }
	@# chromium: the dashboard's browser test; prometheus: promtool and the scrape test.
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing (Debian packages)"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi
	@if command -v npm >/dev/null 2>&1 && [ ! -d $(NODE_DIR)/node_modules/kafkajs ]; then \
	  echo "installing kafkajs (npm)"; npm ci --prefix $(NODE_DIR) --silent --no-audit --no-fund; fi

## test: the whole suite (unit, integration against real broker and Valkey, end-to-end CLI)
test: $(STAMP) system-deps
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

## bench: throughput and latency against raw Kafka passthrough, as ratios
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) -m bench.run $(BENCH_ARGS)

## fuzz: the hostile-input tests with 2,000 examples each, then atheris (coverage-guided)
FUZZ_SECONDS ?= 120
fuzz: $(STAMP)
	MODELSTREAM_FUZZ_EXAMPLES=2000 $(VENV)/bin/pytest -q tests/fuzz
	@if $(PY) -m pip install --quiet "atheris>=2.3"; then \
	  $(PY) -m tests.fuzz.atheris_run -max_total_time=$(FUZZ_SECONDS); \
	else echo "atheris does not install here: hypothesis runs only"; fi

## chaos: kill -9 replicas and restart Valkey under load, then reconcile every topic
chaos: $(STAMP)
	$(PY) -m tests.chaos $(CHAOS_ARGS)

## soak: maximum throughput, 10 minutes at 80% of it, a stalled consumer; RSS and backlog
soak: $(STAMP)
	$(PY) -m tests.chaos.soak $(SOAK_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench
	$(VENV)/bin/mypy services

clean:
	rm -rf var .pytest_cache
