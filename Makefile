# threadctl — build, run and test.
GO      ?= go
BIN     ?= bin/threadctl
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: build run cluster test fuzz bench floor soak scale setup docs clean

build:
	$(GO) build -o $(BIN) .

# Runs the service with its demo defaults: bbolt under ./data, HTTP on :8080,
# the Messenger Platform simulator on 127.0.0.1:8081.
run: build
	./$(BIN) serve

# A local etcd cluster and two threadctl instances sharing it (SPEC.md §8):
# three etcd members in one process (store/etcd/etcdtest/cmd/etcd-cluster,
# a demo tool built on etcd's embed package: threadctl never starts etcd)
# on 127.0.0.1:2379, :22379, :32379 with their data in data/etcd; instance
# 1 on :8080 with the Messenger simulator on :8081 (the demo page; Meta's
# webhooks go to it); instance 2 on :8090 (examples/cluster-second-instance.yaml),
# calling the same simulator. Ctrl-C stops all three. README: "Several
# instances on etcd".
ETCD_ENDPOINTS ?= http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379
cluster: build
	$(GO) build -o bin/etcd-cluster ./store/etcd/etcdtest/cmd/etcd-cluster
	@set -e; pids=""; trap 'kill $$pids 2>/dev/null; wait' INT TERM EXIT; \
	./bin/etcd-cluster -dir data/etcd & pids="$$!"; \
	for i in $$(seq 100); do curl -sf http://127.0.0.1:2379/health >/dev/null && break; sleep 0.2; done; \
	./$(BIN) serve --addr 127.0.0.1:8080 --store etcd --etcd-endpoints $(ETCD_ENDPOINTS) & pids="$$pids $$!"; \
	for i in $$(seq 100); do curl -sf http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.2; done; \
	./$(BIN) serve --config examples/cluster-second-instance.yaml & pids="$$pids $$!"; \
	echo "threadctl on http://127.0.0.1:8080 and http://127.0.0.1:8090, one etcd cluster ($(ETCD_ENDPOINTS)); Ctrl-C stops"; \
	wait

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# Every fuzz target of the repo, one after another, FUZZTIME each (go test
# -fuzz takes one target at a time). The targets (package:FuzzName) are
# found in the sources; FUZZ_TARGETS picks some instead, e.g.
#   make fuzz FUZZ_TARGETS=./server:FuzzWebhook FUZZTIME=2m
# New inputs are minimised for at most FUZZMINIMIZETIME: Go's default, 60 s
# an input, would spend a short run minimising. A failing input is written
# to the package's testdata/fuzz/<FuzzName>/, where make test runs it too.
FUZZTIME         ?= 15s
FUZZMINIMIZETIME ?= 5s
FUZZ_TARGETS     ?=

fuzz:
	@set -e; targets="$(FUZZ_TARGETS)"; \
	if [ -z "$$targets" ]; then \
		targets=$$(find . -name node_modules -prune -o -name '*_test.go' -print | sort | \
			xargs grep -H -E '^func Fuzz[A-Za-z0-9_]*[(]' | \
			sed -E 's|^(.*)/[^/]*_test[.]go:func (Fuzz[A-Za-z0-9_]*)[(].*|\1:\2|'); \
	fi; \
	for t in $$targets; do \
		echo "== $${t%%:*} $${t##*:} ($(FUZZTIME))"; \
		$(GO) test "$${t%%:*}" -run '^$$' -fuzz "^$${t##*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME); \
	done

# Every benchmark three times; read ratios within one run (see README).
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=3 ./...

# Issue #13's side-by-side run with the floor beside it: the bench's signed
# pass/take webhooks against threadctl, the PostgreSQL peer, raw bbolt and
# walfloor (store/wal/walfloor: HTTP, the signature check and one durable log
# append, nothing else), in one run, ratios printed. Each figure is
# FLOOR_SLICES short runs, the modes taking turns (the disk drifts). Loopback
# only; about 4.5 minutes at the defaults. Needs ../shared/bench (BENCH=…).
FLOOR_SECS    ?= 15
FLOOR_SLICES  ?= 6
FLOOR_CALLERS ?= 1 64 256

floor:
	SLICES=$(FLOOR_SLICES) store/wal/walfloor/side-by-side.sh $(FLOOR_SECS) $(FLOOR_CALLERS)

# The soak (soak/soak_test.go): SOAK_CYCLES SIGKILLs of the built binary
# under concurrent handovers, agent work and webhooks, each followed by
# threadctl check and a check that every acknowledged transition survived;
# then every thread must agree with Meta (the simulator, in the test
# process). About 20 minutes for the default 1000 cycles; loopback only.
# Then the linearizability check (engine/linearizability_test.go) runs for
# LIN_DURATION over every table, in rounds.
SOAK_CYCLES  ?= 1000
LIN_DURATION ?= 5m

soak: build
	THREADCTL_SOAK_CYCLES=$(SOAK_CYCLES) THREADCTL_BIN=$(abspath $(BIN)) \
		$(GO) test ./soak/ -run '^TestSoak$$' -count=1 -v -timeout 6h
	THREADCTL_LIN_DURATION=$(LIN_DURATION) $(GO) test -race ./engine/ -run '^TestLinearizability$$' -count=1 -v -timeout 2h

# Issue #14's scale run (store/scale_test.go): loads SCALE_THREADS threads
# (default 1 000 000) and a small store (SCALE_SMALL, 20 000) through the
# engine, restarts the built binary on each, and prints one table: restart
# time to /readyz, RSS after it, file bytes per thread, listing time,
# webhook throughput at both sizes, the retention pruner's pass. The load
# generator is built from SCALE_LOADGEN (default shared/bench/loadgen beside
# the repository). Data goes under SCALE_DIR (default $TMPDIR) and is
# removed. The 10 M run:  SCALE_THREADS=10000000 make scale
SCALE_THREADS ?= 1000000
SCALE_LOADGEN ?= $(firstword $(wildcard $(abspath ../shared/bench/loadgen) $(abspath ../../shared/bench/loadgen)))

scale: build
	SCALE_THREADS=$(SCALE_THREADS) SCALE_BIN=$(abspath $(BIN)) SCALE_LOADGEN=$(SCALE_LOADGEN) \
		$(GO) test ./store -run '^TestScale$$' -count=1 -v -timeout 6h

# Redraws the diagrams under docs/ (the workflows by playing them).
docs: build
	./$(BIN) diagram --docs docs

# Debian packages some commands and tests use: Graphviz renders SVG diagrams,
# Chromium runs the debug page's browser test.
setup:
	apt-get update
	apt-get install -y --no-install-recommends graphviz chromium fonts-dejavu-core

clean:
	rm -rf bin
