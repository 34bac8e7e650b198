"""A Kubernetes-like cluster on one host, made of network namespaces and veth pairs.

    from dataplane.lab import LabSpec, up, down, load_state
    state = up(LabSpec(name="t1", dataplane="kernel"))   # dict, the shape of state.json
    down("t1")

See topology.py for the layout and ipam.py for the address plan; `dataplane lab --help`.
"""
from .netns import LabError
from .topology import LabSpec, apply, down, load_state, restart, up

__all__ = ["LabError", "LabSpec", "apply", "down", "load_state", "restart", "up"]
