"""Thin wrappers over iproute2, sysctl and ethtool, always scoped to a lab namespace.

Every command that changes something runs inside a named network namespace (`ip -n NS` or
`ip netns exec NS`): the lab never touches the host's own interfaces, routes or sysctls.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

__all__ = ["LabError", "add_netns", "delete_netns", "exec_argv", "ip", "link_mac", "list_netns",
           "netns_pids", "no_offloads", "run", "sysctl", "alive", "kill_pids"]


class LabError(Exception):
    """A user-facing lab failure: printed as one message."""


def run(argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command; on failure raise LabError quoting the command and its stderr."""
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"{argv[0]}: command not found (the lab needs iproute2, ethtool and iptables)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:g} s: {' '.join(argv)}") from None
    if check and cp.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed (exit {cp.returncode}): {cp.stderr.strip()}")
    return cp


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", "-n", ns, *args], check=check)


def list_netns() -> list[str]:
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [n["name"] for n in json.loads(out)] if out else []


def add_netns(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    ip(ns, "link", "set", "lo", "up")


def delete_netns(ns: str) -> None:
    # `ip netns del` only unmounts: the namespace (and its veths) lives on while a process is in
    # it, so callers kill the processes first (netns_pids).
    run(["ip", "netns", "del", ns], check=False)


def netns_pids(ns: str) -> list[int]:
    cp = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in cp.stdout.split()] if cp.returncode == 0 else []


def sysctl(ns: str, key: str, value: str | int) -> None:
    run(exec_argv(ns, ["sysctl", "-q", "-w", f"{key}={value}"]))


def link_mac(ns: str, ifname: str) -> str:
    info = json.loads(ip(ns, "-j", "link", "show", "dev", ifname).stdout)
    return info[0]["address"]


def no_offloads(ns: str, ifname: str) -> None:
    # AF_PACKET on a veth sees the peer's unsegmented GSO super-frames and CHECKSUM_PARTIAL
    # packets otherwise; a userspace dataplane needs real, fully checksummed frames.
    run(exec_argv(ns, ["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off", "tx", "off"]))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_pids(pids: list[int], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(alive(p) for p in pids):
                return
            time.sleep(0.05)

