"""Build, describe and tear down a lab: a host-gw or VXLAN (flannel-style) cluster made of
network namespaces.

Every namespace of lab NAME is called `dpl.NAME.<role>` (lab names have no dots), so a
crashed lab's leftovers are found by prefix even without its state file. State lives in
STATE_ROOT/NAME/ (state.json, one directory per node with the dataplane's config and log);
a lock file serialises `up`/`down`/`apply` across processes.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import ipam
from .netns import (LabError, add_netns, alive, delete_netns, exec_argv, ip, kill_pids, link_mac, list_netns,
                    netns_pids, no_offloads, run, sysctl)

__all__ = ["LabSpec", "STATE_ROOT", "DEFAULT_SERVICES", "up", "down", "load_state", "apply", "restart",
           "start_process", "resolv_conf",
           "dataplane_run_available"]

STATE_ROOT = Path(os.environ.get("DATAPLANE_LAB_STATE", "/run/dataplane-lab"))
REPO = Path(__file__).resolve().parents[2]
DEFAULT_SERVICES = REPO / "examples" / "lab" / "services.yaml"
PROBE = Path(__file__).resolve().with_name("probe.py")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_MARK = "DATAPLANE_LAB"    # environment variable naming the lab a process belongs to
STARTUP_GRACE_S = 1.0   # a dataplane still alive this long after start has parsed its config
VXLAN_VNI = 1           # flannel's default VNI
VXLAN_PORT = 4789       # flannel's default port (IANA's), not Linux's 8472
VXLAN_MTU = 1450        # 1500 less the 50 bytes of outer headers, as flannel sets it
DNS_SERVICE = ("kube-system", "kube-dns")   # kubelet's clusterDNS is this Service's cluster IP
CLUSTER_DOMAIN = "cluster.local"
NETNS_ETC = Path("/etc/netns")  # `ip netns exec NS` bind-mounts NETNS_ETC/NS/* over /etc/*


@dataclass(frozen=True)
class LabSpec:
    name: str = "lab"
    nodes: int = 2
    pods_per_node: int = 2
    overlay: str = "none"         # "none": host-gw routes; "vxlan": flannel's vxlan backend (VNI 1)
    dataplane: str = "ours"       # "ours": `dataplane run` per node; "kernel": Linux forwarding
    services: Path | None = DEFAULT_SERVICES  # Kubernetes objects given to every node

    def validate(self) -> None:
        check_name(self.name)
        if not 1 <= self.nodes <= ipam.MAX_NODES:
            raise LabError(f"--nodes must be 1..{ipam.MAX_NODES}, got {self.nodes}")
        if not 0 <= self.pods_per_node <= ipam.MAX_PODS:
            raise LabError(f"--pods-per-node must be 0..{ipam.MAX_PODS}, got {self.pods_per_node}")
        if self.overlay not in ("none", "vxlan"):
            raise LabError(f"--overlay must be none or vxlan, got {self.overlay!r}")
        if self.dataplane not in ("ours", "kernel"):
            raise LabError(f"--dataplane must be ours or kernel, got {self.dataplane!r}")


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise LabError(f"lab name must be 1-24 of [a-z0-9-], starting with a letter or digit, got {name!r}")


def prefix(name: str) -> str:
    return f"dpl.{name}."


def state_dir(name: str) -> Path:
    return STATE_ROOT / name


# ---- state ----

def load_state(name: str) -> dict:
    """The lab's state.json (shape: see `up`); LabError if there is no such lab."""
    check_name(name)
    path = state_dir(name) / "state.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab named {name!r} (no {path}); start one with `dataplane lab up --name {name}`") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"{path}: unreadable state ({exc}); `dataplane lab down --name {name}` cleans up") from None


def _save_state(state: dict) -> None:
    path = state_dir(state["name"]) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)  # atomic: `lab status` in another process never reads half a file


@contextmanager
def _locked(name: str):
    # One lock for all labs (one small file that stays): building and deleting take well under
    # a second, and serialising them keeps concurrent `ip netns` listings consistent.
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---- up ----

def up(spec: LabSpec) -> dict:
    """Create the lab (after removing any leftovers of a lab with the same name) and return its
    state. On failure everything created so far is removed again."""
    spec.validate()
    services = _read_services(spec.services)
    with _locked(spec.name):
        _cleanup(spec.name)
        try:
            state = _build(spec, services)
        except BaseException:
            _cleanup(spec.name)
            raise
    return state


def _read_services(path: Path | None):
    from dataplane.config import ConfigError, load
    if path is None:
        return None
    try:
        config = load(path)
    except ConfigError as exc:
        raise LabError(f"{path}: invalid configuration\n{exc}") from None
    if config.dataplane or config.kube_proxy:
        raise LabError(f"{path}: may only hold Kubernetes objects (Services, EndpointSlices); "
                       "the lab writes each node's DataplaneConfiguration and KubeProxyConfiguration itself")
    return config


def _service_entries(config) -> list[dict]:
    return [{"name": s.name, "namespace": s.namespace, "type": s.type,
             "clusterIP": str(s.cluster_ips[0]) if s.cluster_ips else None,
             "externalTrafficPolicy": s.external_traffic_policy,
             "endpoints": sorted({str(a) for sl in config.endpoint_slices_for(s) for e in sl.endpoints
                                  for a in e.addresses}),
             "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port,
                        "targetPort": p.target_port, "nodePort": p.node_port} for p in s.ports]}
            for s in config.services]


def _build(spec: LabSpec, services) -> dict:
    pre = prefix(spec.name)
    root = state_dir(spec.name)
    root.mkdir(parents=True)
    cidrs = ipam.pod_cidrs(spec.nodes)
    state = {
        "name": spec.name, "dataplane": spec.dataplane, "overlay": spec.overlay,
        "stateDir": str(root), "clusterCIDR": str(ipam.CLUSTER_CIDR), "nodeNetwork": str(ipam.NODE_NET),
        "fabric": {"netns": pre + "fabric", "bridge": "br0"},
        "external": {"netns": pre + "client", "ip": str(ipam.CLIENT_IP)},
        "outside": {"netns": pre + "world", "ip": str(ipam.GATEWAY_IP), "serverIP": str(ipam.OUTSIDE_SERVER_IP)},
        "nodes": [], "pods": [], "services": [], "pids": {},
    }
    for k, cidr in enumerate(cidrs, start=1):
        node = {"name": f"node-{k}", "netns": f"{pre}node-{k}", "ip": str(ipam.node_ip(k)),
                "ips": [str(ipam.node_ip(k))],  # every address the node owns (one per family)
                "podCIDR": str(cidr), "podGateway": str(ipam.pod_gateway(cidr)),
                "configDir": str(root / f"node-{k}" / "config"), "log": str(root / f"node-{k}" / "dataplane.log"),
                # Outside configDir: the dataplane re-reads every *.json there.
                "stats": str(root / f"node-{k}" / "stats.json")}
        state["nodes"].append(node)
        for i in range(1, spec.pods_per_node + 1):
            state["pods"].append({"name": f"pod-{k}-{i}", "namespace": "default", "netns": f"{pre}pod-{k}-{i}",
                                  "ip": str(ipam.pod_ip(cidr, i)), "node": node["name"], "port": f"pod{i}",
                                  "labels": {"app": "web", "node": node["name"]}})
    if services is not None:
        state["services"] = _service_entries(services)
        state["servicesFile"] = str(spec.services)
        dns_ip = next((s["clusterIP"] for s in state["services"]
                       if (s["namespace"], s["name"]) == DNS_SERVICE and s["clusterIP"]), None)
        if dns_ip and spec.dataplane == "ours":
            state["dns"] = {"service": "/".join(DNS_SERVICE), "ip": dns_ip, "clusterDomain": CLUSTER_DOMAIN}
    _save_state(state)  # early: a failure below is still cleaned up by `down`

    _build_fabric(state)
    for node in state["nodes"]:
        _build_node(state, node, [p for p in state["pods"] if p["node"] == node["name"]])
    if spec.dataplane == "ours":
        for node in state["nodes"]:
            _write_node_config(state, node, spec.services)
        for node in state["nodes"]:
            state["pids"][node["name"]] = _start_dataplane(spec.name, node)
        if "dns" in state:
            for node in state["nodes"]:
                state["pids"][f"dns/{node['name']}"] = _start_dns(spec.name, node, state["dns"]["ip"])
            for pod in state["pods"]:
                _write_resolv_conf(pod, state["dns"])
        _save_state(state)
        _check_started(state)
    _save_state(state)
    return state


def _veth(in_ns: str, name: str, peer_ns: str, peer: str) -> None:
    # Created inside a lab namespace, peer moved straight to the other: never in the host's.
    ip(in_ns, "link", "add", "name", name, "type", "veth", "peer", "name", peer, "netns", peer_ns)
    for ns, ifname in ((in_ns, name), (peer_ns, peer)):
        no_offloads(ns, ifname)
        ip(ns, "link", "set", ifname, "up")


def _build_fabric(state: dict) -> None:
    fabric = state["fabric"]["netns"]
    add_netns(fabric)
    ip(fabric, "link", "add", "name", "br0", "type", "bridge")
    ip(fabric, "link", "set", "br0", "up")
    members = [("client", state["external"]["netns"]), ("world", state["outside"]["netns"])]
    members += [(f"n{n['name'].split('-')[1]}", n["netns"]) for n in state["nodes"]]
    for port, ns in members:
        add_netns(ns)
        _veth(fabric, port, ns, "eth0")
        ip(fabric, "link", "set", port, "master", "br0")
    plen = ipam.NODE_NET.prefixlen
    client = state["external"]["netns"]
    ip(client, "addr", "add", f"{ipam.CLIENT_IP}/{plen}", "dev", "eth0")
    ip(client, "route", "add", "default", "via", str(ipam.GATEWAY_IP))
    world = state["outside"]["netns"]
    ip(world, "addr", "add", f"{ipam.GATEWAY_IP}/{plen}", "dev", "eth0")
    # The outside server's address sits on lo: reachable only through the gateway, and the
    # world has no route to pod CIDRs, so pod traffic must arrive masqueraded.
    ip(world, "addr", "add", f"{ipam.OUTSIDE_SERVER_IP}/32", "dev", "lo")


def _build_node(state: dict, node: dict, pods: list[dict]) -> None:
    ns = node["netns"]
    kernel = state["dataplane"] == "kernel"
    gw = node["podGateway"]
    for pod in pods:
        add_netns(pod["netns"])
        _veth(ns, pod["port"], pod["netns"], "eth0")
        # A /32 and an on-link gateway: every packet leaves the pod through its gateway, the
        # dataplane (or the kernel) on the node side of the veth.
        ip(pod["netns"], "addr", "add", f"{pod['ip']}/32", "dev", "eth0")
        if state["overlay"] == "vxlan":  # flannel's CNI config gives pods the overlay's MTU
            ip(pod["netns"], "link", "set", "eth0", "mtu", str(VXLAN_MTU))
        ip(pod["netns"], "route", "add", gw, "dev", "eth0", "scope", "link")
        ip(pod["netns"], "route", "add", "default", "via", gw, "dev", "eth0")
    node["macs"] = {"eth0": link_mac(ns, "eth0"), **{p["port"]: link_mac(ns, p["port"]) for p in pods}}
    if kernel:
        _kernel_routing(state, node, pods)
        return
    sysctl(ns, "net.ipv4.ip_forward", 0)
    sysctl(ns, "net.ipv6.conf.all.forwarding", 0)
    for ifname in node["macs"]:
        # The node kernel must stay silent on dataplane ports (no RS/DAD/MLD of its own).
        sysctl(ns, f"net.ipv6.conf.{ifname}.disable_ipv6", 1)
    # The node's own stack sits behind a persistent tap that the dataplane attaches to; every
    # kernel packet leaves through it (default dev host) and the dataplane proxy-answers ARP.
    ip(ns, "tuntap", "add", "dev", "host", "mode", "tap")
    no_offloads(ns, "host")
    ip(ns, "addr", "add", f"{node['ip']}/32", "dev", "host")
    ip(ns, "link", "set", "host", "up")
    ip(ns, "route", "add", "default", "dev", "host")
    if state["overlay"] == "vxlan":  # the node's own traffic to pods is encapsulated too
        ip(ns, "route", "add", state["clusterCIDR"], "dev", "host", "mtu", str(VXLAN_MTU))
    node["macs"]["host"] = link_mac(ns, "host")


def _kernel_routing(state: dict, node: dict, pods: list[dict]) -> None:
    """Kernel stand-in: Linux forwards and masquerades (the benchmarks' baseline). No Services."""
    ns = node["netns"]
    ip(ns, "addr", "add", f"{node['ip']}/{ipam.NODE_NET.prefixlen}", "dev", "eth0")
    for pod in pods:
        ip(ns, "addr", "add", f"{node['podGateway']}/32", "dev", pod["port"])
        ip(ns, "route", "add", f"{pod['ip']}/32", "dev", pod["port"])
    if state["overlay"] == "vxlan":
        _kernel_vxlan(state, node)
    else:
        for other in state["nodes"]:
            if other is not node:
                ip(ns, "route", "add", other["podCIDR"], "via", other["ip"], "dev", "eth0")
    ip(ns, "route", "add", "default", "via", str(ipam.GATEWAY_IP), "dev", "eth0")
    sysctl(ns, "net.ipv4.ip_forward", 1)
    cluster = state["clusterCIDR"]
    run(exec_argv(ns, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", cluster, "!", "-d", cluster,
                       "-o", "eth0", "-j", "MASQUERADE"]))


def _kernel_vxlan(state: dict, node: dict) -> None:
    """flannel.1 as flannel's vxlan backend sets it up: no learning, every remote VTEP's MAC and
    address as permanent neighbour and FDB entries, a route per remote pod CIDR via the remote
    VTEP's overlay address (the CIDR's network address) on-link."""
    ns = node["netns"]
    dev = "flannel.1"
    ip(ns, "link", "add", dev, "type", "vxlan", "id", str(VXLAN_VNI), "dstport", str(VXLAN_PORT),
       "local", node["ip"], "dev", "eth0", "nolearning")
    ip(ns, "link", "set", dev, "address", _vtep_mac(node["ip"]), "mtu", str(VXLAN_MTU), "up")
    ip(ns, "addr", "add", f"{ipaddress.ip_network(node['podCIDR']).network_address}/32", "dev", dev)
    for other in state["nodes"]:
        if other is node:
            continue
        mac = _vtep_mac(other["ip"])
        vtep = str(ipaddress.ip_network(other["podCIDR"]).network_address)
        ip(ns, "neigh", "add", vtep, "lladdr", mac, "dev", dev, "nud", "permanent")
        run(["bridge", "-n", ns, "fdb", "append", mac, "dev", dev, "dst", other["ip"], "self", "permanent"])
        # src: the node's own traffic to pods leaves from the node IP as with host-gw (flannel's
        # kernel would pick flannel.1's address), so the demo's rows mean the same in every mode.
        ip(ns, "route", "add", other["podCIDR"], "via", vtep, "dev", dev, "onlink", "src", node["ip"])


def _vtep_mac(node_ip: str) -> str:
    from dataplane.config.dataplane import vtep_mac
    from dataplane.config.fields import format_mac
    return format_mac(vtep_mac(ipaddress.ip_address(node_ip)))


# ---- dataplane configuration and processes ----

def _node_objects(state: dict, node: dict) -> list[dict]:
    pods = [p for p in state["pods"] if p["node"] == node["name"]]
    macs = node["macs"]
    ports = [{"name": "eth0", "mac": macs["eth0"], "type": "afpacket", "addresses": [node["ip"]]},
             {"name": "host", "mac": macs["host"], "type": "tap", "proxyARP": True}]
    ports += [{"name": p["port"], "mac": macs[p["port"]], "type": "afpacket", "addresses": [node["podGateway"]]}
              for p in pods]
    routes = [{"prefix": f"{p['ip']}/32", "port": p["port"]} for p in pods]
    others = [o for o in state["nodes"] if o is not node]
    if state["overlay"] == "vxlan":
        routes += [{"prefix": o["podCIDR"], "vxlan": {"vni": VXLAN_VNI, "remote": o["ip"], "port": VXLAN_PORT}}
                   for o in others]
    else:
        routes += [{"prefix": o["podCIDR"], "port": "eth0", "via": o["ip"]} for o in others]
    routes += [{"prefix": str(ipam.NODE_NET), "port": "eth0"},
               {"prefix": "0.0.0.0/0", "port": "eth0", "via": str(ipam.GATEWAY_IP)}]
    return [
        {"apiVersion": "dataplane/v1alpha1", "kind": "DataplaneConfiguration", "nodeName": node["name"],
         "nodeIPs": [node["ip"]], "clusterCIDRs": [state["clusterCIDR"]], "localPort": "host",
         "ports": ports, "routes": routes},
        {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
         "hostnameOverride": node["name"], "clusterCIDR": state["clusterCIDR"]},
    ]


def _pod_objects(state: dict) -> list[dict]:
    """The lab's pods and their namespaces as the API shows them (DNS pod records, policy)."""
    namespaces = sorted({p["namespace"] for p in state["pods"]} | {DNS_SERVICE[0]})
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces] + [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": p["name"], "namespace": p["namespace"], "labels": p["labels"]},
         "spec": {"nodeName": p["node"], "containers": [{"name": "probe", "image": "probe"}]},
         "status": {"phase": "Running", "podIP": p["ip"], "podIPs": [{"ip": p["ip"]}]}}
        for p in state["pods"]]


def _write_node_config(state: dict, node: dict, services: Path | None) -> None:
    from dataplane.config import ConfigError, load
    cfg = Path(node["configDir"])
    cfg.mkdir(parents=True)
    (cfg / "00-node.yaml").write_text(
        f"# Generated by `dataplane lab up` for lab {state['name']}, {node['name']}.\n"
        + yaml.safe_dump_all(_node_objects(state, node), sort_keys=False))
    (cfg / "20-pods.yaml").write_text(
        f"# Generated by `dataplane lab up` for lab {state['name']}: its pods.\n"
        + yaml.safe_dump_all(_pod_objects(state), sort_keys=False))
    if services is not None:
        shutil.copyfile(services, cfg / "10-services.yaml")
    try:
        load(cfg)
    except ConfigError as exc:  # a lab bug, not a user error: say which file
        raise LabError(f"generated configuration {cfg} is invalid:\n{exc}") from None


def dataplane_run_available() -> bool:
    """True when this tree's CLI has `dataplane run` (being written in parallel)."""
    cp = subprocess.run(_python() + ["-m", "dataplane.cli", "run", "--help"], capture_output=True,
                        env=_env(), timeout=60)
    return cp.returncode == 0


def _python() -> list[str]:
    return [sys.executable]


def _env(lab: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if lab:
        env[_MARK] = lab
    return env


def start_process(lab: str, ns: str, argv: list[str], log: Path) -> int:
    """Start argv detached inside namespace ns (own session: a Ctrl-C of the caller does not
    reach it; `down` stops it), output to log; returns its pid (`ip netns exec` execs argv).
    The environment marks it as this lab's, so cleanup never signals a recycled pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(exec_argv(ns, argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=_env(lab), cwd=str(REPO))
    return proc.pid


def _ours(pid: int, lab: str) -> bool:
    try:
        return f"{_MARK}={lab}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _start_dataplane(lab: str, node: dict) -> int:
    # The conntrack file lives next to the node's config: a restarted dataplane reloads it.
    conntrack = Path(node["configDir"]).parent / "conntrack.state"
    argv = _python() + ["-m", "dataplane.cli", "run", "--config", node["configDir"], "--stats-file", node["stats"],
                        "--conntrack-file", str(conntrack),
                        "--control-socket", str(Path(node["configDir"]).parent / "control.sock")]
    return start_process(lab, node["netns"], argv, Path(node["log"]))


def _start_dns(lab: str, node: dict, dns_ip: str) -> int:
    """The node's cluster DNS (`dataplane dns` on the node IP): the kube-dns endpoint of its node.
    Names outside the cluster go to the lab's gateway, where nothing answers: they fail fast."""
    argv = _python() + ["-m", "dataplane.cli", "dns", "--config", node["configDir"], "--listen", f"{node['ip']}:53",
                        "--server-ip", dns_ip, "--pods", "verified", "--upstream", f"{ipam.GATEWAY_IP}:53"]
    return start_process(lab, node["netns"], argv, Path(node["log"]).with_name("dns.log"))


def resolv_conf(namespace: str, dns: dict) -> str:
    """A pod's resolv.conf as kubelet writes it for dnsPolicy ClusterFirst."""
    zone = dns["clusterDomain"]
    return (f"nameserver {dns['ip']}\nsearch {namespace}.svc.{zone} svc.{zone} {zone}\noptions ndots:5\n")


def _write_resolv_conf(pod: dict, dns: dict) -> None:
    path = NETNS_ETC / pod["netns"] / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(resolv_conf(pod["namespace"], dns))


def restart(name: str, node_name: str) -> int:
    """Restart one node's dataplane (SIGTERM, then start it again on the same configuration).
    It saves its conntrack table on the way down and reloads it, so connections survive.
    Returns the new pid."""
    with _locked(name):
        state = load_state(name)
        if state["dataplane"] != "ours":
            raise LabError(f"lab {name} forwards with the kernel: there is no dataplane to restart")
        node = next((n for n in state["nodes"] if n["name"] == node_name), None)
        if node is None:
            raise LabError(f"lab {name} has no node {node_name!r} "
                           f"(nodes: {', '.join(n['name'] for n in state['nodes'])})")
        kill_pids([state["pids"][node_name]])
        state["pids"][node_name] = _start_dataplane(name, node)
        _save_state(state)
        _check_started({"nodes": [node], "pids": state["pids"]})
        return state["pids"][node_name]


def _check_started(state: dict) -> None:
    deadline = time.monotonic() + STARTUP_GRACE_S
    while time.monotonic() < deadline:
        dead = [n for n in state["nodes"] if not alive(state["pids"][n["name"]])]
        if dead:
            node = dead[0]
            tail = "\n".join(Path(node["log"]).read_text(errors="replace").splitlines()[-15:])
            raise LabError(f"the dataplane of {node['name']} exited at start (log {node['log']}):\n{tail}")
        time.sleep(0.1)


def add_pids(name: str, pids: dict[str, int]) -> None:
    """Record more processes (e.g. the demo's servers) so `down` stops them too."""
    state = load_state(name)
    state["pids"].update(pids)
    _save_state(state)


# ---- apply ----

def apply(name: str, path: Path) -> list[dict]:
    """Validate the Kubernetes objects in `path` and copy them into every node's config
    directory (the running dataplanes re-read it); returns the lab's services afterwards."""
    from dataplane.config import ConfigError, load
    config = _read_services(path)
    with _locked(name):
        state = load_state(name)
        dest = f"50-{path.name}" if path.suffix in (".yaml", ".yml", ".json") else f"50-{path.name}.yaml"
        nodes = state["nodes"]
        if state["dataplane"] == "ours":
            # Validate the node's whole directory with the file in place (a clashing object
            # fails here, before any node sees it).
            with tempfile.TemporaryDirectory() as tmp:
                trial = Path(tmp) / "config"
                shutil.copytree(nodes[0]["configDir"], trial)
                shutil.copyfile(path, trial / dest)
                try:
                    combined = load(trial)
                except ConfigError as exc:
                    raise LabError(f"{path}: rejected, the node configuration would be invalid:\n{exc}") from None
            for node in nodes:
                tmp_dest = Path(node["configDir"]) / f".{dest}.tmp"
                shutil.copyfile(path, tmp_dest)
                tmp_dest.replace(Path(node["configDir"]) / dest)  # atomic for the watching dataplane
            state["services"] = _service_entries(combined)
        else:
            known = {(s["namespace"], s["name"]) for s in state["services"]}
            state["services"] += [s for s in _service_entries(config) if (s["namespace"], s["name"]) not in known]
        _save_state(state)
    return state["services"]


# ---- down ----

def down(name: str) -> dict[str, str]:
    """Stop every process of the lab, delete its namespaces and state. Idempotent. Returns
    each dataplane's final output (its counters), by node name."""
    check_name(name)
    with _locked(name):
        return _cleanup(name)


def _cleanup(name: str) -> dict[str, str]:
    root = state_dir(name)
    outputs: dict[str, str] = {}
    state = None
    try:
        state = json.loads((root / "state.json").read_text())
    except (OSError, ValueError):
        pass  # crashed or never written: the namespace prefix still finds everything
    namespaces = [ns for ns in list_netns() if ns.startswith(prefix(name))]
    # Recorded pids still marked as ours (processes whose namespace is already gone), plus
    # whatever runs in the lab's namespaces.
    pids = {p for p in (state or {}).get("pids", {}).values() if _ours(p, name)}
    for ns in namespaces:
        pids.update(netns_pids(ns))
    kill_pids(sorted(p for p in pids if alive(p)))
    if state:
        for node in state.get("nodes", []):
            log = Path(node.get("log", ""))
            if state.get("pids", {}).get(node["name"]) and log.is_file():
                outputs[node["name"]] = log.read_text(errors="replace")
    for ns in namespaces:
        delete_netns(ns)
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.iterdir():
            if d.name.startswith(prefix(name)):
                shutil.rmtree(d, ignore_errors=True)
    left = [ns for ns in list_netns() if ns.startswith(prefix(name))]
    if left:
        raise LabError(f"could not delete namespaces {', '.join(left)}")
    shutil.rmtree(root, ignore_errors=True)
    return outputs

