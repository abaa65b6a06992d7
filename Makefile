# kevents: `make run` starts the quickstart on the embedded broker; `make test` runs the tests.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/kevents

.PHONY: all build run test vet fmt-check bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/kevents

## run: the quickstart (webhook EventSource + log Sensor) on the embedded broker
run: build
	./$(BIN) run -f examples/quickstart

## test: vet, gofmt, and every test with the race detector
test: vet fmt-check
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## bench: throughput and latency figures (see docs/benchmarks.md)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -benchmem ./cmd/kevents/
	$(GO) test -run '^$$' -bench 'BenchmarkSensor|BenchmarkRestore' -benchtime 1x ./sensor/
	$(GO) test -run '^$$' -bench BenchmarkExecutor -benchtime 1x ./trigger/
	$(GO) test -run '^$$' -bench 'BenchmarkMatchExprs|BenchmarkScriptFilter|BenchmarkTransform' -benchmem ./sensor/
	$(GO) test -run '^$$' -bench . -benchmem ./internal/cloudevent/

clean:
	rm -rf bin
