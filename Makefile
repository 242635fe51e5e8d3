# crosscam: two commands do everything on a fresh Debian 12 machine.
#   make demo   set up, build, and run the demo (config/demo.toml) until Ctrl-C
#   make test   set up, then run every check: format, lints, unit and integration tests
CARGO ?= cargo

.PHONY: setup build demo test lint fmt bench doctor

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release

demo: build
	./target/release/crosscam demo --config config/demo.toml

doctor: build
	./target/release/crosscam doctor

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: setup lint
	$(CARGO) test --all-targets -- --test-threads=2
