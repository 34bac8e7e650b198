"""VXLAN overlay (RFC 7348, flannel's vxlan backend): route-stage encapsulation, the decap stage,
the configuration that drives both, and a round trip between two nodes."""
import ipaddress

import pytest
from scapy.all import ARP, ICMP, IP, UDP, Ether, Raw, rdpcap
from scapy.layers.vxlan import VXLAN

from dataplane.burst import COUNTERS, Burst
from dataplane.config import ConfigError, loads
from dataplane.lpm import LPM4, LPM6
from dataplane.nat import _move
from dataplane.pipeline import Pipeline
from dataplane.route import Router
from dataplane.tables import NodeDataplane
from dataplane.trace import trace_record

UPLINK_A, PODS_A = "02:00:00:00:0a:01", "02:00:00:00:0a:02"
UPLINK_B, PODS_B = "02:00:00:00:0b:01", "02:00:00:00:0b:02"
POD_A, POD_B = "0a:58:0a:f4:01:0a", "0a:58:0a:f4:02:0a"
VTEP_A, VTEP_B = "02:00:c0:a8:00:02", "02:00:c0:a8:00:03"   # 02:00 + node IP


def node_config(me, other, uplink, pods, pod_mac, other_uplink, vxlan="{vni: 1, remote: %s}"):
    k, j = me[-1], other[-1]   # node .2 owns 10.244.2.0/24, node .3 owns 10.244.3.0/24
    return f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-{k}
nodeIPs: [{me}]
clusterCIDRs: [10.244.0.0/16]
ports:
  - {{name: eth0, mac: "{uplink}", addresses: [{me}]}}
  - {{name: pod1, mac: "{pods}", addresses: [10.244.{k}.1]}}
routes:
  - {{prefix: 10.244.{k}.10/32, port: pod1, mac: "{pod_mac}"}}
  - {{prefix: 10.244.{j}.0/24, vxlan: {vxlan % other}}}
  - {{prefix: {other}/32, port: eth0, mac: "{other_uplink}"}}
  - {{prefix: 192.168.0.0/24, port: eth0}}
"""


def node_a(**kw):
    return NodeDataplane(loads(node_config("192.168.0.2", "192.168.0.3", UPLINK_A, PODS_A, POD_A, UPLINK_B, **kw)))


def node_b():
    return NodeDataplane(loads(node_config("192.168.0.3", "192.168.0.2", UPLINK_B, PODS_B, POD_B, UPLINK_A)))


def run(dp, frames, port):
    burst = Burst(max(len(frames), 1))
    for f in frames:
        burst.append(bytes(f), port_in=dp.port_names.index(port))
    dp.pipeline.process(burst, now_ns=1_000_000_000)
    return burst


def send(dp, pkt, port):
    burst = run(dp, [pkt], port)
    return trace_record(burst, 0, 0, dp.port_names), burst.frame(0), burst.meta(0)


def counter(dp, name):
    return int(dp.pipeline.counters[COUNTERS.index(name)])


POD_TO_POD = (Ether(src=POD_A, dst=PODS_A) / IP(src="10.244.2.10", dst="10.244.3.10", ttl=64)
              / UDP(sport=1111, dport=53) / Raw(b"question"))


def test_encapsulation_matches_scapy_byte_for_byte():
    dp = node_a()
    rec, frame, meta = send(dp, POD_TO_POD, "pod1")
    assert (rec["verdict"], rec["reason"], rec["port"]) == ("forward", None, "eth0")
    sport = 49152 + ((meta["hash"] * 16384) >> 32)   # inner flow hash, scaled as Linux does
    inner = Ether(bytes(POD_TO_POD))
    inner.src, inner.dst = VTEP_A, VTEP_B
    inner[IP].ttl = 63
    del inner[IP].chksum
    expected = (Ether(src=UPLINK_A, dst=UPLINK_B)
                / IP(src="192.168.0.2", dst="192.168.0.3", ttl=64, flags="DF", id=0)
                / UDP(sport=sport, dport=4789, chksum=0) / VXLAN(flags=0x08, vni=1) / inner)
    assert frame == bytes(expected)
    out = Ether(frame)
    check = out[IP].chksum
    del out[IP].chksum
    assert Ether(bytes(out))[IP].chksum == check                      # valid outer header checksum
    assert out[VXLAN].vni == 1 and out[VXLAN].flags == 0x08 and 49152 <= out[UDP].sport
    assert out[VXLAN][IP].ttl == 63                                   # inner TTL decremented once
    # The meta and the trace describe the outer packet.
    assert rec["out"] == {"src": "192.168.0.2", "dst": "192.168.0.3", "sport": sport, "dport": 4789,
                          "proto": "UDP"}
    assert (meta["len"], meta["l3_off"], meta["l3_len"]) == (len(frame), 14, len(frame) - 14)
    assert counter(dp, "vxlan_encap") == 1


def test_encapsulation_port_and_vtep_mac_from_config():
    dp = node_a(vxlan='{vni: 4096, remote: %s, port: 8472, vtepMAC: "02:aa:bb:cc:dd:ee"}')
    _, frame, _ = send(dp, POD_TO_POD, "pod1")
    out = Ether(frame)
    assert (out[UDP].dport, out[VXLAN].vni, out[VXLAN][Ether].dst) == (8472, 4096, "02:aa:bb:cc:dd:ee")


def test_flows_spread_over_source_ports():
    dp = node_a()
    frames = [Ether(src=POD_A, dst=PODS_A) / IP(src="10.244.2.10", dst="10.244.3.10") / UDP(sport=s, dport=53)
              for s in range(1000, 1032)]
    burst = run(dp, frames, "pod1")
    sports = {Ether(burst.frame(i))[UDP].sport for i in range(len(frames))}
    assert len(sports) > 24 and min(sports) >= 49152


def test_no_headroom_is_a_counted_drop():
    dp = node_a()
    burst = Burst(1)
    burst.append(bytes(POD_TO_POD), port_in=1)
    _move(burst, 0, 40)                         # less than the 50 bytes of outer headers
    dp.pipeline.process(burst, now_ns=1)
    assert (burst.meta(0)["verdict"], burst.meta(0)["reason"]) == ("drop", "oversize")


def vxlan_to_b(vni=1, flags=0x08, dst="192.168.0.3", dport=4789, inner=None):
    if inner is None:
        inner = (Ether(src=VTEP_A, dst=VTEP_B) / IP(src="10.244.2.10", dst="10.244.3.10", ttl=63)
                 / UDP(sport=1111, dport=53) / Raw(b"question"))
    return (Ether(src=UPLINK_A, dst=UPLINK_B) / IP(src="192.168.0.2", dst=dst)
            / UDP(sport=50000, dport=dport, chksum=0) / VXLAN(flags=flags, vni=vni) / inner)


def test_decapsulated_frame_is_routed_to_the_pod():
    dp = node_b()
    rec, frame, meta = send(dp, vxlan_to_b(), "eth0")
    assert (rec["verdict"], rec["port"]) == ("forward", "pod1")
    out = Ether(frame)
    assert (out.src, out.dst, out[IP].ttl, out[Raw].load) == (PODS_B, POD_B, 62, b"question")
    assert rec["out"]["src"] == "10.244.2.10" and meta["port_in"] == 0
    assert counter(dp, "vxlan_decap") == 1


@pytest.mark.parametrize("pkt", [
    vxlan_to_b(vni=2),                                            # unknown VNI
    vxlan_to_b(flags=0x00),                                       # I flag clear
    vxlan_to_b(inner=Raw(b"")),                                   # nothing inside
    vxlan_to_b(inner=Raw(b"\x00" * 10)),                          # truncated inner Ethernet
], ids=["unknown-vni", "no-i-flag", "empty", "truncated"])
def test_bad_vxlan_is_dropped(pkt):
    dp = node_b()
    rec, _, _ = send(dp, pkt, "eth0")
    assert (rec["verdict"], rec["reason"]) == ("drop", "bad_vxlan")
    assert counter(dp, "vxlan_decap") == 0


def test_other_udp_is_not_decapsulated():
    dp = node_b()
    assert send(dp, vxlan_to_b(dport=4790), "eth0")[0]["verdict"] == "local"      # not our port
    _, _, meta = send(dp, vxlan_to_b(dst="192.168.0.9"), "eth0")                 # not our address:
    assert meta["reason"] == "no_neighbor" and meta["t"]["dport"] == 4789          # routed as is
    assert counter(dp, "vxlan_decap") == 0


def test_round_trip_between_two_nodes():
    a, b = node_a(), node_b()
    _, wire, _ = send(a, POD_TO_POD, "pod1")
    rec, frame, _ = send(b, Ether(wire), "eth0")
    assert (rec["verdict"], rec["port"]) == ("forward", "pod1")
    delivered = Ether(frame)
    assert (delivered.dst, delivered[IP].src, delivered[IP].ttl) == (POD_B, "10.244.2.10", 62)
    assert bytes(delivered[UDP]) == bytes(POD_TO_POD[UDP])


def test_live_node_resolves_the_remote_vtep_by_arp():
    dp = NodeDataplane(loads(node_config("192.168.0.2", "192.168.0.3", UPLINK_A, PODS_A, POD_A, UPLINK_B)
                             .replace(f'  - {{prefix: 192.168.0.3/32, port: eth0, mac: "{UPLINK_B}"}}\n', "")),
                       live=True)
    rec, frame, _ = send(dp, POD_TO_POD, "pod1")
    # The packet is held, its slot carries the ARP request for the remote VTEP.
    assert (rec["verdict"], rec["reason"], rec["port"]) == ("forward", "neigh_queued", "eth0")
    assert Ether(frame)[ARP].pdst == "192.168.0.3" and Ether(frame)[ARP].psrc == "192.168.0.2"
    # The answer releases it, encapsulated, into the burst that brought the answer.
    burst = Burst(4)
    burst.append(bytes(Ether(src=UPLINK_B, dst=UPLINK_A) / ARP(
        op=2, hwsrc=UPLINK_B, psrc="192.168.0.3", hwdst=UPLINK_A, pdst="192.168.0.2")),
        port_in=dp.port_names.index("eth0"))
    dp.pipeline.process(burst, now_ns=1_000_000_000)
    assert len(burst) == 2 and counter(dp, "neigh_released") == 1
    released = Ether(burst.frame(1))
    assert released.dst == UPLINK_B and released[VXLAN].vni == 1
    assert released[VXLAN][IP].dst == "10.244.3.10"


def test_shared_capture_decapsulates(shared_pcaps):
    pkts = rdpcap(str(shared_pcaps / "tcpdump__vxlan.pcap"))   # VNI 100, inner ARP and ICMP
    dp = NodeDataplane(loads(f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: vtep
nodeIPs: [192.168.202.1, 192.168.203.1]
ports: [{{name: eth0, mac: "{UPLINK_B}"}}]
routes:
  - {{prefix: 192.168.203.0/24, port: eth0, mac: "{UPLINK_A}"}}
  - {{prefix: 10.0.0.0/8, vxlan: {{vni: 100, remote: 192.168.203.9}}}}
"""))
    burst = run(dp, pkts, "eth0")
    assert counter(dp, "vxlan_decap") == len(pkts) == 10
    metas = [burst.meta(i) for i in range(len(pkts))]
    assert [m["l3"] for m in metas] == [3 if ARP in p[VXLAN] else 1 for p in pkts]   # inner ARP / IPv4
    icmp = [m for m, p in zip(metas, pkts) if ICMP in p[VXLAN]]
    assert {(m["t"]["src"], m["t"]["dst"]) for m in icmp} == {("192.168.203.3", "192.168.203.5"),
                                                                ("192.168.203.5", "192.168.203.3")}
    assert all(m["verdict"] == "forward" and m["reason"] is None for m in icmp)


@pytest.mark.parametrize("vxlan, path, message", [
    ("{vni: 16777216, remote: 192.168.0.3}", "routes[1].vxlan.vni", "must be 0-16777215"),
    ("{vni: 1, remote: 224.0.0.1}", "routes[1].vxlan.remote", "unicast"),
    ("{vni: 1, remote: 'fd00::3'}", "routes[1].vxlan.remote", "must be an IPv4 address"),
    ("{vni: 1, remote: 192.168.0.3, port: 0}", "routes[1].vxlan.port", "must be 1-65535"),
    ("{vni: 1, remote: 192.168.0.3, vtepMAC: 'nope'}", "routes[1].vxlan.vtepMAC", "MAC"),
    ("{vni: 1}", "routes[1].vxlan.remote", "required"),
    ("{vni: 1, remote: 192.168.0.3, ttl: 1}", "routes[1].vxlan.ttl", "unknown field"),
    ("{vni: 1, remote: 192.168.0.2}", "routes[1].vxlan.remote", "own address"),
    ("{vni: 1, remote: 10.244.3.7}", "routes[1].vxlan.remote", "other than through a tunnel"),
])
def test_vxlan_route_validation(vxlan, path, message):
    text = node_config("192.168.0.2", "192.168.0.3", UPLINK_A, PODS_A, POD_A, UPLINK_B).replace(
        "vxlan: {vni: 1, remote: 192.168.0.3}", f"vxlan: {vxlan}")
    with pytest.raises(ConfigError) as exc:
        loads(text)
    assert path in str(exc.value) and message in str(exc.value)


def test_vxlan_route_takes_no_port():
    text = node_config("192.168.0.2", "192.168.0.3", UPLINK_A, PODS_A, POD_A, UPLINK_B).replace(
        "vxlan: {vni: 1", "port: eth0, vxlan: {vni: 1")
    with pytest.raises(ConfigError, match=r"routes\[1\]\.port: not allowed with vxlan"):
        loads(text)


def test_tunnel_without_an_underlay_is_refused_at_build_and_never_followed():
    router = Router(LPM4(), LPM6())
    vtep = bytes.fromhex("020000000001")
    nh = router.add_vxlan_nexthop(1, "192.168.0.2", "192.168.0.3", 4789, vtep, vtep)
    router.lpm4.add(ipaddress.ip_network("10.244.3.0/24"), nh)
    with pytest.raises(ValueError, match="VXLAN remote 192.168.0.3 needs a route"):
        router.resolve_underlay()
    burst = Burst(1)
    burst.append(bytes(POD_TO_POD), port_in=0)
    Pipeline(router, 1).process(burst, now_ns=1)
    assert (burst.meta(0)["verdict"], burst.meta(0)["reason"]) == ("drop", "no_route")
