# Standby build targets. `make help` lists them.
GO ?= go
BIN := bin/standby

.PHONY: help build test bench bench-capture demo fuzz clean
help:
	@echo "build          build $(BIN)"
	@echo "test           the whole test suite (installs Debian test packages if missing)"
	@echo "demo           run 'standby demo'"
	@echo "bench          every benchmark (BENCH lines)"
	@echo "bench-capture  fio through the agent vs qemu-nbd and nbdkit"
	@echo "fuzz           run each fuzz target for FUZZTIME (default 30s)"

build:
	$(GO) build -o $(BIN) ./cmd/standby

test:
	./scripts/test.sh

demo: build
	./$(BIN) demo

bench: bench-capture

bench-capture: build
	./scripts/bench-capture.sh

FUZZTIME ?= 30s
fuzz:
	$(GO) test ./internal/journal -run '^$$' -fuzz FuzzReader -fuzztime $(FUZZTIME)
	$(GO) test ./internal/nbd -run '^$$' -fuzz FuzzOptionHaggling -fuzztime $(FUZZTIME)
	$(GO) test ./internal/nbd -run '^$$' -fuzz FuzzTransmission -fuzztime $(FUZZTIME)

clean:
	rm -rf bin
