"""`dataplane replay` end to end: scapy packets in, the CLI, frames and traces out."""
from __future__ import annotations

import json

import pytest
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw, rdpcap, wrpcap)

from dataplane.cli import main

NODE_MAC = "02:00:00:00:00:01"
PODS_MAC = "02:00:00:00:00:02"
GW_MAC = "02:00:00:00:00:fe"
NODE_B_MAC = "02:00:00:00:01:01"
POD_MAC = "0a:58:0a:f4:00:0a"

CONFIG = f"""
apiVersion: dataplane/v1alpha1
kind: DataplaneConfiguration
nodeName: node-a
nodeIPs: [192.168.0.2, "fd00::2"]
ports:
  - {{name: eth0, mac: "{NODE_MAC}"}}
  - {{name: cni0, mac: "{PODS_MAC}"}}
routes:
  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "{GW_MAC}"}}
  - {{prefix: "::/0", port: eth0, via: "fd00::1", mac: "{GW_MAC}"}}
  - {{prefix: 10.244.1.0/24, port: eth0, via: 192.168.0.3, mac: "{NODE_B_MAC}"}}
  - {{prefix: "fd00:244:1::/64", port: eth0, via: "fd00::3", mac: "{NODE_B_MAC}"}}
  - {{prefix: 10.244.0.10/32, port: cni0, mac: "{POD_MAC}"}}
  - {{prefix: 10.99.0.0/16, port: eth0}}
"""

CONFIG_NO_DEFAULT = CONFIG.replace(
    f'  - {{prefix: 0.0.0.0/0, port: eth0, via: 192.168.0.1, mac: "{GW_MAC}"}}\n', "")


def ether():
    return Ether(src="0a:58:0a:f4:00:0b", dst=NODE_MAC)


@pytest.fixture
def run_replay(tmp_path, write_config, capsys):
    """Replay packets through the CLI; returns (exit code, output packets, trace, stdout)."""
    def run(packets, config=CONFIG, extra=()):
        cfg = write_config(config)
        inp, out, trace = tmp_path / "in.pcap", tmp_path / "out.pcap", tmp_path / "trace.jsonl"
        wrpcap(str(inp), packets)
        code = main(["replay", "--config", str(cfg), str(inp), "-o", str(out),
                     "--trace", str(trace), *extra])
        captured = capsys.readouterr()
        outs = list(rdpcap(str(out))) if out.exists() and out.stat().st_size > 24 else []
        records = [json.loads(line) for line in trace.read_text().splitlines()] \
            if trace.exists() else []
        return code, outs, records, captured
    return run


# Packet-flow table: packet in -> verdict, reason, egress port, next-hop MAC.
FLOWS = [
    ("pod to remote pod", IP(src="10.244.0.11", dst="10.244.1.5") / TCP(sport=1234, dport=80),
     "forward", None, "eth0", NODE_B_MAC),
    ("to local pod", IP(src="10.244.1.5", dst="10.244.0.10") / UDP(sport=53, dport=5353),
     "forward", None, "cni0", POD_MAC),
    ("to the internet", IP(src="10.244.0.11", dst="1.1.1.1") / UDP(sport=999, dport=53),
     "forward", None, "eth0", GW_MAC),
    ("to the node", IP(src="192.168.0.50", dst="192.168.0.2") / TCP(dport=22),
     "local", None, None, None),
    ("v6 to remote pod", IPv6(src="fd00:244::10", dst="fd00:244:1::9") / UDP(dport=53),
     "forward", None, "eth0", NODE_B_MAC),
    ("v6 to the node", IPv6(src="fd00::9", dst="fd00::2") / TCP(dport=22),
     "local", None, None, None),
    ("ttl 1 expires", IP(src="10.244.0.11", dst="1.1.1.1", ttl=1) / UDP(dport=33434),
     "drop", "ttl_expired", None, None),
    ("hop limit 1 expires", IPv6(src="fd00:244::10", dst="2001:db8::1", hlim=1) / UDP(),
     "drop", "ttl_expired", None, None),
    ("multicast stays on the link", IP(src="10.244.0.11", dst="224.0.0.251") / UDP(dport=5353),
     "local", None, None, None),
    ("link-local v6 stays on the link", IPv6(src="fe80::1", dst="fe80::2") / UDP(),
     "local", None, None, None),
    ("connected route without a MAC", IP(src="10.244.0.11", dst="10.99.1.1") / UDP(),
     "drop", "no_neighbor", None, None),
]


@pytest.mark.parametrize("name,pkt,verdict,reason,port,mac", FLOWS, ids=[f[0] for f in FLOWS])
def test_packet_flow(run_replay, name, pkt, verdict, reason, port, mac):
    code, outs, records, _ = run_replay([ether() / pkt])
    assert code == 0
    (rec,) = records
    assert (rec["verdict"], rec["reason"], rec["port"]) == (verdict, reason, port)
    if verdict != "forward":
        assert outs == []
        return
    (out,) = outs
    src_mac = NODE_MAC if port == "eth0" else PODS_MAC
    assert (out.dst, out.src) == (mac, src_mac)
    ip_in, ip_out = pkt, out.payload
    if ip_in.version == 4:
        assert ip_out.ttl == ip_in.ttl - 1
        recomputed = ip_out.copy()
        del recomputed.chksum
        assert ip_out.chksum == IP(bytes(recomputed)).chksum
    else:
        assert ip_out.hlim == ip_in.hlim - 1
    assert rec["out"]["src"] == ip_in.src and rec["out"]["dst"] == ip_in.dst


def test_no_route_without_default(run_replay):
    code, outs, records, _ = run_replay(
        [ether() / IP(src="10.244.0.11", dst="8.8.8.8") / UDP()], config=CONFIG_NO_DEFAULT)
    assert code == 0 and outs == []
    assert records[0]["verdict"] == "drop" and records[0]["reason"] == "no_route"


def test_trace_out_tuple_and_protocol_names(run_replay):
    pkts = [ether() / IP(src="10.244.0.11", dst="10.244.1.5") / TCP(sport=1111, dport=80),
            ether() / IP(src="10.244.0.11", dst="10.244.1.5") / ICMP(id=77),
            ether() / IPv6(src="fd00:244::10", dst="fd00:244:1::9") / UDP(sport=7, dport=9)]
    _, _, records, _ = run_replay(pkts)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert records[0]["out"] == {"src": "10.244.0.11", "dst": "10.244.1.5", "sport": 1111,
                                 "dport": 80, "proto": "TCP"}
    assert records[1]["out"]["proto"] == "ICMP" and records[1]["out"]["sport"] == 77
    assert records[2]["out"]["proto"] == "UDP" and records[2]["out"]["dst"] == "fd00:244:1::9"


def test_vlan_tagged_and_arp(run_replay):
    pkts = [ether() / Dot1Q(vlan=10) / IP(src="10.244.0.11", dst="10.244.1.5") / UDP(),
            Ether(src=GW_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.168.0.1",
                                                             pdst="192.168.0.2")]
    code, outs, records, _ = run_replay(pkts)
    assert [r["verdict"] for r in records] == ["forward", "local"]
    assert outs[0][Dot1Q].vlan == 10 and outs[0].dst == NODE_B_MAC


def test_malformed_frames_are_counted_drops(run_replay):
    good = bytes(ether() / IP(src="10.244.0.11", dst="10.244.1.5") / TCP())
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x44
    pkts = [Ether(good[:20]), Ether(bytes(bad_ihl)), Ether(good)]
    code, outs, records, captured = run_replay(pkts, extra=["--json"])
    assert code == 0
    assert [r["verdict"] for r in records] == ["drop", "drop", "forward"]
    assert records[0]["reason"] == "truncated" and records[1]["reason"] == "bad_ihl"
    summary = json.loads(captured.out)
    assert summary["packets"] == 3
    assert summary["drops"]["truncated"] == 1 and summary["drops"]["bad_ihl"] == 1
    assert summary["counters"]["rx"] == 3 and summary["counters"]["tx"] == 1
    assert summary["ports"]["eth0"]["tx"] == 1


def test_in_port_selects_ingress(run_replay):
    code, _, _, captured = run_replay([ether() / IP(dst="10.244.1.5") / UDP()],
                                      extra=["--in-port", "nope"])
    assert code == 2 and "nope" in captured.err and "eth0" in captured.err
    code, _, records, _ = run_replay([ether() / IP(dst="10.244.1.5") / UDP()],
                                     extra=["--in-port", "cni0"])
    assert code == 0 and records[0]["verdict"] == "forward"


def test_bad_config_is_a_clear_error(run_replay):
    code, _, _, captured = run_replay([ether() / IP() / UDP()],
                                      config=CONFIG.replace("eth0, via", "eth9, via", 1))
    assert code == 2
    assert "eth9" in captured.err and "Traceback" not in captured.err


def test_corrupt_capture_keeps_what_was_good(tmp_path, write_config, capsys):
    inp, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    wrpcap(str(inp), [ether() / IP(src="10.244.0.11", dst="10.244.1.5") / UDP()] * 3)
    data = inp.read_bytes()
    inp.write_bytes(data[:-10])  # last record cut off mid-packet
    code = main(["replay", "--config", str(write_config(CONFIG)), str(inp), "-o", str(out),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["packets"] == 2
    assert str(inp) in captured.err and "offset" in captured.err
    assert len(rdpcap(str(out))) == 2


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, b"GIF89a" + b"\x00" * 40,
                                     b"\xd4\xc3\xb2\xa1" + b"\x00" * 10])
def test_capture_corrupt_from_offset_0_exits_1_like_corruption_part_way(
        tmp_path, write_config, capsys, content):
    """Exit status 2 is for a bad configuration; a bad capture is an input error (1) wherever
    it breaks."""
    inp = tmp_path / "in.pcap"
    inp.write_bytes(content)
    code = main(["replay", "--config", str(write_config(CONFIG)), str(inp), "-o",
                 str(tmp_path / "o.pcap"), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["packets"] == 0
    assert str(inp) in captured.err and "offset 0" in captured.err
    assert "Traceback" not in captured.err


def test_record_longer_than_the_snaplen_is_counted_and_warned(tmp_path, write_config, capsys,
                                                              caplog):
    inp = tmp_path / "in.pcap"
    wrpcap(str(inp), [ether() / IP(src="10.244.0.11", dst="10.244.1.5") / UDP() / (b"x" * 200)])
    raw = bytearray(inp.read_bytes())
    raw[16:20] = (100).to_bytes(4, "little")      # global header snaplen 100 < caplen 242
    inp.write_bytes(bytes(raw))
    code = main(["replay", "--config", str(write_config(CONFIG)), str(inp), "-o",
                 str(tmp_path / "o.pcap"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["packets"] == 1 and summary["over_snaplen"] == 1
    assert "snaplen" in caplog.text


def test_unsupported_linktype_is_a_clear_error(shared_pcaps, tmp_path, write_config, capsys):
    code = main(["replay", "--config", str(write_config(CONFIG)),
                 str(shared_pcaps / "tcpdump__e1000g.pcap"), "-o", str(tmp_path / "o.pcap")])
    err = capsys.readouterr().err
    assert code in (1, 2) and "226" in err and "Traceback" not in err


def test_every_shared_capture_replays_without_crashing(shared_pcaps, tmp_path, write_config,
                                                       capsys):
    cfg = write_config(CONFIG)
    for pcap in sorted(shared_pcaps.glob("*.*cap*")):
        trace = tmp_path / f"{pcap.name}.jsonl"
        code = main(["replay", "--config", str(cfg), str(pcap), "-o",
                     str(tmp_path / f"{pcap.name}.out.pcap"), "--trace", str(trace), "--json"])
        out = capsys.readouterr().out
        if pcap.name == "tcpdump__e1000g.pcap":
            assert code != 0
            continue
        assert code == 0, pcap.name
        summary = json.loads(out)
        records = trace.read_text().splitlines()
        assert len(records) == summary["packets"] == summary["counters"]["rx"]
        decided = summary["counters"]["routed"] + summary["counters"]["local"] \
            + sum(summary["drops"].values())
        assert decided == summary["packets"], pcap.name


@pytest.mark.parametrize("command", [[], ["replay"], ["check"], ["demo"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: dataplane" in capsys.readouterr().out


def test_demo_runs(capsys):
    assert main(["demo", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["packets"] == 1170
    assert summary["counters"]["routed"] > 0 and summary["counters"]["local"] > 0
    assert summary["drops"]["ttl_expired"] == 20
    assert summary["counters"]["dnat"] == 150 and summary["counters"]["reject"] == 10


def test_frames_larger_than_a_slot_are_oversize_drops(run_replay):
    big = ether() / IP(src="10.244.0.11", dst="10.244.1.5") / UDP() / Raw(bytes(3000))
    code, outs, records, _ = run_replay([ether() / IP(dst="10.244.1.5") / UDP(), big,
                                         ether() / IP(dst="10.244.1.5") / UDP()])
    assert code == 0 and len(outs) == 2
    assert [(r["index"], r["verdict"], r["reason"]) for r in records] == [
        (0, "forward", None), (1, "drop", "oversize"), (2, "forward", None)]
