# facegate: `make run` serves, `make test` tests. Both fetch what is missing first.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= ./data
# Model pack by name (`facegate packs` lists them): `make run PACK=yunet_sface` for the
# licence-clean one. Empty: the binary's default, or FACEGATE_PACK when set.
PACK ?=

.PHONY: all setup build run test lint fmt bench clean-data

all: build

# ONNX Runtime and both model packs, pinned and hash-checked, into .facegate/.
setup:
	@bash scripts/setup

build: setup
	$(CARGO) build --release --locked -p facegate

run: build
	./target/release/facegate serve --sandbox --listen $(LISTEN) --data-dir $(DATA_DIR) $(if $(PACK),--pack $(PACK))

# Tests that skip (a missing prerequisite: ../shared, the harness Python packages) append a line
# here; the run ends with their list and count. Under CI=true a skip fails its test instead.
SKIP_LOG ?= $(abspath $(or $(CARGO_TARGET_DIR),target))/test-skips.log

# Release profile: the tests run real models on real photos, and the build is shared with `make run`.
# Then the isolation and hostile-input suites run again on PostgreSQL, the committed fuzz
# corpus is replayed through its targets, and the source files are checked for import cycles.
# The status is cargo test's, or that of the first later step that failed.
test: setup
	@bash scripts/setup-test-tools
	@mkdir -p "$(dir $(SKIP_LOG))" && rm -f "$(SKIP_LOG)"
	@echo "$(CARGO) test --release --locked --workspace"; \
	status=0; FACEGATE_SKIP_LOG="$(SKIP_LOG)" $(CARGO) test --release --locked --workspace || status=$$?; \
	FACEGATE_SKIP_LOG="$(SKIP_LOG)" CARGO="$(CARGO)" bash scripts/test-on-postgres || { [ $$status -ne 0 ] || status=1; }; \
	CARGO="$(CARGO)" bash scripts/replay-fuzz-corpus || { [ $$status -ne 0 ] || status=1; }; \
	python3 scripts/check-import-cycles || { [ $$status -ne 0 ] || status=1; }; \
	bash scripts/report-skips "$(SKIP_LOG)"; \
	exit $$status

lint:
	python3 scripts/check-import-cycles
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
