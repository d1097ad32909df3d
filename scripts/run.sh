#!/usr/bin/env bash
# Builds and starts `skydive allinone` (analyzer + agent, embedded storage, web UI) with the
# default configuration, or the configuration files given with -c. As root on a fresh Debian
# machine it first installs the system packages the build needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh

install_packages "${BUILD_PACKAGES[@]}"
cargo build --release --locked -p skydive
exec target/release/skydive "$@" allinone
