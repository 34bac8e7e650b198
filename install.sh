#!/usr/bin/env bash
# Quick start, step 1: installs everything the project needs into .venv (Debian packages when
# run as root on Debian, the Python dependencies, the Cython build), then runs the main job: a
# two-node lab cluster in network namespaces with our dataplane on every node, real traffic
# between pods, Services and the outside, a table of what happened, then teardown. Without root
# (no namespaces) it replays the packaged capture instead. Idempotent: re-running rebuilds only
# what changed. `./install.sh --no-demo` skips the demo.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

debian_packages() {
    # iproute2: namespaces, veths and taps for the live dataplane and its lab; ethtool: veth
    # offloads; iptables/nftables: the kernel baselines of the benchmarks; gcc: the Cython build;
    # clang: the ASan / fuzzing build (DATAPLANE_ASAN=1, DATAPLANE_FUZZ=1).
    local want=(iproute2 ethtool iptables nftables procps gcc clang)
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
    "$PYTHON" - <<'PY' 2>/dev/null || want+=(python3-dev)
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
PY
    local missing=()
    for pkg in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "install: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    debian_packages
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" wheel Cython numpy  # also for in-place rebuilds
.venv/bin/python -m pip install -q -e '.[test]'
echo "install: done (.venv/bin/dataplane)"

if [ "${1:-}" != "--no-demo" ]; then
    if [ "$(id -u)" = 0 ] && ip netns list >/dev/null 2>&1; then
        .venv/bin/dataplane lab demo
    else
        .venv/bin/dataplane demo
    fi
fi
