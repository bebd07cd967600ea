# facegate: `make run` serves, `make test` tests. Both fetch what is missing first.
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= ./data

.PHONY: all setup build run test lint fmt bench clean-data

all: build

# ONNX Runtime and the default model pack, pinned and hash-checked, into .facegate/.
setup:
	@bash scripts/setup

build: setup
	$(CARGO) build --release --locked -p facegate

run: build
	./target/release/facegate serve --sandbox --listen $(LISTEN) --data-dir $(DATA_DIR)

# Release profile: the tests run real models on real photos, and the build is shared with `make run`.
test: setup
	@bash scripts/setup-test-tools
	$(CARGO) test --release --locked --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
