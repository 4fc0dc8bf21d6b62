# Relay's developer and CI entry points. Every target works unattended (no stdin) from a fresh clone on Debian 12:
# missing Debian packages are installed (with sudo only when not root), the Python test tools go into .venv.
#
#   make deps        the C libraries the Swift package links (apt, only what is missing)
#   make build       swift build (debug, .build/)
#   make run         deps + build + serve config/relay.json5 from the repo root, on 127.0.0.1:8080 (admin API
#                    127.0.0.1:9090); LISTEN=HOST:PORT listens there instead (make run LISTEN=0.0.0.0:8080: every
#                    interface; the admin API stays on loopback)
#   make test        deps + test deps + swift test (SQLite and a throwaway PostgreSQL) + the interop suite + the crash
#                    test + the multi-relay test on PostgreSQL + the abuse test + fuzz-smoke + container-check
#   make test-deps   deps + openssl, postgresql, chromium and chromium-driver (the console's browser test) + a Python
#                    venv (.venv) with the interop suite's packages (PY_TEST_PACKAGES)
#   make demo        deps + build, then demo/run: the stand-ins, config/demo.json5 and a signed sequence; prints
#                    what each provider received (a table)
#   make interop     pytest Tests/interop against .build/debug/relay (or $RELAY_BINARY, then no build)
#   make crash-test  Tests/crash/run: SIGKILLs the relay while webhooks arrive; every 2xx must be delivered
#   make multi-test  Tests/multi/run beside a throwaway PostgreSQL (Tests/pg/with-postgres): 3 relays on one database,
#                    SIGKILLs, cut connections, a database crash; every 2xx delivered, per-subject order kept
#   make abuse-test  Tests/abuse/run: hostile input against a running relay (random and mutated requests, 10^5-deep
#                    JSON, header floods, bad Content-Length, slowloris, the connection limit, a full disk on a tmpfs)
#   make fuzz        Fuzz/run: builds the libFuzzer targets (-sanitize=fuzzer,address, .build-fuzz/), replays
#                    Fuzz/regressions and the seeds, fuzzes each target FUZZ_SECONDS (default 60); docs/fuzzing.md
#   make fuzz-smoke  the same, FUZZ_SMOKE_SECONDS (default 20) each: what `make test` runs
#   make container-check  Tests/container/check-libs: release build (.build-container/) as the Dockerfile does it;
#                    every library ldd shows must come from the Dockerfile's runtime packages; static Swift stdlib
#   make bench       bench/run (about 8 minutes): ingest beside nginx and adnanh/webhook under wrk, then
#                    bench/deliveries (delivery rate, latency, memory with a million queued), bench/postgres (1 and 2
#                    relays on one PostgreSQL database), start-up time and the
#                    latency plot; rewrites docs/benchmarks.md (and benchmarks-delivery.md, benchmarks-latency.png)
#   make bench-deliveries   bench/deliveries alone (BENCH_BIG=1: also drains the million-delivery queue)
#   make bench-postgres     bench/postgres alone: ingest and deliveries/s with 1 and 2 relays on a throwaway PostgreSQL
#   make profile     bench/profile: where a webhook's CPU goes (perf, by thread and stage); docs/benchmarks-profile.md
#   make clean       removes .build/ and test/bench leftovers (.venv stays; `make distclean` removes it too)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-print-directory

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

SWIFT ?= swift
# The interpreter that creates .venv: pyenv's or Debian's python3, whichever is first on PATH.
PYTHON ?= python3
VENV := $(ROOT)/.venv
VENV_PY := $(VENV)/bin/python
PY_TEST_PACKAGES := standardwebhooks stripe pytest requests mastercard-oauth1-signer cryptography PyJWT prometheus-client schemathesis svix oauthlib PyYAML selenium opentelemetry-proto
PY_TEST_MODULES := standardwebhooks,stripe,pytest,requests,oauth1,cryptography,jwt,prometheus_client,schemathesis,svix,oauthlib,yaml,selenium,opentelemetry.proto

APT_DEPS := libcurl4-openssl-dev libmicrohttpd-dev libhttp-parser-dev libssl-dev libsqlite3-dev libpq-dev pkg-config
# chromium and chromium-driver: the console's browser test (Tests/interop/test_console.py, headless).
APT_TEST_DEPS := openssl postgresql chromium chromium-driver

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# $(call apt_ensure,PACKAGES): installs those of PACKAGES that dpkg does not report installed; `apt-get update` runs
# first, and only when something is missing.
define apt_ensure
missing=""; \
for p in $(1); do \
  [ "$$(dpkg -s "$$p" 2>/dev/null | sed -n 's/^Status: //p')" = "install ok installed" ] || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "apt: installing$$missing"; \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q; \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $$missing; \
fi
endef

.PHONY: deps build run demo test test-deps swift-test interop crash-test multi-test abuse-test fuzz fuzz-smoke container-check bench bench-deliveries bench-postgres profile clean distclean

deps:
	@$(call apt_ensure,$(APT_DEPS))

build: deps
	cd "$(ROOT)" && $(SWIFT) build

# Config paths (${file:config/secrets/...}, data/relay.db) are relative to the repo root: serve from there.
# LISTEN=HOST:PORT replaces the config's server.listen (127.0.0.1:8080) through `relay serve --listen`.
LISTEN ?=
run: deps build
	cd "$(ROOT)" && exec .build/debug/relay serve --config config/relay.json5 $(if $(LISTEN),--listen "$(LISTEN)")

# Loopback only, free ports, nothing kept (Python 3 stdlib only); exit 0 only if every expected delivery happened.
demo: deps build
	cd "$(ROOT)" && demo/run "$(ROOT)/.build/debug/relay" </dev/null

test-deps: deps
	@$(call apt_ensure,$(APT_TEST_DEPS))
	@cd "$(ROOT)"; \
	if [ -x "$(VENV_PY)" ] && "$(VENV_PY)" -m pip --version >/dev/null 2>&1; then :; else \
	  py="$$(command -v $(PYTHON) || true)"; \
	  if [ -z "$$py" ] || ! "$$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then \
	    $(call apt_ensure,python3 python3-venv); \
	    if [ -z "$$py" ] || ! "$$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then py=/usr/bin/python3; fi; \
	  fi; \
	  echo "venv: creating $(VENV) with $$py ($$("$$py" --version 2>&1))"; \
	  rm -rf "$(VENV)"; \
	  "$$py" -m venv "$(VENV)"; \
	fi; \
	if ! "$(VENV_PY)" -c 'import $(PY_TEST_MODULES)' >/dev/null 2>&1; then \
	  echo "venv: pip install $(PY_TEST_PACKAGES)"; \
	  "$(VENV_PY)" -m pip install -q --disable-pip-version-check $(PY_TEST_PACKAGES); \
	fi

# The store conformance suite runs on SQLite and on a throwaway PostgreSQL cluster (Tests/pg/with-postgres: initdb in
# a temp dir, the postgres user, a free port; stopped and removed on exit).
# The output is also kept in .build/swift-test.log; on a failure, what failed (the tests marked ✘, a crash's fatal
# error and the tests unfinished at the crash: Tests/support/failure-summary) is printed again at the end of
# `make test`, where CI's excerpt of a long run still shows it.
swift-test: deps
	@$(call apt_ensure,$(APT_TEST_DEPS))
	cd "$(ROOT)" && set -o pipefail && Tests/pg/with-postgres $(SWIFT) test </dev/null 2>&1 | tee .build/swift-test.log

# With RELAY_BINARY set, that binary is tested as it is and nothing is built.
# Beside a throwaway PostgreSQL, for the tests that run relays on it (test_deploy.py).
interop: test-deps $(if $(RELAY_BINARY),,build)
	cd "$(ROOT)" && Tests/pg/with-postgres "$(VENV_PY)" -m pytest Tests/interop </dev/null

# The crash test: webhooks posted while the relay is SIGKILLed and restarted three times (debug build, about 10 s);
# fails if a webhook that got a 2xx never reaches the sink. With RELAY_BINARY set, that binary is tested, no build.
crash-test: test-deps $(if $(RELAY_BINARY),,build)
	cd "$(ROOT)" && RELAY_BINARY="$(or $(RELAY_BINARY),$(ROOT)/.build/debug/relay)" "$(VENV_PY)" Tests/crash/run </dev/null

# Three relays on one throwaway PostgreSQL database under load: SIGKILLs, cut connections, a PostgreSQL crash; fails
# if an acknowledged webhook is lost, a subject's order breaks or a claim stays held (about 30 s).
multi-test: test-deps $(if $(RELAY_BINARY),,build)
	cd "$(ROOT)" && RELAY_BINARY="$(or $(RELAY_BINARY),$(ROOT)/.build/debug/relay)" Tests/pg/with-postgres Tests/multi/run </dev/null

# Hostile input against a running relay (about a minute); the full-disk part mounts a 2 MiB tmpfs (root, or sudo -n;
# skipped with a notice otherwise). With RELAY_BINARY set, that binary is tested, no build.
abuse-test: $(if $(RELAY_BINARY),,build)
	cd "$(ROOT)" && RELAY_BINARY="$(or $(RELAY_BINARY),$(ROOT)/.build/debug/relay)" Tests/abuse/run </dev/null

# libFuzzer targets (Fuzz/Targets, declared in Package.swift only when RELAY_FUZZ is set; built in .build-fuzz/, never
# by `swift build`). A crash, sanitizer report, broken property, hang or OOM fails and prints the reproducer's path.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 20
fuzz: deps
	cd "$(ROOT)" && SWIFT="$(SWIFT)" FUZZ_SECONDS="$(FUZZ_SECONDS)" Fuzz/run </dev/null

fuzz-smoke: deps
	cd "$(ROOT)" && SWIFT="$(SWIFT)" FUZZ_SMOKE_SECONDS="$(FUZZ_SMOKE_SECONDS)" Fuzz/run --smoke </dev/null

# The Docker image's runtime stage against the release binary's ldd (Docker itself is not needed): builds
# `swift build -c release --static-swift-stdlib --product relay` in .build-container/, maps every library to its
# Debian package, fails on one the runtime stage does not install or on a dynamically linked Swift stdlib.
container-check: deps
	cd "$(ROOT)" && SWIFT="$(SWIFT)" Tests/container/check-libs </dev/null

# Every suite runs even when an earlier one fails; the exit status is non-zero if any failed.
test: deps test-deps build
	@rc=0; \
	$(MAKE) -C "$(ROOT)" swift-test || rc=1; \
	$(MAKE) -C "$(ROOT)" interop RELAY_BINARY="$(ROOT)/.build/debug/relay" || rc=1; \
	$(MAKE) -C "$(ROOT)" crash-test RELAY_BINARY="$(ROOT)/.build/debug/relay" || rc=1; \
	$(MAKE) -C "$(ROOT)" multi-test RELAY_BINARY="$(ROOT)/.build/debug/relay" || rc=1; \
	$(MAKE) -C "$(ROOT)" abuse-test RELAY_BINARY="$(ROOT)/.build/debug/relay" || rc=1; \
	$(MAKE) -C "$(ROOT)" fuzz-smoke || rc=1; \
	$(MAKE) -C "$(ROOT)" container-check || rc=1; \
	if [ $$rc -ne 0 ]; then Tests/support/failure-summary "$(ROOT)/.build/swift-test.log" >&2; echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

# bench/run runs bench/deliveries itself; DURATION is wrk's per server and round (ROUNDS, default 3).
DURATION ?= 8s
bench: deps
	cd "$(ROOT)" && DURATION="$(DURATION)" bench/run

# bench/profile: perf by thread and stage under bench/run's 1-route load; rewrites docs/benchmarks-profile.md.
profile: deps
	@$(call apt_ensure,wrk linux-perf)
	cd "$(ROOT)" && swift build -c release && RELAY_BINARY="$(ROOT)/.build/release/relay" bench/profile </dev/null

bench-deliveries: deps
	cd "$(ROOT)" && bench/deliveries

# bench/postgres alone, beside a throwaway PostgreSQL: ingest and deliveries/s with 1 and 2 relays on one database.
bench-postgres: deps
	@$(call apt_ensure,$(APT_TEST_DEPS) wrk nginx-light)
	cd "$(ROOT)" && swift build -c release && RELAY_BINARY="$(ROOT)/.build/release/relay" Tests/pg/with-postgres bench/postgres </dev/null

clean:
	cd "$(ROOT)" && rm -rf .build .build-container .build-fuzz .pytest_cache bench/out
	find "$(ROOT)/Tests" -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf "$(VENV)"
