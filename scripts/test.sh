#!/usr/bin/env bash
# The whole test suite, on a fresh machine that has only the Rust toolchain,
# Python 3 and Node: installs what the tests need (idempotently), checks that
# it starts, then runs the format check, clippy with -D warnings and every
# test. Tests start their own Redis and DynamoDB API (moto) servers on
# loopback ports, and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
services="$root/.test-services"
mkdir -p "$services"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

step() { printf '\n== %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  step "installing redis-server (Debian package)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi
export ORIGIN_ROUTER_REDIS_SERVER="${ORIGIN_ROUTER_REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}"

# The dashboard's browser tests drive headless Chromium (Debian package).
if ! command -v chromium >/dev/null 2>&1; then
  step "installing chromium (Debian package) for the dashboard's browser tests"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# promtool checks and unit-tests the Prometheus alerting rules in
# deploy/prometheus/ (Debian package prometheus; its service is not started).
if ! command -v promtool >/dev/null 2>&1; then
  step "installing prometheus (Debian package) for promtool"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# libfaketime fakes one process's wall clock (LD_PRELOAD) for the clock
# tests: a worker whose clock is off, the stores' own clocks (Debian
# package faketime).
if ! command -v faketime >/dev/null 2>&1; then
  step "installing faketime (Debian package) for the clock tests"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends faketime >/dev/null
fi
export ORIGIN_ROUTER_LIBFAKETIME="${ORIGIN_ROUTER_LIBFAKETIME:-$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\.so\.1$' || echo /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1)}"

if [ ! -x "$services/venv/bin/moto_server" ]; then
  step "installing moto[server] (PyPI) into .test-services/venv"
  rm -rf "$services/venv"
  python3 -m venv "$services/venv"
  "$services/venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
export ORIGIN_ROUTER_MOTO_SERVER="${ORIGIN_ROUTER_MOTO_SERVER:-$services/venv/bin/moto_server}"

if [ ! -x "$services/venv/bin/cfn-lint" ]; then
  step "installing cfn-lint (PyPI) into .test-services/venv"
  "$services/venv/bin/pip" install -q --disable-pip-version-check cfn-lint
fi

# terser minifies the CloudFront Function's runtime (a function may hold
# 10 KB of code); a test checks the committed runtime.min.js is its output.
if [ ! -x "$services/node/node_modules/.bin/terser" ]; then
  step "installing terser (npm) into .test-services/node"
  npm install --silent --no-audit --no-fund --prefix "$services/node" terser@5.51.4 >/dev/null
fi
export ORIGIN_ROUTER_TERSER="${ORIGIN_ROUTER_TERSER:-$services/node/node_modules/.bin/terser}"

step "checking that the services start"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ORIGIN_ROUTER_REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
for _ in $(seq 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.1
done
kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
echo "redis-server: $("$ORIGIN_ROUTER_REDIS_SERVER" --version | cut -d' ' -f1-3)"
echo "moto_server: $("$services/venv/bin/python" -c 'import moto; print(moto.__version__)')"
echo "cfn-lint: $("$services/venv/bin/cfn-lint" --version)"
echo "node: $(node --version)"
echo "terser: $("$ORIGIN_ROUTER_TERSER" --version)"
echo "promtool: $(promtool --version 2>&1 | head -1)"
echo "chromium: $(chromium --version 2>/dev/null | head -1)"
echo "libfaketime: $ORIGIN_ROUTER_LIBFAKETIME ($(dpkg-query -W -f='${Version}' libfaketime 2>/dev/null))"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "unused dependencies (cargo machete)"
# Declared but unused dependencies slow every build and widen what ships;
# cargo-machete reads the sources and names each one.
if ! command -v cargo-machete >/dev/null 2>&1; then
  step "installing cargo-machete (crates.io)"
  cargo install --locked --quiet cargo-machete
fi
cargo machete

step "cargo doc --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "cfn-lint deploy/"
templates=$(find deploy -name '*.yaml' -print 2>/dev/null | sort)
if [ -n "$templates" ]; then
  # shellcheck disable=SC2086
  "$services/venv/bin/cfn-lint" $templates
  echo "lint-clean: $(echo "$templates" | wc -l) templates"
fi

step "promtool: Prometheus alerting rules (deploy/prometheus/)"
promtool check rules deploy/prometheus/rules.yml
(cd deploy/prometheus && promtool test rules rules.test.yml)

step "building the binaries the end-to-end tests run"
cargo build --workspace --bins

step "cargo test"
log=$(mktemp)
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary,
# the last of which is usually a crate's empty doc-test run).
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
exit "$status"
