# otpgate: `make run` starts the gate in front of a demo app; `make test` runs everything.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run run-tower test deps lint bench check

# Build tools the dependency tree needs (cmake for the C crypto and compression crates).
deps:
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
	@command -v cmake >/dev/null || { \
		echo "installing cmake..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake >/dev/null; } \
		|| { echo "error: cmake is missing and could not be installed" >&2; exit 1; }
	@command -v cmake >/dev/null || { echo "error: cmake is missing" >&2; exit 1; }

# The demo app on :3000 with the otpgate proxy in front on :8080, default config:
# console delivery (codes are printed here), memory store, a key generated at start.
run: deps
	./scripts/demo.sh

# The same app built into axum with the tower layer instead of the proxy.
run-tower: deps
	$(CARGO) run --example axum_app

# Everything: formatting, lints, unit, integration, doc tests, and one pass of each
# benchmark as a smoke test.
test: deps lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Criterion benchmarks (release build); reports land in target/criterion.
bench: deps
	$(CARGO) bench --bench engine --bench tokens

# Check config/otpgate.toml.
check: deps
	$(CARGO) run --quiet --bin otpgate -- check --config config/otpgate.toml
