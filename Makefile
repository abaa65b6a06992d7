# kevents: `make run` starts the quickstart on the embedded broker; `make test` runs the tests.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/kevents

# The kube-apiserver and kubectl the Kubernetes tests run, built once from hack/kube into a cache
# outside git; etcd comes from Debian. Tests skip without them, and fail with KEVENTS_REQUIRE_KUBE.
KUBE_VERSION := v1.37.1
KUBE_ASSETS  ?= $(or $(KEVENTS_KUBE_ASSETS),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kevents/kube)
KUBE_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION)

# The MinIO server the minio source's tests run, built once from hack/minio into a cache outside
# git. Tests skip without it, and fail with KEVENTS_REQUIRE_SERVERS.
MINIO_DIR ?= $(or $(KEVENTS_MINIO_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kevents/minio)

.PHONY: all build run test test-containers vet fmt-check bench clean kube minio test-servers

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/kevents

## run: the quickstart (webhook EventSource + log Sensor) on the embedded broker
run: build
	./$(BIN) run -f examples/quickstart

## test: vet, gofmt, and every test with the race detector
test: vet fmt-check
	$(GO) test -race -count=1 ./...

## test-containers: the end-to-end suite against a real Kafka in a container (needs Docker)
test-containers:
	cd testcontainers && $(GO) test -count=1 -v ./...

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
	$(GO) test -run '^$$' -bench 'BenchmarkWebhookIngest|BenchmarkKafkaSource' -benchtime 1x ./source/
	$(GO) test -run '^$$' -bench 'BenchmarkMatchExprs|BenchmarkScriptFilter|BenchmarkTransform' -benchmem ./sensor/
	$(GO) test -run '^$$' -bench . -benchmem ./internal/cloudevent/

## test-servers: everything the tests start that Go code cannot: kube and minio (below) and Debian's
## etcd-server, redis-server and rabbitmq-server. Tests skip without them unless KEVENTS_REQUIRE_* is
## set (CI).
test-servers: kube minio
	@missing=""; for p in etcd:etcd-server redis-server:redis-server rabbitmq-server:rabbitmq-server; do \
		command -v $${p%%:*} >/dev/null || missing="$$missing $${p#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q $$missing >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null; }; \
	fi
	@command -v etcd >/dev/null && command -v redis-server >/dev/null && \
		command -v rabbitmq-server >/dev/null && echo "test servers ready"

## kube: build kube-apiserver and kubectl for the tests (about 7 minutes, once)
kube: $(KUBE_ASSETS)/kube-apiserver $(KUBE_ASSETS)/kubectl

$(KUBE_ASSETS)/kube-apiserver $(KUBE_ASSETS)/kubectl &: hack/kube/go.mod hack/kube/go.sum
	mkdir -p $(KUBE_ASSETS)
	cd hack/kube && $(GO) build -trimpath -ldflags "$(KUBE_LDFLAGS)" -o $(KUBE_ASSETS)/ \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	touch $(KUBE_ASSETS)/kube-apiserver $(KUBE_ASSETS)/kubectl

## minio: build the MinIO server for the minio source's tests (about 3 minutes, once)
minio: $(MINIO_DIR)/minio

$(MINIO_DIR)/minio: hack/minio/go.mod hack/minio/go.sum
	mkdir -p $(MINIO_DIR)
	cd hack/minio && $(GO) build -trimpath -ldflags "-s -w" -o $(MINIO_DIR)/minio github.com/minio/minio
	touch $@

clean:
	rm -rf bin
