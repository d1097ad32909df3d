# Shared set-up for the project's scripts: what to install, and how.
# shellcheck shell=bash

# Debian packages the build needs.
BUILD_PACKAGES=(pkg-config libpcap-dev)
# Debian packages the tests need (on top of the build's).
# iproute2 and util-linux (nsenter): namespaces and links; tcpdump, tshark, iperf3, ping: the
# flow engine's cross-check against tshark on recorded traffic.
# pmacct: an sFlow agent (sfprobe) for the sflow capture; openvswitch-switch: a real
# ovsdb-server for the OVSDB client; chromium and chromium-driver: the web UI's browser tests.
# docker.io (dockerd, containerd), runc and busybox-static: the container probes, against a
# dockerd each test starts in a folder of its own and an image imported from busybox.
TEST_PACKAGES=("${BUILD_PACKAGES[@]}" curl libnss3-tools iproute2 util-linux tcpdump tshark iperf3 iputils-ping pmacct openvswitch-switch chromium chromium-driver docker.io runc busybox-static)
# Python packages the tests need: Skydive's Python client, pytest, Selenium (WebDriver
# through Debian's chromedriver; it downloads nothing), and an OpenSearch-compatible server
# (in memory; it bundles its binary) for the Elasticsearch backend: no real Elasticsearch or
# OpenSearch can be installed from the registries these machines reach.
TEST_PYTHON_PACKAGES=(skydive-client==0.10.0 pytest selenium==4.51.0 osmem-server==0.1.6)

# Installs the Debian packages that are missing (needs root; apt-get update only when needed).
install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    return 1
  fi
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The tests' Python environment: a virtual environment of its own under target/, so that
# what the distribution installed (Debian's python3-openssl, say) cannot clash with what pip
# installs.
PYTHON_VENV=${PYTHON_VENV:-$PWD/target/python-venv}

# Creates the virtual environment if needed, and installs the Python packages missing in it.
install_python_packages() {
  if [ ! -x "$PYTHON_VENV/bin/python" ]; then
    if ! python3 -m venv "$PYTHON_VENV" >/dev/null 2>&1; then
      rm -rf "$PYTHON_VENV"
      install_packages python3-venv
      python3 -m venv "$PYTHON_VENV"
    fi
  fi
  [ $# -eq 0 ] && return 0
  local py="$PYTHON_VENV/bin/python" missing=()
  for spec in "$@"; do
    local name=${spec%%[=<>]*} want=""
    [[ $spec == *==* ]] && want=${spec##*==}
    local have
    have=$("$py" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [ -z "$have" ] || { [ -n "$want" ] && [ "$have" != "$want" ]; }; then missing+=("$spec"); fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Python packages: ${missing[*]}" >&2
  "$py" -m pip install -q "${missing[@]}"
}

# The dependency-policy checker, built once into target/tools (crates.io is the only source
# of it this machine reaches; pinned, and built with its own lock file).
CARGO_DENY_VERSION=0.20.2
CARGO_DENY="$PWD/target/tools/bin/cargo-deny"

install_cargo_deny() {
  if [ -x "$CARGO_DENY" ] && "$CARGO_DENY" --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
    return 0
  fi
  echo "building cargo-deny $CARGO_DENY_VERSION (once, into target/tools)" >&2
  cargo install --quiet --locked --root "$PWD/target/tools" "cargo-deny@$CARGO_DENY_VERSION"
}

# Starts Open vSwitch (ovsdb-server and ovs-vswitchd, userspace datapath) unless one answers
# already; sets OVS_STARTED when this script started it. A socket file alone proves nothing: a
# machine image can keep /var/run/openvswitch/db.sock from a server that no longer runs.
start_ovs() {
  ovs-vsctl --timeout=5 show >/dev/null 2>&1 && return 0
  if [ -e /var/run/openvswitch/db.sock ]; then
    echo "removing a stale Open vSwitch socket (no server answers on it)" >&2
    rm -f /var/run/openvswitch/db.sock
  fi
  if /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 \
    && ovs-vsctl --timeout=10 show >/dev/null 2>&1; then
    OVS_STARTED=1
  else
    echo "Open vSwitch did not start; the OVS tests will fail (under CI) or skip" >&2
  fi
}

stop_ovs() {
  [ -n "${OVS_STARTED:-}" ] && /usr/share/openvswitch/scripts/ovs-ctl stop >/dev/null 2>&1 || true
}

# Container runtimes (dockerd, runc) need the cgroup hierarchies. A machine that has none
# mounted (a chroot whose /sys is bound without its submounts, say) gets them mounted as
# Debian's cgroupfs-mount does: a tmpfs on /sys/fs/cgroup, then each enabled controller.
mount_cgroups() {
  [ "$(id -u)" -eq 0 ] || return 0
  awk '$2 ~ "^/sys/fs/cgroup" && ($3 == "cgroup" || $3 == "cgroup2") { found = 1 } END { exit !found }' /proc/self/mounts && return 0
  [ -d /sys/fs/cgroup ] && [ -e /proc/cgroups ] || return 0
  echo "mounting the cgroup hierarchies (none are mounted)" >&2
  mountpoint -q /sys/fs/cgroup || mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup
  local ss
  for ss in $(awk '!/^#/ { if ($4 == 1) print $1 }' /proc/cgroups); do
    mkdir -p "/sys/fs/cgroup/$ss"
    mountpoint -q "/sys/fs/cgroup/$ss" || mount -n -t cgroup -o "$ss" cgroup "/sys/fs/cgroup/$ss" || rmdir "/sys/fs/cgroup/$ss" || true
  done
}

# Starts the OpenSearch-compatible test server on a free port of 127.0.0.1 and exports its
# URL as SKYDIVE_TEST_OPENSEARCH (the storage tests run the Elasticsearch backend against it).
start_opensearch() {
  local bin port
  bin=$("$PYTHON_VENV/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())')
  port=$("$PYTHON_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin" -addr "127.0.0.1:$port" -no-stdin-watch -no-ja >/dev/null 2>&1 &
  OPENSEARCH_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  export SKYDIVE_TEST_OPENSEARCH="http://127.0.0.1:$port"
}

stop_opensearch() {
  [ -n "${OPENSEARCH_PID:-}" ] && kill "$OPENSEARCH_PID" 2>/dev/null || true
}
