"""The live-mode pipeline in memory: neighbour discovery in front of routing, and delivery of the
node's own packets to a local (tap) port."""
from scapy.all import ARP, ICMP, IP, UDP, Ether

from dataplane.burst import DROP_REASONS, Burst
from dataplane.config import loads
from dataplane.tables import NodeDataplane
from dataplane.trace import trace_record

UPLINK, PODS, HOST = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
KERNEL = "02:00:00:00:00:99"
POD_MAC = "0a:58:0a:f4:00:0a"
CONFIG = f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [192.168.0.2]
clusterCIDRs: [10.244.0.0/16]
localPort: host
ports:
  - {{name: eth0, mac: "{UPLINK}", addresses: [192.168.0.2]}}
  - {{name: pod1, mac: "{PODS}", addresses: [10.244.0.1]}}
  - {{name: host, type: tap, mac: "{HOST}", proxyARP: true}}
routes:
  - {{prefix: 10.244.0.10/32, port: pod1}}
  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1}}
"""


SERVICES = """
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec: {type: LoadBalancer, clusterIP: 10.96.0.30, externalIPs: [203.0.113.20],
       ports: [{port: 443, nodePort: 30443}]}
status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}
"""


class FakeTap:
    kernel_mac = bytes.fromhex(KERNEL.replace(":", ""))


def node():
    dp = NodeDataplane(loads(CONFIG), live=True)
    dp.attach_ports([None, None, FakeTap()])
    return dp


PORT_NONE = 0xFFFF
S = 1_000_000_000


def send(dp, pkt, port, now_ns=1_000_000_000):
    burst = Burst(1)
    burst.append(bytes(pkt), port_in=dp.port_names.index(port))
    dp.pipeline.process(burst, now_ns=now_ns)
    rec = trace_record(burst, 0, 0, dp.port_names)
    if rec["verdict"] == "drop" or rec["verdict"] == "local" and rec["out"] is None:
        # Consumed here: no port may send it (a frame re-sent unchanged poisons L2 learning).
        assert burst.meta(0)["port_out"] == PORT_NONE
    return rec, Ether(burst.frame(0))


def test_unresolved_next_hop_is_held_solicited_and_released():
    """Linux's unresolved queue: the packet waits for its neighbour while its slot carries the
    ARP request; the answer releases it into the burst that brought the answer."""
    dp = node()
    pkt = Ether(dst=UPLINK) / IP(src="192.168.0.50", dst="10.244.0.10") / UDP(dport=53)
    rec, frame = send(dp, pkt, "eth0")
    assert (rec["verdict"], rec["reason"], rec["port"]) == ("forward", "neigh_queued", "pod1")
    assert frame[ARP].op == 1 and frame[ARP].pdst == "10.244.0.10"
    assert frame[ARP].psrc == "10.244.0.1" and frame.dst == "ff:ff:ff:ff:ff:ff"
    reply = Ether(src=POD_MAC, dst=PODS) / ARP(op=2, hwsrc=POD_MAC, psrc="10.244.0.10",
                                               hwdst=PODS, pdst="10.244.0.1")
    burst = Burst(4)
    burst.append(bytes(reply), port_in=dp.port_names.index("pod1"))
    dp.pipeline.process(burst, now_ns=S)
    assert len(burst) == 2 and burst.meta(0)["verdict"] == "local"   # the reply is consumed
    released = Ether(burst.frame(1))
    assert burst.meta(1)["verdict"] == "forward"
    assert burst.meta(1)["port_out"] == dp.port_names.index("pod1")
    assert (released.dst, released.src, released[IP].ttl) == (POD_MAC, PODS, pkt[IP].ttl - 1)
    assert bytes(released[UDP]) == bytes(pkt[UDP])
    rec, frame = send(dp, pkt, "eth0")                                 # resolved from now on
    assert (rec["verdict"], rec["reason"], rec["port"]) == ("forward", None, "pod1")
    assert (frame.dst, frame.src) == (POD_MAC, PODS)


def test_held_packets_are_dropped_when_the_neighbour_never_answers():
    dp = node()
    pkt = Ether(dst=UPLINK) / IP(src="192.168.0.50", dst="10.244.0.10") / UDP(dport=53)
    send(dp, pkt, "eth0")
    assert dp.router.neigh.stats()["held"] == 1
    send(dp, Ether(dst=UPLINK) / IP(src="192.168.0.50", dst="192.168.0.2") / UDP(), "eth0",
         now_ns=10 * S)                                                # any later burst
    assert dp.router.neigh.stats()["held"] == 0
    assert int(dp.pipeline.drops[DROP_REASONS.index("no_neighbor")]) == 1


def test_gateway_arp_is_answered_and_the_asker_learned():
    dp = node()
    ask = Ether(src=POD_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=POD_MAC, psrc="10.244.0.10",
                                                          pdst="10.244.0.1")
    rec, frame = send(dp, ask, "pod1")
    assert (rec["verdict"], rec["port"]) == ("forward", "pod1")
    assert frame[ARP].op == 2 and frame[ARP].hwsrc == PODS and frame.dst == POD_MAC
    # The pod's MAC is known now: traffic to it goes straight out.
    rec, frame = send(dp, Ether(dst=UPLINK) / IP(src="192.168.0.50", dst="10.244.0.10") / UDP(),
                      "eth0")
    assert rec["reason"] is None and frame.dst == POD_MAC


def test_packets_for_the_node_go_to_the_local_port():
    dp = node()
    rec, frame = send(dp, Ether(dst=UPLINK) / IP(src="192.168.0.50", dst="192.168.0.2") / ICMP(),
                      "eth0")
    assert (rec["verdict"], rec["port"]) == ("local", None)
    assert (frame.dst, frame.src) == (KERNEL, HOST)
    # The kernel's own ARP on the tap is answered by proxy.
    rec, frame = send(dp, Ether(src=KERNEL, dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc=KERNEL, psrc="192.168.0.2", pdst="192.168.0.1"), "host")
    assert rec["verdict"] == "forward" and frame[ARP].hwsrc == HOST


def test_foreign_arp_is_dropped_in_live_mode():
    dp = node()
    rec, _ = send(dp, Ether(src="02:00:00:00:00:77", dst="ff:ff:ff:ff:ff:ff") / ARP(
        psrc="192.168.0.77", pdst="192.168.0.78"), "eth0")
    assert (rec["verdict"], rec["reason"]) == ("drop", "not_ip")


def test_service_addresses_are_announced_and_withdrawn():
    dp = node()
    dp.apply(loads(CONFIG + SERVICES))
    for ip in ("203.0.113.10", "203.0.113.20"):
        rec, frame = send(dp, Ether(src="02:00:00:00:00:77", dst="ff:ff:ff:ff:ff:ff") / ARP(
            hwsrc="02:00:00:00:00:77", psrc="192.168.0.77", pdst=ip), "eth0")
        assert rec["verdict"] == "forward" and frame[ARP].op == 2 and frame[ARP].hwsrc == UPLINK
    dp.apply(loads(CONFIG))
    rec, _ = send(dp, Ether(src="02:00:00:00:00:77", dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc="02:00:00:00:00:77", psrc="192.168.0.77", pdst="203.0.113.10"), "eth0")
    assert rec["verdict"] == "drop"
    # The port's own address stays answered.
    rec, _ = send(dp, Ether(src="02:00:00:00:00:77", dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc="02:00:00:00:00:77", psrc="192.168.0.77", pdst="192.168.0.2"), "eth0")
    assert rec["verdict"] == "forward"


def test_neighbours_in_use_are_probed_before_they_expire():
    """Linux's DELAY/PROBE: a neighbour used after it went STALE gets a unicast probe (sent by
    the worker once a second) instead of expiring under traffic and costing a burst."""
    dp = node()
    pkt = Ether(dst=UPLINK) / IP(src="192.168.0.50", dst="10.244.0.10") / UDP(dport=53)
    send(dp, pkt, "eth0")  # becomes the ARP request
    reply = Ether(src=POD_MAC, dst=PODS) / ARP(op=2, hwsrc=POD_MAC, psrc="10.244.0.10",
                                               hwdst=PODS, pdst="10.244.0.1")
    send(dp, reply, "pod1")
    probes = Burst(8)
    assert dp.router.neigh.probe_stale_into(probes, 2 * S) == 0          # REACHABLE: nothing
    later = 40 * S                                                       # past reachable_s
    rec, frame = send(dp, pkt, "eth0", later)
    assert rec["reason"] is None and frame.dst == POD_MAC                # STALE still usable
    assert dp.router.neigh.probe_stale_into(probes, later) == 1
    probe = Ether(probes.frame(0))
    assert (probe.dst, probe[ARP].op, probe[ARP].pdst) == (POD_MAC, 1, "10.244.0.10")
    assert probes.meta(0)["port_out"] == dp.port_names.index("pod1")
    assert dp.router.neigh.probe_stale_into(probes, later) == 0          # once per use
    send(dp, reply, "pod1", later + S // 100)
    assert dp.router.neigh.lookup(1, "10.244.0.10", later + S // 50) == bytes.fromhex(
        POD_MAC.replace(":", ""))
    assert dp.router.neigh.probe_stale_into(probes, later + 2 * S) == 0  # confirmed again

