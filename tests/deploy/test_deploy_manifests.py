"""deploy/: every manifest against the Kubernetes schemas (offline), and against the code it
deploys: the ConfigMap's configuration loads as `dataplane run` loads it, the RBAC rules are
exactly the watches, the DaemonSet's command line parses and its probes reach the health server."""
from __future__ import annotations

import inspect
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from dataplane.config import load, loads
from dataplane.k8s.informer import ApiSource
from dataplane.k8s.resources import DNS_WATCHED, EVENT_VERBS, EVENTS, WATCH_VERBS, WATCHED

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# 1.33: ServiceCIDR (networking.k8s.io/v1) is GA, the oldest release we watch it on; and the
# newest release the installed validator knows.
K8S_VERSIONS = ("1.33", ".".join(kubernetes_validate.latest_version().split(".")[:2]))


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _objects() -> list[tuple[str, dict]]:
    return [(f"{p.name}: {d['kind']} {d['metadata']['name']}", d)
            for p in _manifest_files() for d in yaml.safe_load_all(p.read_text()) if d]


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in _objects() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _container() -> dict:
    (container,) = _one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return container


def _pod() -> dict:
    return _one("DaemonSet")["spec"]["template"]["spec"]


@pytest.fixture
def no_network(monkeypatch):
    """The validator must work offline: any attempt to reach the network fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ---- schemas ----

@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(version, no_network):
    objects = _objects()
    assert {d["kind"] for _, d in objects} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                               "ConfigMap", "DaemonSet"}
    for what, obj in objects:
        try:   # strict: unknown fields (typos) are errors too
            checked = kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{what}: {'.'.join(map(str, exc.path))}: {exc.message}")
        assert checked == version


def test_schema_validation_is_not_vacuous(no_network):
    daemonset, pod = _one("DaemonSet"), _pod()

    def with_pod(**changes) -> dict:
        template = {**daemonset["spec"]["template"], "spec": {**pod, **changes}}
        return {**daemonset, "spec": {**daemonset["spec"], "template": template}}

    for broken in (with_pod(hostNetwork="yes"), with_pod(hostNetwrok=True)):   # wrong type; typo
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in _manifest_files()]


def test_everything_is_in_kube_system_with_one_label():
    for what, obj in _objects():
        meta = obj["metadata"]
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert meta["namespace"] == "kube-system", what
        assert meta["labels"] == {"app.kubernetes.io/name": "dataplane"}, what


# ---- the ConfigMap against the configuration loader ----

def _config_data() -> dict[str, str]:
    return _one("ConfigMap", "dataplane")["data"]


def _node_keys() -> list[str]:
    return [k for k in _config_data() if k != "kubeproxy.yaml"]


def test_configmap_holds_a_kube_proxy_configuration_andselect_node_configurations():
    data = _config_data()
    kube_proxy = loads(data["kubeproxy.yaml"], "kubeproxy.yaml")   # strict: `dataplane check`
    assert kube_proxy.kube_proxy is not None and kube_proxy.dataplane is None
    assert not kube_proxy.warnings
    assert len(_node_keys()) >= 2   # the point of the layout: one ConfigMap for many nodes
    for key in _node_keys():
        node = loads(data["kubeproxy.yaml"] + "\n---\n" + data[key], key)
        assert node.dataplane is not None and not node.warnings, key
        assert node.dataplane.node_name == Path(key).stem, f"{key}: name the key after its node"
        # The node's own stack sits behind the local port (see deploy/README.md).
        assert node.dataplane.local_port is not None, key


def _configmap_volume(tmp_path: Path) -> Path:
    """The directory the kubelet writes for a ConfigMap volume: the keys are symlinks into a
    timestamped directory reached through `..data`, swapped atomically on updates."""
    root = tmp_path / "etc-dataplane"
    stamped = root / "..2026_01_01_00_00_00.000000001"
    stamped.mkdir(parents=True)
    for key, text in _config_data().items():
        (stamped / key).write_text(text)
        (root / key).symlink_to(Path("..data") / key)
    (root / "..data").symlink_to(stamped.name)
    return root


def test_each_node_uses_its_own_configuration_from_the_mounted_configmap(tmp_path):
    from dataplane.worker import select_node_config
    volume = _configmap_volume(tmp_path)
    for key in _node_keys():
        node_name = Path(key).stem
        config = select_node_config(load(volume, strict=False), node_name, volume)
        assert config.dataplane.node_name == node_name
        assert config.kube_proxy is not None
        assert config.problems == ()
    with pytest.raises(ValueError, match="nodeName 'node-z'"):
        select_node_config(load(volume, strict=False), "node-z", volume)


def test_api_server_address_overrides_the_in_cluster_service():
    """In place of kube-proxy, the `kubernetes` Service's ClusterIP is not reachable until we
    run: the pod gets the API server's own address in the variables in-cluster config reads."""
    from dataplane.k8s.client import IN_CLUSTER_ENV
    (source,) = _container()["envFrom"]
    data = _one("ConfigMap", source["configMapRef"]["name"])["data"]
    assert sorted(data) == sorted(IN_CLUSTER_ENV)
    assert int(data["KUBERNETES_SERVICE_PORT"]) in range(1, 65536)


# ---- RBAC against the watches ----

def test_cluster_role_grants_exactly_the_watches_and_events():
    granted = {(group, resource, verb)
               for rule in _one("ClusterRole")["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    wanted = {(r.group, r.plural, verb) for r in WATCHED + DNS_WATCHED for verb in WATCH_VERBS}
    wanted |= {(EVENTS.group, EVENTS.plural, verb) for verb in EVENT_VERBS}
    assert granted == wanted
    # The runtime watches that same list.
    assert inspect.signature(ApiSource).parameters["resources"].default is WATCHED


def test_the_daemonset_runs_as_the_bound_service_account():
    account = _one("ServiceAccount")["metadata"]
    binding = _one("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": _one("ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": account["namespace"]}]
    assert _pod()["serviceAccountName"] == account["name"]


# ---- the DaemonSet against the command line ----

def _argv(node_name: str = "node-a") -> list[str]:
    """The container's command line as the kubelet expands it ($(NODE_NAME) from the downward API)."""
    container = _container()
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container["env"]
    return [a.replace("$(NODE_NAME)", node_name) for a in container["command"] + container["args"]]


def _mount_of(path: str) -> dict:
    container, pod = _container(), _pod()
    mount = next(m for m in container["volumeMounts"] if Path(path).is_relative_to(m["mountPath"]))
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_daemonset_command_line_parses_and_points_into_its_volumes():
    from dataplane.cli import _parser
    argv = _argv("node-b")
    assert argv[0] == "dataplane"
    args = _parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.hostname_override == "node-b"
    assert _mount_of(str(args.config))["configMap"]["name"] == _one("ConfigMap", "dataplane")["metadata"]["name"]
    # Control socket and conntrack state live on the host, so they outlive the pod.
    for path in (args.control_socket, args.conntrack_file):
        assert _mount_of(str(path))["hostPath"]["path"] == "/run/dataplane"


def test_every_flag_the_daemonset_passes_is_in_run_help():
    helptext = subprocess.run([sys.executable, "-m", "dataplane.cli", "run", "--help"], capture_output=True,
                              text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    flags = [a.split("=")[0] for a in _argv()[1:] if a.startswith("--")]
    assert flags
    for flag in flags:   # whole flags: argparse would also accept an abbreviation
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helptext), flag


def test_probes_ask_kube_proxys_health_server():
    healthz = loads(_config_data()["kubeproxy.yaml"]).kube_proxy.healthz_bind_address
    port = int(healthz.rsplit(":", 1)[1])
    container = _container()
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert healthz.startswith("0.0.0.0:")   # the kubelet probes the node's address, not loopback


def test_daemonset_has_only_the_privileges_it_needs():
    pod, container = _pod(), _container()
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"   # cluster DNS is a Service: not there before we run
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    host_paths = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"/run/dataplane": "DirectoryOrCreate", "/dev/net/tun": "CharDevice"}


def test_daemonset_schedules_like_kube_proxy():
    daemonset = _one("DaemonSet")
    pod = _pod()
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert daemonset["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}


def test_image_tag_is_the_project_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _container()["image"] == f"{project['name']}:{project['version']}"
