# Latchkey — run `make help` for the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

BIN       := $(CURDIR)/.tmp/bin
export PATH := $(BIN):$(PATH)
GO        ?= go
TOOLS_MOD := scripts/tools
TEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install system packages the tests need (chromium, redis-server, nats-server) when absent
	bash scripts/install-deps.sh

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/grpc-health-probe $(BIN)/nats-server $(BIN)/nats $(BIN)/jaeger ## Install pinned tools into .tmp/bin

$(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/grpc-health-probe: $(TOOLS_MOD)/go.mod $(TOOLS_MOD)/go.sum
	@mkdir -p $(BIN)
	cd $(TOOLS_MOD) && GOBIN=$(BIN) $(GO) install \
		github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		github.com/fullstorydev/grpcurl/cmd/grpcurl \
		github.com/grpc-ecosystem/grpc-health-probe
	@touch $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/grpc-health-probe

# nats-server at the version go.mod embeds, for the chaos suite's 3-node cluster (a
# distribution's nats-server is often older than the 2.11 Latchkey needs).
$(BIN)/nats-server: $(TOOLS_MOD)/go.mod $(TOOLS_MOD)/go.sum
	@mkdir -p $(BIN)
	cd $(TOOLS_MOD) && GOBIN=$(BIN) $(GO) install github.com/nats-io/nats-server/v2
	@touch $@

# The plain nats CLI, for the tests (and docs/clients.md) that publish run requests as
# any NATS client would.
$(BIN)/nats: $(TOOLS_MOD)/go.mod $(TOOLS_MOD)/go.sum
	@mkdir -p $(BIN)
	cd $(TOOLS_MOD) && GOBIN=$(BIN) $(GO) install github.com/nats-io/natscli/nats
	@touch $@

# Jaeger v2 (memory storage, OTLP in), for the test that follows a Run into a real
# Jaeger and for `DEMO_JAEGER=1 make demo`. Its own module: Jaeger pins collector and
# Kubernetes versions the other tools must not be dragged to, and `go install pkg@v`
# refuses its replace directives. Built from the module proxy, so without the UI's
# assets (the query API and `latchkey runs trace` work; the web UI is a placeholder).
$(BIN)/jaeger: $(TOOLS_MOD)/jaeger/go.mod $(TOOLS_MOD)/jaeger/go.sum
	@mkdir -p $(BIN)
	cd $(TOOLS_MOD)/jaeger && GOWORK=off GOBIN=$(BIN) $(GO) install github.com/jaegertracing/jaeger/cmd/jaeger
	@touch $@

.PHONY: build
build: ## Build the latchkey binary (and the demo portal) into .tmp/bin
	$(GO) build -o $(BIN)/latchkey ./cmd/latchkey
	$(GO) build -o $(BIN)/portal ./examples/portal/cmd/portal

.PHONY: generate
generate: tools ## Regenerate Go code from proto/ (offline, local plugins)
	rm -rf libs/gen
	buf generate

.PHONY: ts-client
ts-client: tools ## Regenerate the TypeScript client from proto/latchkey/v1 and build it (npm ci, buf, tsc)
	cd clients/typescript && npm ci --no-audit --no-fund
	rm -rf clients/typescript/src/gen
	buf generate --template buf.gen.ts.yaml --path proto/latchkey/v1
	cd clients/typescript && npm run build

.PHONY: checkgenerate
checkgenerate: generate ts-client ## Fail when the committed generated code (Go and TypeScript) is stale
	@test -z "$$(git status --porcelain -- libs/gen)" || { echo "libs/gen is stale: run 'make generate' and commit"; git status --porcelain -- libs/gen; exit 1; }
	@test -z "$$(git status --porcelain -- clients/typescript/src/gen)" || { echo "clients/typescript/src/gen is stale: run 'make ts-client' and commit"; git status --porcelain -- clients/typescript/src/gen; exit 1; }

.PHONY: lint
lint: tools ## buf lint, gofmt, go vet, docker-compose.yml against the Compose spec, deploy/ against the Kubernetes API, alert rules and dashboard against the exported metrics
	buf lint
	LATCHKEY_INTERNAL_TOKEN=lint-only $(GO) run ./scripts/tools/composecheck docker-compose.yml
	$(GO) run ./scripts/tools/deploycheck deploy/kubernetes/overlays/example
	$(GO) test -count=1 ./scripts/tools/deploycheck
	$(GO) run ./scripts/tools/metricscheck -metrics deploy/prometheus/latchkey-metrics.txt -rules deploy/prometheus/latchkey-alerts.yaml -dashboard deploy/grafana/latchkey-dashboard.json
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^libs/gen/'))" || { echo "gofmt:"; gofmt -l $$(git ls-files '*.go' | grep -v '^libs/gen/'); exit 1; }
	$(GO) vet ./... ./scripts/tools/...
	$(GO) vet -tags chaos ./chaos/

.PHONY: test
test: deps $(BIN)/nats $(BIN)/jaeger ## Run every test against real NATS, Redis, Chromium and the demo portal
	$(GO) test $(TEST_FLAGS) ./...

.PHONY: chaos
chaos: deps ## Kill services under 500 Runs with real processes (3-node NATS cluster, 2 schedulers, 2 runners)
	rm -rf $(CURDIR)/.tmp/chaos && mkdir -p $(CURDIR)/.tmp/chaos
	$(GO) test -tags chaos $(TEST_FLAGS) -v -artifacts -outputdir $(CURDIR)/.tmp/chaos ./chaos/

.PHONY: bench
bench: deps ## Run the benchmarks and print their numbers
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m ./...

.PHONY: demo
demo: deps build tools ## Start the whole stack locally and show it working
	bash scripts/demo.sh

.PHONY: dev
dev: build ## Run `latchkey dev` in the foreground (Ctrl-C stops it)
	$(BIN)/latchkey dev

.PHONY: clean
clean: ## Remove build output and the local data directory
	rm -rf .tmp .data
