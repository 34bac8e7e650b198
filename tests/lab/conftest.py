"""Live lab tests: real namespaces, veths and sockets. Need root and iproute2; every test uses a
unique lab name and tears its lab down even when it fails."""
from __future__ import annotations

import itertools
import os
import shutil

import pytest

from dataplane.lab import down

_seq = itertools.count()


def _can_build_labs() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    for tool in ("ip", "ethtool", "iptables"):
        if shutil.which(tool) is None:
            return f"lab tests need {tool}"
    return None


@pytest.fixture
def lab_name(request):
    """A lab name unique to this test and process; the lab is torn down afterwards."""
    reason = _can_build_labs()
    if reason:
        pytest.skip(reason)
    name = f"t{os.getpid() % 100000}-{next(_seq)}"
    try:
        yield name
    finally:
        down(name)
