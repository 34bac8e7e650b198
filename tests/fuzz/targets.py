"""atheris fuzz targets (issue 12): the parser and the whole pipeline, conntrack over sequences
of TCP segments and state files, and the configuration loader. tests/fuzz/run.py drives them
against the sanitizer build; each target is a function of the fuzzer's bytes that may only
raise the errors its API documents."""
from __future__ import annotations

import os
import struct
import tempfile

import atheris

from dataplane import conntrack as ct
from dataplane.burst import Burst
from dataplane.config import ConfigError, loads
from dataplane.tables import NodeDataplane

NODE = """
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [192.168.0.2, "fd00::2"]
clusterCIDRs: [10.244.0.0/16, "fd00:244::/48"]
conntrackSize: 512
ports:
  - {name: eth0, mac: "02:00:00:00:00:01"}
  - {name: cni0, mac: "02:00:00:00:00:02"}
routes:
  - {prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "02:00:00:00:00:fe"}
  - {prefix: "::/0", port: eth0, via: "fd00::1", mac: "02:00:00:00:00:fe"}
  - {prefix: 10.244.1.0/24, vxlan: {vni: 1, remote: 192.168.0.3}}
  - {prefix: 192.168.0.0/24, port: eth0, mac: "02:00:00:00:00:99"}
  - {prefix: 10.244.0.0/24, port: cni0, mac: "0a:58:0a:f4:00:01"}
  - {prefix: "fd00:244::/64", port: cni0, mac: "0a:58:0a:f4:00:01"}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, clusterIP: 10.96.0.10, ports: [{name: h, port: 80, targetPort: 8080, nodePort: 30080},
       {name: u, port: 53, protocol: UDP, targetPort: 53}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: ["10.244.0.10"], nodeName: node-a}, {addresses: ["10.244.1.20"], nodeName: node-b}]
ports: [{name: h, port: 8080, protocol: TCP}, {name: u, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec: {clusterIP: 10.96.0.99, ports: [{port: 80}]}
"""

_node = None
_clock = 1_000_000_000_000


def _pipeline():
    global _node
    if _node is None:
        _node = NodeDataplane(loads(NODE))
    return _node


def _run(frames, port_in):
    global _clock
    node = _pipeline()
    burst = Burst(max(1, len(frames)))
    burst.extend(frames, port_in=port_in)
    _clock += 50_000_000
    node.pipeline.process(burst, now_ns=_clock)
    for i in range(len(burst)):
        burst.frame(i)          # every output frame must be readable


def pipeline(data: bytes) -> None:
    """A port byte, then up to 8 frames as [length: 2 bytes big-endian][bytes], into one burst."""
    frames, pos = [], 1
    while pos + 2 <= len(data) and len(frames) < 8:
        n = int.from_bytes(data[pos:pos + 2], "big") % 1601
        frames.append(data[pos + 2:pos + 2 + n])
        pos += 2 + n
    _run(frames or [data[1:]], data[0] & 1 if data else 0)


_ETH = bytes.fromhex("020000000001" "0200000000aa" "0800")
_FLOWS = [  # (src, dst, port_in): client pod -> ClusterIP, backend -> pod, outside -> NodePort
    ("10.244.0.11", "10.96.0.10", 1), ("10.244.1.20", "10.244.0.11", 0),
    ("203.0.113.5", "192.168.0.2", 0), ("10.244.0.10", "10.244.0.11", 1),
]


def _ip4(addr):
    return bytes(int(x) for x in addr.split("."))


def _tcp_frame(src, dst, sport, dport, seq, ack, flags, win, opts, payload):
    opts += b"\x00" * (-len(opts) % 4)     # at most 40 bytes: data offset 15
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(opts) // 4) << 4, flags,
                      win, 0, 0) + opts + payload
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                                _ip4(src), _ip4(dst)))
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    hdr[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return _ETH + bytes(hdr) + tcp


_SEG = struct.Struct("!BIIBHBB")    # selector, seq, ack, flags, window, options, payload


def conntrack(data: bytes) -> None:
    """Sequences of up to 16 TCP segments on a few flows through the pipeline, each
    [selector][seq][ack][flags][window][options length][payload length][options]: the selector
    picks the flow, its direction, ports and which port it arrives on. On a leading 0xff, the
    rest is a conntrack state file instead."""
    if data[:1] == b"\xff":
        _state_file(data[1:])
        return
    pos = 0
    for _ in range(16):
        if pos + _SEG.size > len(data):
            break
        sel, seq, ack, flags, win, nopt, npay = _SEG.unpack_from(data, pos)
        pos += _SEG.size
        opts = data[pos:pos + nopt % 41]
        pos += len(opts)
        src, dst, port = _FLOWS[sel & 3]
        sport, dport = 40000 + (sel >> 2 & 3), (80, 8080, 30080, 53)[sel >> 4 & 3]
        if sel & 0x40:
            src, dst, sport, dport = dst, src, dport, sport
            port = 1 - port if sel & 0x80 else port
        _run([_tcp_frame(src, dst, sport, dport, seq, ack, flags, win, opts, bytes(npay % 65))],
             port)


def _state_file(raw: bytes) -> None:
    table = ct.Conntrack(64)
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(raw)
    try:
        table.restore(f.name, 1_000_000_000_000)
    except ct.StateFileError:
        return
    finally:
        os.unlink(f.name)
    table.entries()
    for e in table.entries():
        table.window(e["index"])


def config(data: bytes) -> None:
    """Configuration text (YAML or JSON, several documents): a ConfigError or a Config."""
    text = data.decode("utf-8", "replace")
    try:
        loads(text)
    except ConfigError:
        pass


TARGETS = {"pipeline": pipeline, "conntrack": conntrack, "config": config}
