"""Tests marked slow here run only when asked for (`-m slow`)."""
import pytest


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab_name():
    """A lab name unique to this process; the lab is torn down afterwards, whatever happened."""
    import os
    import shutil

    from dataplane.lab import down
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "ethtool", "iptables")):
        pytest.skip("the soak test needs root, iproute2, ethtool and iptables")
    name = f"soak{os.getpid() % 100000}"
    try:
        yield name
    finally:
        down(name)
