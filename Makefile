# meshsds developer tasks. `make test` is what CI runs.
GO        ?= go
BIN       ?= bin/meshsds
GOFUMPT   := mvdan.cc/gofumpt@v0.12.0
STATICCHK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME  ?= 20s

.PHONY: all build test e2e tools fmt lint fuzz bench run example-ca token docker clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/meshsds

## test: every test, with the race detector (what CI runs).
test: tools
	$(GO) test -race -count=1 ./...

## e2e: only the end-to-end tests against the built binary.
e2e: tools
	$(GO) test -race -count=1 ./test/e2e/...

## tools: test tools built from the Go module proxy into .tools (git-ignored).
tools: .tools/grpcurl

.tools/grpcurl:
	GOBIN=$(CURDIR)/.tools $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4

fmt:
	$(GO) run $(GOFUMPT) -w $$(git ls-files '*.go')

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHK) ./...
	@test -z "$$($(GO) run $(GOFUMPT) -l $$(git ls-files '*.go'))" || { echo "gofumpt would reformat the files above; run make fmt"; exit 1; }

## fuzz: run every fuzz target briefly (FUZZTIME each).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: Go benchmarks of the hot paths.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

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
