# One command set for people and CI. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test lint format clean bench bench-quick bench-auth bench-events bench-brokers bench-deps bench-templates bench-styles bench-dashboard bench-k8s bench-k8s-deps bench-gateways bench-gateways-adaptive bench-replay bench-soak bench-decisions bench-policies simulate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## up: run the platform on this machine (embedded Postgres unless DATABASE_URL is set)
up: $(STAMP)
	$(VENV)/bin/fn up

## test: run the whole test suite against a real Postgres and real invoker processes
test: $(STAMP)
	$(PY) -m pytest -q

## lint: ruff (rules and formatting), mypy --strict and the import-linter layering contract
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

## bench: the benchmark suite, side by side with a bare aiohttp floor, then cold starts of
## heavy functions from templates, then throughput under wrk (a few minutes each)
bench: $(STAMP) bench-throughput
	$(PY) -m bench.run
	$(PY) -m bench.templates

## bench-throughput: the gateway and the floor under wrk, c=64 and c=1, medians of 3 (2 minutes);
## BASELINE=DIR also measures the gateway of another checkout in the same run (the before);
## ROUNDS=N for more rounds than 3 (steadier medians on a shared machine)
.PHONY: bench-throughput
bench-throughput: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
		|| apt-get install -y -q wrk >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wrk >/dev/null; }
	$(PY) -m bench.throughput $(if $(BASELINE),--baseline $(BASELINE)) $(if $(ROUNDS),--rounds $(ROUNDS))

## bench-quick: the same with fewer samples (under a minute)
bench-quick: $(STAMP)
	$(PY) -m bench.run --quick

## bench-soak: 10 minutes at 64 concurrent clients: the gateway's memory stays flat, no call fails
bench-soak: $(STAMP)
	$(PY) -m bench.soak

## bench-events: durable events and async invocations end to end (about a minute)
bench-events: $(STAMP)
	$(PY) -m bench.events

## bench-templates: cold starts of functions importing requests / numpy, forked from their
## template or importing, next to a fresh interpreter; PSS of templates and instances; then
## the first instance of a function whose trusted environment's zygote exists (bench.env_zygotes)
bench-templates: $(STAMP)
	$(PY) -m bench.templates
	$(PY) -m bench.env_zygotes

## bench-templates-full: the full bench.run with templates on (the default) and off, alternated twice
## (BASELINE=DIR adds a checkout of another commit's gateways to each round)
.PHONY: bench-templates-full
bench-templates-full: $(STAMP)
	for round in 1 2; do \
		$(PY) -m bench.run && cp bench/results/latest.json bench/results/run-templates-on-$$round.json; \
		$(PY) -m bench.run --set FN_TEMPLATES=0 && cp bench/results/latest.json bench/results/run-templates-off-$$round.json; \
		$(if $(BASELINE),$(PY) -m bench.run --checkout $(BASELINE) && cp bench/results/latest.json bench/results/run-baseline-$$round.json;) \
	done

## bench-brokers: broker sources (NATS, Redis Streams, RabbitMQ, MQTT) end to end, next to topic events (about a minute)
bench-brokers: $(STAMP)
	$(PY) -m bench.brokers

## bench-deps: cold starts of a function with dependencies, and the naive baseline
bench-deps: $(STAMP)
	$(PY) -m bench.deps

## bench-styles: what each handler style (lambda, openwhisk, asgi...) adds to a warm call
bench-styles: $(STAMP)
	$(PY) -m bench.styles

## bench-dashboard: the dashboard's pages on 500 functions, next to the admin API's list
bench-dashboard: $(STAMP)
	$(PY) -m bench.dashboard

## bench-auth: a warm call of a private, a CORS and a namespaced function vs a public one
bench-auth: $(STAMP)
	$(PY) -m bench.auth --quick

## bench-k8s: cold starts on the Kubernetes backend (against the API emulation) vs local
bench-k8s: $(STAMP)
	$(PY) -m bench.k8s

## bench-k8s-deps: cold starts of a function with requirements on Kubernetes (node cache hit, miss) vs local
bench-k8s-deps: $(STAMP)
	$(PY) -m bench.k8s_deps

## bench-gateways: 1, 2 and 3 gateways sharing warm instances on a replayed trace slice, and the hop's cost (about 6 minutes)
bench-gateways: $(STAMP)
	$(PY) -m bench.gateways

## bench-gateways-adaptive: the adaptive policy replayed on 1 and 3 gateways at 20x (about 8 minutes)
bench-gateways-adaptive: $(STAMP)
	EMBER_BENCH_POLICY=adaptive EMBER_BENCH_SPEEDUP=20 EMBER_BENCH_GATEWAYS=1,3 \
	EMBER_BENCH_ONLY=replay $(PY) -m bench.gateways

## bench-decisions: the time of one policy decision per call at 240 filled histogram bins
bench-decisions: $(STAMP)
	$(PY) -m bench.decisions

## bench-replay: replay a time-compressed trace slice on a platform (--policy fixed|histogram); compare with the simulator
bench-replay: $(STAMP)
	$(PY) -m bench.replay

## bench-policies: the policies on the sample's two hash halves, then on 20 random 50/50 splits and 80 fresh ones, where the tune half's cold starts come from, and what one day lets a histogram plan reach (about 6 minutes)
bench-policies: $(STAMP)
	$(PY) -m bench.policies --trace ../shared/traces/azure-functions-2019-sample
	$(PY) -m bench.policies --trace ../shared/traces/azure-functions-2019-sample --splits 20 \
		--policy histogram-cost:30m/5m --policy adaptive-before --policy adaptive
	$(PY) -m bench.policies --trace ../shared/traces/azure-functions-2019-sample --splits 80 \
		--first-seed 20 --policy adaptive-before --policy adaptive
	$(PY) -m bench.policy_signals --trace ../shared/traces/azure-functions-2019-sample
	$(PY) -m bench.policy_bounds --trace ../shared/traces/azure-functions-2019-sample

## simulate: the warm-pool policies on the trace sample (shared/traces)
simulate: $(STAMP)
	$(VENV)/bin/fn policy simulate --trace ../shared/traces/azure-functions-2019-sample \
		--policy fixed:10m --policy adaptive --policy histogram --policy histogram-cost:2h \
		--policy histogram-cost:4h --policy histogram-cost:40m --policy fixed:1h \
		--plot docs/policies.png
