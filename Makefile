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

.PHONY: all build build-deps gpu-test gpu-test-build test deps proto proto-check vet fmt-check fuzz fuzz-short bench run soak clean package nfpm

all: build

build: build-deps
	@mkdir -p bin
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/emberd ./daemon/cmd/emberd
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ember ./daemon/cmd/ember
	$(GO) build -o bin/example-worker ./examples/worker
	CGO_ENABLED=0 $(GO) build -ldflags "-s -w" -o bin/ember-init ./daemon/cmd/ember-init
	$(GO) build -ldflags "-s -w" -o bin/ember-ckpt ./daemon/cmd/ember-ckpt

# System packages. Building emberd needs libseccomp-dev and pkg-config (the
# container runtime's seccomp support); the tests also need Node.js + npm to
# run the real runpod-sdk client.
APT_PKGS := libseccomp-dev pkg-config
build-deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi

# The packaging tests query the .rpm with rpm and check the unit with
# systemd-analyze (package systemd); they build the packages with nfpm, and
# boot a Debian rootfs (debootstrap) under systemd-nspawn (systemd-container)
# to run the .deb under a real systemd.
# The web console test (tests/console_test.go) drives Debian's chromium with
# playwright-core from tests/console (no browser download).
TEST_APT_PKGS := rpm debootstrap systemd-container
# The web console's browser test drives Debian's Chromium (tests/console);
# fonts-liberation, only recommended by chromium, gives its pages and
# screenshots readable text.
BROWSER_APT_PKGS := chromium fonts-liberation
deps: build-deps nfpm
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; fi
	@missing=$$(for p in $(TEST_APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi
	@if [ ! -d tests/compat/node_modules/runpod-sdk ]; then \
		cd tests/compat && npm ci --no-audit --no-fund; fi
	@missing=$$(for p in $(BROWSER_APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi
	@if [ ! -d tests/console/node_modules/playwright-core ]; then \
		cd tests/console && npm ci --no-audit --no-fund; fi

# nfpm, pinned, into .tools/bin (like the protobuf tools in scripts/proto.sh):
# installed when missing or built from another version.
NFPM_VERSION := v2.45.2
nfpm:
	@have=$$(test -x .tools/bin/nfpm && $(GO) version -m .tools/bin/nfpm | awk '$$1 == "mod" { print $$3; exit }'); \
	if [ "$$have" != "$(NFPM_VERSION)" ]; then \
		echo "installing github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) into .tools/bin" >&2; \
		GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION); fi

# The .deb and .rpm (see packaging/README.md): PKG_DIR/ember_PKG_VERSION_amd64.deb
# and PKG_DIR/ember-PKG_VERSION.x86_64.rpm. PKG_VERSION comes from VERSION (git
# describe): v1.2.3 gives 1.2.3, v1.2.3-4-gabc1234-dirty 1.2.3+4.gabc1234.dirty,
# an untagged abc1234-dirty 0.0.0+abc1234.dirty (deb wants a digit first, rpm
# no "-"). The binaries are built into bin/ as by `make build`, but without
# the symbol table, DWARF and build paths (-s -w -trimpath: a third of their
# size; panics still name functions and lines); completions and man pages are
# generated into PKG_DIR/.stage.
PKG_DIR ?= dist
PKG_VERSION ?= $(shell printf '%s\n' '$(VERSION)' | sed -e 's/^v//' -e '/^[0-9][0-9]*\.[0-9]/!{s/-/./g;s/^/0.0.0+/;}' -e 's/-/+/' -e 's/-/./g')
PKG_STAGE = $(PKG_DIR)/.stage
package: build-deps nfpm
	@mkdir -p bin $(PKG_STAGE)
	$(GO) build -trimpath -tags $(TAGS) -ldflags "-s -w $(LDFLAGS)" -o bin/emberd ./daemon/cmd/emberd
	$(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/ember ./daemon/cmd/ember
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/ember-init ./daemon/cmd/ember-init
	$(GO) build -trimpath -ldflags "-s -w" -o bin/ember-ckpt ./daemon/cmd/ember-ckpt
	bin/ember completion bash > $(PKG_STAGE)/ember.bash
	bin/ember completion zsh > $(PKG_STAGE)/_ember
	bin/ember completion fish > $(PKG_STAGE)/ember.fish
	gzip -9n < packaging/emberd.8 > $(PKG_STAGE)/emberd.8.gz
	gzip -9n < packaging/ember.1 > $(PKG_STAGE)/ember.1.gz
	EMBER_PKG_VERSION='$(PKG_VERSION)' EMBER_STAGE='$(PKG_STAGE)' .tools/bin/nfpm package \
		--config packaging/nfpm.yaml --packager deb --target $(PKG_DIR)/ember_$(PKG_VERSION)_amd64.deb
	EMBER_PKG_VERSION='$(PKG_VERSION)' EMBER_STAGE='$(PKG_STAGE)' .tools/bin/nfpm package \
		--config packaging/nfpm.yaml --packager rpm --target $(PKG_DIR)/ember-$(PKG_VERSION).x86_64.rpm

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
# runpod-sdk, the web console in headless Chromium), crash safety, then a
# short run of every fuzz target. EMBER_REQUIRE_BROWSER=1: the console test
# fails, instead of skipping, without the browser that deps installs.
test: deps proto-check fmt-check vet build
	EMBER_REQUIRE_BROWSER=1 $(GO) test -race -count=1 -timeout 15m -tags $(TAGS) ./...
	$(MAKE) fuzz-short

fuzz-short:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSubmission$$' -fuzztime $(FUZZTIME) ./daemon/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzParseResult$$' -fuzztime $(FUZZTIME) ./daemon/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzParseChunk$$' -fuzztime $(FUZZTIME) ./daemon/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzRunPodRESTInput$$' -fuzztime $(FUZZTIME) ./daemon/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./daemon/config

fuzz:
	$(MAKE) fuzz-short FUZZTIME=5000000x

# Performance figures with same-run baselines (see README).
bench: build
	$(GO) run -tags $(TAGS) ./tests/bench -emberd bin/emberd -worker bin/example-worker
	$(GO) run -tags $(TAGS) ./tests/bench -emberd bin/emberd -worker bin/example-worker -only stream
	$(GO) run -tags $(TAGS) ./tests/bench -emberd bin/emberd -worker bin/example-worker -only conns
	$(GO) run -tags $(TAGS) ./tests/bench -emberd bin/emberd -worker bin/example-worker -only tls
	@echo "# autoscaler decision, 50 endpoints sharing 8 GPUs (all held, jobs queued everywhere)"
	$(GO) test -run '^$$' -bench ScaleDecision -benchtime 200000x ./scheduler/
	@echo "# durable store commits of 500 B jobs, with the disk-space rules and without (same run, alternating)"
	$(GO) test -run '^$$' -bench CommitJob -benchtime 6000x ./scheduler/store/
	@echo "# rate limiter per request: Allow+release against no limits, and GET /v2/{ep}/status/{id} through the handler without and with the limiter (same run)"
	$(GO) test -run '^$$' -bench Allow -benchtime 1000000x ./daemon/ratelimit/
	$(GO) test -run '^$$' -bench StatusPath -benchtime 100000x -count 3 ./daemon/httpapi/
	@echo "# a console session on a request: GET /v1/keys with the key in Authorization against the session cookie and CSRF token (same run)"
	$(GO) test -run '^$$' -bench SessionAuth -benchtime 100000x -count 3 ./daemon/httpapi/
	@echo "# what the scheduler records per job: the stats as they were (same-run baseline) against them plus the /metrics histograms, the console's chart history and the recent-jobs ring"
	$(GO) test -run '^$$' -bench JobRecording -benchtime 1000000x -count 3 ./scheduler/
	@echo "# GPU parking, Ember's own overhead (fake CUDA driver, fake runtime): park and revival of an idle GPU worker against FlashBoot freeze and thaw and a cold start (same run, medians)"
	$(GO) test -run '^$$' -bench ParkRevive -benchtime 200x ./scheduler/
	@echo "# a CUDA checkpoint call through the ember-ckpt helper process against the same call in emberd's process, on a fake libcuda (same run, medians); and the helper's first call (its start) against an in-process first call"
	EMBER_BENCH_CKPT=$(CURDIR)/bin/ember-ckpt $(GO) test -run '^$$' -bench HelperCall -benchtime 2000x ./oci/cudackpt/
	EMBER_BENCH_CKPT=$(CURDIR)/bin/ember-ckpt $(GO) test -run '^$$' -bench HelperStart -benchtime 100x ./oci/cudackpt/
	@echo "# emberd shutdown with 8 idle SDK-like workers (default --stop-hold 20s); EMBER_BASELINE_EMBERD=PATH adds a baseline build in the same run"
	EMBER_BENCH_EMBERD=$(CURDIR)/bin/emberd $(GO) test -tags $(TAGS) -run '^$$' -bench StopShutdown -benchtime 1x ./tests/

# The GPU suite (tests/gpu, see README "GPUs"): needs root, an NVIDIA GPU,
# nvidia-smi and nvcc; it skips, saying why, without them. gpu-test-build
# makes everything it runs into bin/, for a GPU machine without Go.
gpu-test-build: build
	CGO_ENABLED=0 $(GO) build -o bin/gpuworker ./tests/gpu/gpuworker
	CGO_ENABLED=0 $(GO) build -o bin/mkimage ./examples/worker/mkimage
	$(GO) test -c -o bin/gpu.test ./tests/gpu

gpu-test: gpu-test-build
	cd tests/gpu && EMBER_GPU_TEST=1 EMBER_GPU_BIN=$(CURDIR)/bin ../../bin/gpu.test -test.v -test.count=1 -test.timeout 30m

# Long crash/soak loops are kept out of `make test`.
soak: build
	$(GO) test -count=10 -timeout 60m -run 'TestCrash' -v ./tests/

# Starts emberd on its default data dir with a demo endpoint whose worker
# is the example worker, and prints a curl line to try it.
run: build
	bash scripts/run.sh

clean:
	rm -rf bin dist
