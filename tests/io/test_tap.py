"""TapPort against the kernel's own stack in a throwaway namespace: ARP answered by hand, UDP
from a kernel socket read with rx(), an ICMP echo written with tx() and its reply read back."""
import errno
import socket
import subprocess

import pytest

from dataplane.burst import VERDICT, Burst
from dataplane.io import open_port
from dataplane.tap import TapPort

from conftest import ip, netns, rx_frames

scapy_all = pytest.importorskip("scapy.all")
from scapy.layers.inet import ICMP, IP, UDP  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402

KERNEL_IP = "10.202.0.1"
OUR_IP = "10.202.0.2"
OUR_MAC = "02:00:00:00:02:02"
FORWARD = 1 << VERDICT["forward"]


def send(port, *frames):
    burst = Burst(len(frames))
    burst.extend(bytes(f) for f in frames)
    burst.send_all(0)
    return port.tx(burst, 0, FORWARD)


@pytest.fixture
def tap(netns_one):
    with netns(netns_one):
        port = TapPort("dptap0")
    with port:
        ip("ip", "addr", "add", f"{KERNEL_IP}/24", "dev", "dptap0", ns=netns_one)
        yield port


def answer_arp(port, request: bytes):
    req = Ether(request)
    assert ARP in req and req[ARP].op == 1 and req[ARP].pdst == OUR_IP
    assert req.src == port.kernel_mac.hex(":")
    reply = (Ether(src=OUR_MAC, dst=req.src)
             / ARP(op=2, hwsrc=OUR_MAC, psrc=OUR_IP, hwdst=req.src, pdst=req[ARP].psrc))
    assert send(port, reply) == 1


def test_created_tap_is_up_and_described(tap, netns_one):
    assert tap.created
    assert tap.mtu == 1500 and len(tap.mac) == 6 and tap.kernel_mac == tap.mac
    assert tap.ifindex > 0 and tap.fileno() >= 0
    assert "UP" in ip("ip", "-o", "link", "show", "dptap0", ns=netns_one).split(">")[0]
    assert tap.rx(Burst(4), 0) == 0


def test_udp_from_the_kernel_via_hand_answered_arp(tap, netns_one):
    with netns(netns_one):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with u:
        u.sendto(b"hello tap", (OUR_IP, 7777))
        burst = Burst(16)
        arp = rx_frames(tap, burst, 1, match=lambda f: ARP in Ether(f))
        assert arp, "the kernel should ask who has our address"
        answer_arp(tap, arp[0])
        got = rx_frames(tap, burst, 1, match=lambda f: UDP in Ether(f))
    assert len(got) == 1
    pkt = Ether(got[0])
    assert pkt.dst == OUR_MAC and pkt[IP].src == KERNEL_IP and pkt[IP].dst == OUR_IP
    assert pkt[UDP].dport == 7777 and bytes(pkt[UDP].payload) == b"hello tap"
    check = pkt[UDP].chksum
    del pkt[UDP].chksum
    assert Ether(bytes(pkt))[UDP].chksum == check       # no offload on a tap: complete sums
    assert tap.stats()["rx"] >= 2 and tap.stats()["tx"] == 1


def test_echo_request_written_is_answered(tap, netns_one):
    kmac = tap.kernel_mac.hex(":")
    # The kernel must know our MAC to answer; a static entry keeps the test to one exchange.
    ip("ip", "neigh", "replace", OUR_IP, "lladdr", OUR_MAC, "dev", "dptap0", ns=netns_one)
    req = (Ether(src=OUR_MAC, dst=kmac) / IP(src=OUR_IP, dst=KERNEL_IP)
           / ICMP(type=8, id=0x4242, seq=7) / b"ping from the dataplane")
    assert send(tap, req) == 1
    got = rx_frames(tap, Burst(8), 1, match=lambda f: ICMP in Ether(f))
    assert len(got) == 1
    rep = Ether(got[0])
    assert rep.src == kmac and rep.dst == OUR_MAC
    assert rep[ICMP].type == 0 and (rep[ICMP].id, rep[ICMP].seq) == (0x4242, 7)
    assert bytes(rep[ICMP].payload) == b"ping from the dataplane"


def test_frames_longer_than_mtu_are_tx_errors(tap):
    kmac = tap.kernel_mac
    frame = kmac + bytes.fromhex(OUR_MAC.replace(":", "")) + b"\x08\x00"
    burst = Burst(4)
    burst.append(frame + bytes(1500))         # MTU + 14: accepted
    burst.append(frame + bytes(1501))
    burst.append(b"\x01\x02")                 # not even an Ethernet header
    burst.send_all(0)
    burst.verdicts[0] = VERDICT["drop"]       # only the bad ones are eligible
    assert tap.tx(burst, 0, FORWARD) == 0
    assert tap.stats()["tx_errors"] == 2
    burst.verdicts[0] = VERDICT["forward"]
    assert tap.tx(burst, 0, 1 << VERDICT["drop"]) == 0    # nothing has that verdict now


def test_attach_to_existing_persistent_tap(netns_one):
    ip("ip", "tuntap", "add", "dev", "dptap1", "mode", "tap", ns=netns_one)
    with netns(netns_one):
        with TapPort("dptap1", create=False) as port:
            assert not port.created
        with pytest.raises(OSError) as e:
            TapPort("dptap9", create=False)
        assert e.value.errno == errno.ENODEV
        with pytest.raises(OSError) as e:
            TapPort("lo")                     # exists, but is not a tap
        assert e.value.errno == errno.EINVAL
        created = TapPort("dptap2")
    created.close()
    with pytest.raises(ValueError, match="closed"):
        created.rx(Burst(1), 0)
    # Persistent taps outlive us; the one we created goes with its descriptor.
    ip("ip", "link", "show", "dptap1", ns=netns_one)
    with pytest.raises(subprocess.CalledProcessError):
        ip("ip", "link", "show", "dptap2", ns=netns_one)


def test_open_port_tap_from_config(netns_one):
    from dataplane.config.dataplane import Port
    cfg = Port(name="node", mac=b"\x02" * 6, index=1, type="tap", ifname="dptap3")
    with netns(netns_one):
        with open_port(cfg) as p:
            assert isinstance(p, TapPort) and p.ifname == "dptap3"
        with pytest.raises(ValueError, match="one worker"):
            open_port(cfg, 0, workers=2)
