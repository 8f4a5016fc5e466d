# threadctl — build, run and test.
GO      ?= go
BIN     ?= bin/threadctl
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: build run test bench setup fuzz clean

build:
	$(GO) build -o $(BIN) .

# Runs the service with its demo defaults: bbolt under ./data, HTTP on :8080,
# the Messenger Platform simulator on 127.0.0.1:8081.
run: build
	./$(BIN) serve

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=5 ./...

clean:
	rm -rf bin
