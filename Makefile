# threadctl — build, run and test.
GO      ?= go
BIN     ?= bin/threadctl
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: build run test bench setup docs clean

build:
	$(GO) build -o $(BIN) .

# Runs the service with its demo defaults: bbolt under ./data, HTTP on :8080,
# the Messenger Platform simulator on 127.0.0.1:8081.
run: build
	./$(BIN) serve

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# Every benchmark three times; read ratios within one run (see README).
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=3 ./...

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
