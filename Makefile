# Ember's build. `make run` and `make test` work from a fresh Debian machine
# as root: the targets install what they need (Node.js for the RunPod SDK
# compatibility test, the pinned protobuf tools under .tools/).
SHELL := /bin/bash
export CGO_CFLAGS ?= -Wno-deprecated-declarations
export PATH := /usr/local/go/bin:$(CURDIR)/.tools/bin:$(PATH)
GO ?= go
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# cgo is needed by libcontainer and go-nvml.
# seccomp: emberd applies its default seccomp profile to worker containers
# (libseccomp-dev, cgo); without the tag the runc runtime refuses to start.
TAGS := seccomp
# A count, not a duration: a time limit can end a run mid-minimisation,
# which Go reports as a failure ("context deadline exceeded").
FUZZTIME ?= 100000x

.PHONY: all build build-deps test deps proto proto-check vet fmt-check fuzz fuzz-short bench run soak clean

all: build

build: build-deps
	@mkdir -p bin
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/emberd ./daemon/cmd/emberd
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ember ./daemon/cmd/ember
	$(GO) build -o bin/example-worker ./examples/worker

# System packages. Building emberd needs libseccomp-dev and pkg-config (the
# container runtime's seccomp support); the tests also need Node.js + npm to
# run the real runpod-sdk client.
APT_PKGS := libseccomp-dev pkg-config
build-deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi

deps: build-deps
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; fi
	@if [ ! -d tests/compat/node_modules/runpod-sdk ]; then \
		cd tests/compat && npm ci --no-audit --no-fund; fi

proto:
	bash scripts/proto.sh

# Fails when the committed generated code is not what the .proto files give.
proto-check:
	bash scripts/proto-check.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.' | grep -v '\.pb\.gw\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags $(TAGS) ./...
	$(GO) vet ./...

# The whole suite: unit, end-to-end (real emberd, real workers, real
# runpod-sdk), crash safety, then a short run of every fuzz target.
test: deps proto-check fmt-check vet build
	$(GO) test -race -count=1 -timeout 15m -tags $(TAGS) ./...
	$(MAKE) fuzz-short

fuzz-short:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSubmission$$' -fuzztime $(FUZZTIME) ./daemon/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzParseResult$$' -fuzztime $(FUZZTIME) ./daemon/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzParseChunk$$' -fuzztime $(FUZZTIME) ./daemon/httpapi

fuzz:
	$(MAKE) fuzz-short FUZZTIME=5000000x

# Performance figures with same-run baselines (see README).
bench: build
	$(GO) run -tags $(TAGS) ./tests/bench -emberd bin/emberd -worker bin/example-worker
	@echo "# autoscaler decision, 50 endpoints sharing 8 GPUs (all held, jobs queued everywhere)"
	$(GO) test -run '^$$' -bench ScaleDecision -benchtime 200000x ./scheduler/

# Long crash/soak loops are kept out of `make test`.
soak: build
	$(GO) test -count=10 -timeout 60m -run 'TestCrash' -v ./tests/

# Starts emberd on its default data dir with a demo endpoint whose worker
# is the example worker, and prints a curl line to try it.
run: build
	bash scripts/run.sh

clean:
	rm -rf bin
