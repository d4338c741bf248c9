# agentlab's tasks. Nothing here installs anything outside this folder: the
# protoc plugins go to ./bin, Go modules to Go's own cache.

GO      ?= go
BIN     := $(CURDIR)/bin
FUZZTIME ?= 3s
BENCHTIME ?= 1s

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: all build test race-test fuzz demo bench proto lint clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The tests CI runs: vet, every package under the race detector (end-to-end
# tests build the real binaries once), then each fuzz target briefly.
test: lint
	$(GO) test -race -count=1 -timeout 9m ./...
	$(MAKE) --no-print-directory fuzz

# Every fuzz target for FUZZTIME each, through scripts/fuzz.sh (one target
# at a time; it retries only Go 1.26's fuzz deadline race, golang/go#75804).
FUZZ_TARGETS := \
	./cmdline:FuzzParse \
	./notice:FuzzParse \
	./conf:FuzzParse \
	./conf:FuzzParseSmHost \
	./conf:FuzzParseWebAgent \
	./tli:FuzzReadFrame \
	./tli:FuzzServerHandshake \
	./tli:FuzzParseKeyLog \
	./wireshark:FuzzDissector \
	./policyserver:FuzzParseStore \
	./fault:FuzzParseControl \
	./lab:FuzzParseFaults \
	./trace:FuzzParseHosts \
	./narrative:FuzzNarrate \
	./pcapng:FuzzWritePcapng \
	./procmon:FuzzParseCondition

fuzz:
	@GO=$(GO) sh scripts/fuzz.sh $(FUZZTIME) $(FUZZ_TARGETS)

# The main job: the default lab, embedded in the binary.
demo: build
	$(BIN)/agentlab run

# Every benchmark. The headline figures (docs/performance.md) come from
# BenchmarkTLIRatios, BenchmarkHTTP and BenchmarkColdStartIIS, each of which
# measures its baseline in the same run.
bench:
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) ./...

# Regenerates proto/*.pb.go (committed). Needs protoc from Debian's
# protobuf-compiler package; the Go plugins are built into ./bin.
proto: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	protoc --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc \
		--go_out=. --go_opt=module=github.com/agentlab/agentlab \
		--go-grpc_out=. --go-grpc_opt=module=github.com/agentlab/agentlab \
		proto/*.proto

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
