GO ?= go
PROTOC ?= protoc
BIN := bin/writ
FUZZTIME ?= 10s

.PHONY: all build test test-postgres bench fuzz proto vet clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/writ

vet:
	$(GO) vet ./...

# Runs the whole suite. Tests that need PostgreSQL run when
# WRIT_TEST_POSTGRES_DSN is set (see scripts/pg-test-cluster.sh and
# `make test-postgres`) and skip with a message otherwise.
test: vet
	$(GO) test -race -count=1 ./...

# Starts a throwaway PostgreSQL cluster, runs the whole suite against it, stops it.
test-postgres:
	bash scripts/with-postgres.sh $(MAKE) test

bench:
	bash scripts/bench.sh

# Short runs of every fuzz target.
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" $(PROTOC) --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative api/writ/v1/writ.proto

clean:
	rm -rf bin
