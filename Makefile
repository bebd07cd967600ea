# facegate: `make run` serves, `make test` tests. Both fetch what is missing first.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= ./data
# Model pack by name (`facegate packs` lists them): `make run PACK=buffalo_s` for InsightFace's,
# non-commercial only. Empty: the binary's default (yunet_sface), or FACEGATE_PACK when set.
PACK ?=

.PHONY: all setup build run test lint fmt bench clean-data

all: build

# ONNX Runtime and both model packs, pinned and hash-checked, into .facegate/.
setup:
	@bash scripts/setup

build: setup
	$(CARGO) build --release --locked -p facegate

# Prometheus metrics for a local trial, on a loopback port of their own (empty: none).
METRICS_LISTEN ?= 127.0.0.1:9464

run: build
	./target/release/facegate serve --sandbox --listen $(LISTEN) --data-dir $(DATA_DIR) $(if $(PACK),--pack $(PACK)) \
		$(if $(METRICS_LISTEN),--metrics-listen $(METRICS_LISTEN))

# Tests that skip (a missing prerequisite: ../shared, the harness Python packages) append a line
# here; the run ends with their list and count. Under CI=true a skip fails its test instead.
SKIP_LOG ?= $(abspath $(or $(CARGO_TARGET_DIR),target))/test-skips.log

# Release profile: the tests run real models on real photos, and the build is shared with `make run`.
# --no-fail-fast: a failing suite does not keep the others from running. Then the server's HTTP
# suites run again on PostgreSQL, the committed fuzz corpus is replayed through its targets, and
# the source files are checked for import cycles.
# The status is cargo test's, or that of the first later step that failed.
test: setup
	@bash scripts/setup-test-tools
	@mkdir -p "$(dir $(SKIP_LOG))" && rm -f "$(SKIP_LOG)"
	@echo "$(CARGO) test --release --locked --no-fail-fast --workspace"; \
	status=0; FACEGATE_SKIP_LOG="$(SKIP_LOG)" $(CARGO) test --release --locked --no-fail-fast --workspace || status=$$?; \
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

# The speed figures of docs/benchmarks.md, short forms: the face pipeline on the first photo of
# the first 300 LFW people (the pack's three photos when ../shared is absent), and 1:N search
# over 100,000 synthetic templates. `make bench PACK=buffalo_s` for the other pack.
BENCH_PHOTOS = $(shell ls -d ../shared/datasets/lfw/images/*/ 2>/dev/null | head -300 | \
	while read d; do ls "$$d"*_0001.jpg 2>/dev/null; done)
bench: build
	@echo "facegate bench pipeline --rounds 2 $(if $(PACK),--pack $(PACK)) <$(words $(BENCH_PHOTOS)) LFW photos, or the pack's 3>"
	@./target/release/facegate bench pipeline --rounds 2 $(if $(PACK),--pack $(PACK)) \
		$(or $(BENCH_PHOTOS),.facegate/models/buffalo_s/yaoming.jpg .facegate/models/buffalo_s/gdp.jpg .facegate/models/buffalo_s/players.jpg)
	./target/release/facegate bench search --templates 100000 --queries 500 --recall-queries 100

# Deletes the `make run` data directory ($(DATA_DIR)): every tenant, person and face image in it.
# Refused while a server holds it (the directory's lock).
clean-data:
	@if [ -e "$(DATA_DIR)/facegate.lock" ] && ! flock -n "$(DATA_DIR)/facegate.lock" true; then \
		echo "clean-data: a facegate process holds $(DATA_DIR); stop it first" >&2; exit 1; fi
	rm -rf -- "$(DATA_DIR)"
