"""Network namespaces for tests: create, enter (this thread only), delete.

Every namespace is named dpt-<random hex> and deleted at teardown whatever happened, which also
destroys the interfaces in it. A socket stays in the namespace it was created in, so a test
enters a namespace only while it creates one.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def netns(name: str):
    """Run the body inside namespace `name` (this thread only), then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
    finally:
        os.close(home)


def ip(*args: str, ns: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def new_netns() -> str:
    name = f"dpt-{secrets.token_hex(4)}"
    ip("ip", "netns", "add", name)
    return name


def del_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def quiet_netns(name: str) -> None:
    """No IPv6 (router solicitations, MLD, DAD) so only test traffic crosses the link."""
    for key in ("all", "default"):
        ip("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1", ns=name)
    ip("ip", "link", "set", "lo", "up", ns=name)


def require_netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("live port tests need root (network namespaces, raw sockets)")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 not installed")
    try:
        del_netns(new_netns())
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot create network namespaces: {e}")




TAP_NODE_MAC, TAP_PEER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:fe"


def tap_node_config(dataplane_extra: str = "") -> str:
    """A node whose only port is the tap `tap0` (default route out of it, to TAP_PEER_MAC);
    `dataplane_extra` adds DataplaneConfiguration fields. Append the Kubernetes objects as
    further YAML documents."""
    return f"""\
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-1
nodeIPs: [192.168.0.2]
clusterCIDRs: [10.244.0.0/16]
ports:
  - {{name: tap0, type: tap, mac: "{TAP_NODE_MAC}"}}
routes:
  - {{prefix: 0.0.0.0/0, port: tap0, via: 192.168.0.1, mac: "{TAP_PEER_MAC}"}}
{dataplane_extra}"""


@contextlib.contextmanager
def tap_node(tmp_path, config_text: str, *args: str, local_ips=()):
    """`dataplane run` on `config_text` in a fresh namespace, its port a tap `tap0` that the test
    plays the network through. Yields (namespace, control socket, raw AF_PACKET socket on the
    tap's kernel side, process); `local_ips` are put on the namespace's loopback (addresses the
    node's own servers bind)."""
    import socket
    import sys
    import time
    require_netns()
    ns = new_netns()
    proc = None
    try:
        quiet_netns(ns)
        for addr in local_ips:
            ip("ip", "addr", "add", f"{addr}/32", "dev", "lo", ns=ns)
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "all.yaml").write_text(config_text)
        sock = tmp_path / "run" / "ctl.sock"
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "dataplane.cli", "run",
                                 "--config", str(tmp_path / "conf"), "--control-socket", str(sock), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.05)
        with netns(ns):
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        raw.bind(("tap0", 0))
        try:
            yield ns, sock, raw, proc
        finally:
            raw.close()
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        del_netns(ns)
