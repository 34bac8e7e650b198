"""DataplaneConfiguration: model, validation rules, error reporting, file handling."""
import ipaddress
import json
import textwrap
from pathlib import Path

import pytest

from dataplane.config import ConfigError, DataplaneConfig, Port, Route, load, loads

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = """\
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [192.168.0.2, "fd00::2"]
ports:
  - {name: eth0, mac: "02:00:00:00:00:01"}
"""


def dp(extra: str = "", base: str = BASE) -> DataplaneConfig:
    return loads(base + extra).dataplane


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        loads(text)
    assert str(exc.value) == "\n".join(map(str, exc.value.problems))
    return [f"{p.path}: {p.message}" for p in exc.value.problems]


def test_example_replay_loads_to_model():
    cfg = load(EXAMPLES / "replay.yaml").dataplane
    assert cfg.node_name == "node-a"
    assert cfg.node_ips == (ipaddress.ip_address("192.168.0.2"), ipaddress.ip_address("fd00::2"))
    assert cfg.ports == (Port("eth0", bytes.fromhex("020000000001"), 0),)
    assert cfg.cluster_cidrs == (ipaddress.ip_network("10.244.0.0/16"),)
    default = cfg.routes[0]
    assert default == Route(ipaddress.ip_network("0.0.0.0/0"), "eth0", 0,
                            ipaddress.ip_address("192.168.0.1"), bytes.fromhex("0200000000fe"))
    assert {r.prefix.version for r in cfg.routes} == {4, 6}


def test_model_is_frozen():
    cfg = dp()
    with pytest.raises(AttributeError):
        cfg.node_name = "x"


def test_port_index_and_optional_fields():
    cfg = dp(base=BASE + """\
  - {name: eth1, mac: "02:00:00:00:00:02", mtu: 9000, ifname: enp3s0, type: tap}
routes:
  - {prefix: 10.0.0.0/8, port: eth1}
""")
    assert cfg.ports[1] == Port("eth1", bytes.fromhex("020000000002"), 1, 9000, "enp3s0", "tap")
    assert cfg.routes[0].port_index == 1 and cfg.routes[0].via is None and cfg.routes[0].mac is None


def test_all_digit_mac_is_not_a_sexagesimal_number():
    cfg = dp(base=BASE.replace('"02:00:00:00:00:01"', "12:34:56:12:34:56"))
    assert cfg.ports[0].mac == bytes.fromhex("123456123456")


@pytest.mark.parametrize("extra, expected", [
    ("routes:\n  - {prefix: 10.0.0.1/8, port: eth0}\n",
     "routes[0].prefix: has host bits set: '10.0.0.1/8' (did you mean '10.0.0.0/8'?)"),
    ("routes:\n  - {prefix: 10.0.0.0, port: eth0}\n", "routes[0].prefix: must be a CIDR like 10.0.0.0/8, got '10.0.0.0'"),
    ("routes:\n  - {prefix: 10.0.0.0/33, port: eth0}\n", "routes[0].prefix: must be a CIDR"),
    ("routes:\n  - {prefix: 10.0.0.0/8, port: eth9}\n", "routes[0].port: no such port 'eth9' (ports: eth0)"),
    ("routes:\n  - {prefix: 10.0.0.0/8, port: eth0, via: 'fd00::1'}\n",
     "routes[0].via: IPv6 next hop fd00::1 for IPv4 prefix 10.0.0.0/8"),
    ("routes:\n  - {prefix: 'fd00::/8', port: eth0, via: 10.0.0.1}\n", "routes[0].via: IPv4 next hop"),
    ("routes:\n  - {prefix: 10.0.0.0/8, port: eth0}\n  - {prefix: 10.0.0.0/8, port: eth0, mac: '02:00:00:00:00:09'}\n",
     "routes[1]: duplicate prefix 10.0.0.0/8 (same as routes[0])"),
    ("routes:\n  - {prefix: 10.0.0.0/8, port: eth0, mac: '02:00:00:00:00'}\n", "routes[0].mac: must be a MAC address"),
    ("routes:\n  - {prefix: 10.0.0.0/8, port: eth0, mac: 'ff:ff:ff:ff:ff:ff'}\n", "routes[0].mac: must be a unicast MAC"),
    ("routes:\n  - {prefix: 10.0.0.0/8, port: eth0, metric: 5}\n", "routes[0].metric: unknown field"),
    ("routes:\n  - {prefix: 10.0.0.0/8}\n", "routes[0].port: required field is missing"),
    ("mtu: 1500\n", "mtu: unknown field"),
    ("nodeIP: [1.2.3.4]\n", "nodeIP: unknown field (did you mean 'nodeIPs'?)"),
    ("clusterCIDRs: [10.244.0.1/16]\n", "clusterCIDRs[0]: has host bits set"),
])
def test_invalid_dataplane_fields(extra, expected):
    assert any(p.startswith(expected) for p in problems(BASE + extra)), problems(BASE + extra)


@pytest.mark.parametrize("text, expected", [
    (BASE.replace("nodeName: node-a", "nodeName: Node_A"), "nodeName: must be a lowercase RFC 1123 subdomain"),
    (BASE.replace("nodeName: node-a\n", ""), "nodeName: required field is missing"),
    (BASE.replace("192.168.0.2", "192.168.0.256"), "nodeIPs[0]: must be an IPv4 or IPv6 address, got '192.168.0.256'"),
    (BASE.replace('"fd00::2"', "192.168.0.2"), "nodeIPs[1]: duplicate address 192.168.0.2 (same as nodeIPs[0])"),
    (BASE.replace("192.168.0.2", "0.0.0.0"), "nodeIPs[0]: must be a unicast address"),
])
def test_invalid_node_identity(text, expected):
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_ports_rules():
    no_ports = BASE.split("ports:")[0] + "ports: []\n"
    assert problems(no_ports) == ["ports: at least one port is required"]
    dup = BASE + '  - {name: eth0, mac: "02:00:00:00:00:02"}\n'
    assert problems(dup) == ["ports[1]: duplicate name 'eth0' (same as ports[0])"]
    bad = BASE + '  - {name: eth1, mac: "02:00:00:00:00:02", mtu: "9000", type: dpdk}\n'
    assert problems(bad) == ["ports[1].mtu: must be an integer, got string '9000'"]
    bad = BASE + '  - {name: eth1, mac: "02:00:00:00:00:02", type: dpdk}\n'
    assert problems(bad) == ["ports[1].type: must be one of afpacket, tap, got 'dpdk'"]
    bad = BASE + '  - {name: "eth/1", mac: "02:00:00:00:00:02", mtu: 40}\n'
    assert problems(bad)[0].startswith("ports[1].name: must be an interface name")


def test_all_problems_reported_with_location_and_nothing_applied():
    text = BASE + "routes:\n  - {prefix: 10.0.0.1/8, port: eth0}\n  - {prefix: 10.1.0.0/16, port: eth7}\n"
    with pytest.raises(ConfigError) as exc:
        loads(text, source="node.yaml")
    first, second = exc.value.problems
    assert (first.source, first.document, first.kind, first.line) == ("node.yaml", 0, "DataplaneConfiguration", 8)
    assert str(first) == ("node.yaml:8 [document 0]: DataplaneConfiguration: routes[0].prefix: "
                          "has host bits set: '10.0.0.1/8' (did you mean '10.0.0.0/8'?)")
    assert second.line == 9
    cfg = loads(text, strict=False)
    assert cfg.dataplane is None and len(cfg.problems) == 2


def test_only_one_dataplane_configuration():
    assert problems(BASE + "---\n" + BASE)[0].endswith(
        "only one is allowed: already defined at <string> [document 0]")


def test_wrong_api_version_and_missing_kind():
    assert problems(BASE.replace("dataplane/v1alpha1", "dataplane/v2")) == [
        "apiVersion: unsupported apiVersion 'dataplane/v2' for DataplaneConfiguration (use 'dataplane/v1alpha1')"]
    assert problems("nodeName: x\n") == [": apiVersion and kind are required"]
    assert problems("- 1\n") == [": an object must be a mapping, got list"]


def test_type_errors_are_not_coerced():
    assert problems(BASE.replace("nodeName: node-a", "nodeName: 42")) == ["nodeName: must be a string, got integer 42"]
    assert problems(BASE + "routes: {prefix: 10.0.0.0/8}\n") == ["routes: must be a list, got a mapping"]


def test_bad_yaml_reports_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(BASE + "routes:\n  - {prefix: 10.0.0.0/8, port: eth0\n")
    with pytest.raises(ConfigError) as exc:
        load(f)
    (p,) = exc.value.problems
    assert p.source == str(f) and p.line == 9 and p.message.startswith("invalid YAML")
    assert str(p).startswith(f"{f}:9 [document 0]: invalid YAML")


def test_duplicate_yaml_key_is_an_error():
    (p,) = problems(BASE + "nodeName: node-b\n")
    assert "duplicate key 'nodeName'" in p


def test_json_input(tmp_path):
    f = tmp_path / "node.json"
    f.write_text(json.dumps({"apiVersion": "dataplane/v1alpha1", "kind": "DataplaneConfiguration",
                             "nodeName": "node-a", "ports": [{"name": "eth0", "mac": "02:00:00:00:00:01"}]}))
    assert load(f).dataplane.ports[0].name == "eth0"
    f.write_text('{"kind": "DataplaneConfiguration",\n "kind": "x"}')
    with pytest.raises(ConfigError, match="invalid JSON: duplicate key 'kind'"):
        load(f)
    f.write_text('{"kind":\n}')
    with pytest.raises(ConfigError) as exc:
        load(f)
    assert exc.value.problems[0].line == 2


def test_directory_input_sorted_and_filtered(tmp_path):
    (tmp_path / "b.yaml").write_text(BASE)
    (tmp_path / "a.json").write_text('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}')
    (tmp_path / "notes.txt").write_text("not: [config")
    cfg = load(tmp_path)
    assert cfg.sources == (str(tmp_path / "a.json"), str(tmp_path / "b.yaml"))
    assert cfg.dataplane.node_name == "node-a"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no \\*.yaml, \\*.yml, \\*.json files"):
        load(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_empty_documents_are_ignored():
    assert loads("---\n" + BASE + "---\n").dataplane.node_name == "node-a"


def test_describe_is_json_able():
    d = load(EXAMPLES / "replay.yaml").describe()
    assert json.loads(json.dumps(d)) == d
    assert d["dataplane"]["ports"] == [{"name": "eth0", "index": 0, "mac": "02:00:00:00:00:01", "mtu": 1500,
                                        "ifname": "eth0", "type": "afpacket",
                                        "addresses": [], "proxyARP": False}]
    assert d["dataplane"]["routes"][0] == {"prefix": "0.0.0.0/0", "port": "eth0", "portIndex": 0,
                                           "via": "192.168.0.1", "mac": "02:00:00:00:00:fe", "vxlan": None}


def test_live_mode_fields():
    cfg = loads(textwrap.dedent("""\
        apiVersion: dataplane/v1alpha1
        kind: DataplaneConfiguration
        nodeName: node-a
        nodeIPs: [192.168.0.2]
        localPort: host
        ports:
          - {name: eth0, mac: "02:00:00:00:00:01", addresses: [10.244.0.1, "fd00:244::1"]}
          - {name: host, type: tap, mac: "02:00:00:00:00:03", proxyARP: true}
        """))
    eth0, host = cfg.dataplane.ports
    assert [str(a) for a in eth0.addresses] == ["10.244.0.1", "fd00:244::1"]
    assert host.proxy_arp and not eth0.proxy_arp and cfg.dataplane.local_port == "host"
    bad = loads(textwrap.dedent("""\
        apiVersion: dataplane/v1alpha1
        kind: DataplaneConfiguration
        nodeName: node-a
        localPort: nope
        ports: [{name: eth0, mac: "02:00:00:00:00:01", addresses: [224.0.0.1]}]
        """), strict=False)
    messages = " / ".join(p.message for p in bad.problems)
    assert "no such port 'nope'" in messages or "224.0.0.1" in messages
