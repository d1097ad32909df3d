#!/usr/bin/env bash
# Runs every test of the project. On a fresh Debian machine (as root) it first installs what
# the tests need. Under CI=true, tests that need root or a daemon must run, never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

install_packages "${TEST_PACKAGES[@]}"
install_python_packages "${TEST_PYTHON_PACKAGES[@]}"

export RUST_BACKTRACE=1

echo "== Formatting, lints, dependency policy, fuzz targets" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
install_cargo_deny
# Every target's dependencies, so that the policy check reads them without the network.
cargo fetch --locked --quiet
"$CARGO_DENY" --offline --log-level error check bans licenses sources
# The fuzz targets are a workspace of their own: check that they still build.
cargo check --quiet --locked --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check --bins

start_ovs
start_opensearch
mount_cgroups
trap 'stop_ovs; stop_opensearch' EXIT

echo "== Rust tests" >&2
cargo test --workspace --locked --no-fail-fast "$@"

echo "== Python tests: skydive-client (PyPI) against skydive allinone; the web UI in headless Chromium" >&2
cargo build --locked -p skydive
SKYDIVE_BIN="$PWD/target/debug/skydive" "$PYTHON_VENV/bin/python" -m pytest -q tests/python
