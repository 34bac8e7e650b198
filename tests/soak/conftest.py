"""The soak test's lab (it runs only with `-m slow`: tests/conftest.py)."""
import pytest


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
