# Standby build targets. `make help` lists them.
GO ?= go
BIN := bin/standby

.PHONY: help build test bench bench-capture bench-replication bench-control bench-recovery demo fuzz soak clean
help:
	@echo "build          build $(BIN)"
	@echo "test           the whole test suite (installs Debian test packages if missing)"
	@echo "demo           run 'standby demo'"
	@echo "bench          every benchmark (BENCH lines)"
	@echo "bench-capture  fio through the agent vs qemu-nbd and nbdkit"
	@echo "bench-replication  agent, process server and master target vs rsync and restic"
	@echo "bench-control  1,000 simulated agents against one configuration server"
	@echo "bench-recovery test failover (1 GiB, 64 GiB sparse), failover, hydration and re-protect"
	@echo "fuzz           run each fuzz target for FUZZTIME (default 30s)"
	@echo "soak           SIGKILL trials of agent, process server and master target (SOAK_TRIALS, default 300)"

build:
	$(GO) build -o $(BIN) ./cmd/standby

test:
	./scripts/test.sh

demo: build
	./$(BIN) demo

bench: bench-capture bench-replication bench-control bench-recovery

bench-capture: build
	./scripts/bench-capture.sh

bench-replication: build
	./scripts/bench-replication.sh

bench-control: build
	./scripts/bench-control.sh

bench-recovery: build
	./scripts/bench-recovery.sh

FUZZTIME ?= 30s
fuzz:
	$(GO) test ./internal/journal -run '^$$' -fuzz FuzzReader -fuzztime $(FUZZTIME)
	$(GO) test ./internal/nbd -run '^$$' -fuzz FuzzOptionHaggling -fuzztime $(FUZZTIME)
	$(GO) test ./internal/nbd -run '^$$' -fuzz FuzzTransmission -fuzztime $(FUZZTIME)
	$(GO) test ./internal/segpack -run '^$$' -fuzz FuzzUnpack -fuzztime $(FUZZTIME)
	$(GO) test ./internal/api -run '^$$' -fuzz FuzzHandlers -fuzztime $(FUZZTIME)

SOAK_TRIALS ?= 300
soak:
	STANDBY_SOAK_TRIALS=$(SOAK_TRIALS) $(GO) test -count=1 -timeout 60m -run TestReplicationSurvivesSIGKILL -v ./cmd/standby

clean:
	rm -rf bin
