"""dataplane.pcap against scapy's readers, the shared capture corpus and hand-built bad files."""
import struct
from decimal import Decimal
from pathlib import Path

import pytest

from dataplane.burst import Burst
from dataplane.pcap import PcapError, PcapReader, PcapWriter, read_all

scapy_all = pytest.importorskip("scapy.all")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "pcaps"
needs_corpus = pytest.mark.skipif(not (PCAPS / "MANIFEST.tsv").is_file(),
                                  reason=f"shared captures not found at {PCAPS}")
# A slot big enough for any frame of the corpus (print-flags has a 5625-byte loopback frame).
BIG_SLOT = 65535 + 128


def manifest():
    if not (PCAPS / "MANIFEST.tsv").is_file():
        return []
    lines = (PCAPS / "MANIFEST.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


def read_frames(path, capacity=256, slot_size=BIG_SLOT):
    """(frame bytes, ts_ns) for every record, read through bursts of `capacity`."""
    burst = Burst(capacity, slot_size)
    out = []
    with PcapReader(path) as r:
        while r.fill(burst):
            out += [(burst.frame(i), burst.meta(i)["ts_ns"]) for i in range(len(burst))]
    return out


def scapy_ts_ns(pkt):
    return int(Decimal(str(pkt.time)) * 10**9)


# Link header length of each non-Ethernet link type in the corpus and hand-built files.
LINK_HLEN = {113: 16, 276: 20, 101: 0, 12: 0, 14: 0, 228: 0, 229: 0}


def expected_frame(raw, linktype):
    """What our reader must deliver for a captured record: Ethernet as is, everything else
    behind a synthetic header (dst 0, src = 6-byte link address, ethertype)."""
    if linktype == 1:
        return raw
    if linktype == 113:
        src = raw[6:12] if raw[4:6] == b"\x00\x06" else bytes(6)
        return bytes(6) + src + raw[14:16] + raw[16:]
    if linktype == 276:
        src = raw[12:18] if raw[11] == 6 else bytes(6)
        return bytes(6) + src + raw[0:2] + raw[20:]
    version = raw[0] >> 4 if raw else 0
    ethertype = {4: b"\x08\x00", 6: b"\x86\xdd"}.get(version, b"\x00\x00")
    return bytes(12) + ethertype + raw


@needs_corpus
@pytest.mark.parametrize("entry", manifest(), ids=lambda e: e["file"])
def test_corpus_matches_scapy(entry):
    path = PCAPS / entry["file"]
    linktype = int(entry["linktype"].split("(")[0])
    if linktype == 226:
        with pytest.raises(PcapError) as err:
            PcapReader(path)
        assert "226" in str(err.value) and "IPNET" in str(err.value)
        assert err.value.path == str(path) and err.value.offset == 20
        return
    ours = read_frames(path)
    theirs = scapy_all.rdpcap(str(path))
    assert len(ours) == len(theirs) == int(entry["packets"])
    for (frame, ts), pkt in zip(ours, theirs):
        if linktype != 1:
            # The payload after our synthetic header is the capture minus its link header.
            assert frame[14:] == pkt.original[LINK_HLEN[linktype]:]
        assert frame == expected_frame(pkt.original, linktype)
        assert ts == scapy_ts_ns(pkt)


@needs_corpus
def test_empty_capture_yields_nothing():
    assert read_all(PCAPS / "tcpdump__empty.pcap") == []


@needs_corpus
def test_big_endian_capture():
    path = PCAPS / "tcpdump__isup.pcap"
    assert path.read_bytes()[:4] == b"\xa1\xb2\xc3\xd4"
    with PcapReader(path) as r:
        assert r.linktype == 1 and not r.nsec
    frames = read_all(path)
    assert frames == [p.original for p in scapy_all.rdpcap(str(path))]
    assert len(frames) == 6


@needs_corpus
def test_nanosecond_timestamps_exact():
    path = PCAPS / "tcpdump__tcp-handshake-nano.pcap"
    with PcapReader(path) as r:
        assert r.nsec and r.linktype == 113
    ours = read_frames(path)
    theirs = scapy_all.rdpcap(str(path))
    assert [ts for _, ts in ours] == [scapy_ts_ns(p) for p in theirs]
    assert ours[0][1] == 1418145369_924505488
    assert all(f[12:14] == b"\x08\x00" for f, _ in ours)


@needs_corpus
def test_pcapng_multiple_interfaces():
    path = PCAPS / "pcpp__dns_over_tcp.pcapng"
    frames = read_all(path)
    assert len(frames) == 4
    assert frames == [p.original for p in scapy_all.rdpcap(str(path))]


@needs_corpus
def test_pcapng_with_pcap_extension():
    path = PCAPS / "pcpp__IcmpPackets.pcap"
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert len(read_all(path)) == 15


@needs_corpus
def test_truncated_records_delivered_as_captured():
    path = PCAPS / "tcpdump__tcp_header_heapoverflow.pcap"
    # Link type field 0x30000001: FCS bits above the low 16.
    assert struct.unpack("<I", path.read_bytes()[20:24])[0] == 0x30000001
    with PcapReader(path) as r:
        assert r.linktype == 1
    [frame] = read_all(path)
    assert frame == scapy_all.rdpcap(str(path))[0].original


@needs_corpus
def test_oversize_frames_flagged_and_counted():
    path = PCAPS / "tcpdump__print-flags.pcap"
    burst = Burst()
    with PcapReader(path) as r:
        assert r.fill(burst) == 10
        frames = burst.frames()
        flags = [burst.meta(i)["flags"] for i in range(10)]
        assert r.oversize == 1 and r.packets_read == 10
        assert r.fill(burst) == 0
    expected = [p.original for p in scapy_all.rdpcap(str(path))]
    big = [i for i, f in enumerate(expected) if len(f) > burst.max_frame]
    assert len(big) == 1
    assert [bool(f & 0x100) for f in flags] == [i in big for i in range(10)]
    assert frames == [b"" if i in big else f for i, f in enumerate(expected)]


# --- hand-built files ---------------------------------------------------------------------

def pcap_header(linktype=1, magic=0xA1B2C3D4, endian="<", snaplen=65535):
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(frame, sec=0, frac=0, caplen=None, endian="<"):
    caplen = len(frame) if caplen is None else caplen
    return struct.pack(endian + "IIII", sec, frac, caplen, len(frame)) + frame


def block(btype, body, endian="<"):
    body += bytes(-len(body) % 4)
    n = len(body) + 12
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def shb(endian="<"):
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def idb(linktype=1, snaplen=0, tsresol=None, tsoffset=None, endian="<"):
    opts = b""
    if tsresol is not None:
        opts += struct.pack(endian + "HHB3x", 9, 1, tsresol)
    if tsoffset is not None:
        opts += struct.pack(endian + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(endian + "HH", 0, 0)
    return block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts, endian)


def epb(frame, ifid=0, ts=0, endian="<", caplen=None):
    caplen = len(frame) if caplen is None else caplen
    return block(6, struct.pack(endian + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, caplen,
                                len(frame)) + frame, endian)


def frame_n(i, size=60):
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pkt = eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53)
    return bytes(pkt) + bytes(max(0, size - len(pkt)))


FRAMES = [frame_n(i) for i in range(5)]


def write(tmp_path, data, name="f.pcap"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_zero_length_file(tmp_path):
    path = write(tmp_path, b"")
    with pytest.raises(PcapError, match="empty file") as err:
        PcapReader(path)
    assert err.value.path == str(path) and err.value.offset == 0


def test_not_a_regular_file():
    with pytest.raises(PcapError, match="not a regular file"):
        PcapReader("/dev/null")


def test_header_only_pcap_is_fine(tmp_path):
    with PcapReader(write(tmp_path, pcap_header())) as r:
        assert r.fill(Burst()) == 0 and r.offset == 24


@pytest.mark.parametrize("data, offset, match", [
    (pcap_header()[:10], 0, "global header cut off"),
    (b"\x00" * 24, 0, "unknown magic"),
    (b"\xa1", 0, "too short"),
    (pcap_header(linktype=226), 20, "link type 226"),
])
def test_bad_header(tmp_path, data, offset, match):
    with pytest.raises(PcapError, match=match) as err:
        PcapReader(write(tmp_path, data))
    assert err.value.offset == offset


@pytest.mark.parametrize("tail, match", [
    (pcap_record(FRAMES[1])[:8], "record header cut off"),
    (pcap_record(FRAMES[1], caplen=100)[:16 + 50], "runs past end of file"),
    (pcap_record(FRAMES[1], caplen=0x04000000), "exceeds the 262144-byte maximum"),
])
def test_bad_record_after_good_ones(tmp_path, tail, match):
    good = pcap_header() + pcap_record(FRAMES[0]) + pcap_record(FRAMES[2])
    burst = Burst()
    with PcapReader(write(tmp_path, good + tail)) as r:
        # The good frames come first; the error follows on the next call, with the offset.
        assert r.fill(burst) == 2 and burst.frames() == [FRAMES[0], FRAMES[2]]
        for _ in range(2):  # and stays put
            with pytest.raises(PcapError, match=match) as err:
                r.fill(burst)
            assert err.value.offset == len(good)
            assert isinstance(err.value, ValueError)


def raw_block(btype, length, body=b""):
    return struct.pack("<II", btype, length) + body


@pytest.mark.parametrize("bad, match", [
    (raw_block(5, 30, bytes(26)), "not a multiple of 4"),
    (raw_block(5, 8, bytes(8)), "smaller than 12"),
    (raw_block(5, 64, bytes(20)), "runs past end of file"),
    (raw_block(6, 4096, bytes(8)), "runs past end of file"),
    (block(5, b"")[:-4] + struct.pack("<I", 16), "trailing block length"),
    (raw_block(5, 12)[:6], "block header cut off"),
    (block(6, struct.pack("<IIIII", 0, 0, 0, 400, 400) + bytes(60)), "runs past its block"),
    (block(6, bytes(8)), "too short"),
    (epb(FRAMES[0], ifid=3), "interface 3"),
])
def test_bad_pcapng_block(tmp_path, bad, match):
    good = shb() + idb() + epb(FRAMES[0])
    burst = Burst()
    with PcapReader(write(tmp_path, good + bad, "f.pcapng")) as r:
        assert r.fill(burst) == 1
        with pytest.raises(PcapError, match=match) as err:
            r.fill(burst)
        assert err.value.offset == len(good)


def test_bad_pcapng_section_header(tmp_path):
    bad = shb()[:8] + b"\x00\x00\x00\x00" + shb()[12:]
    with pytest.raises(PcapError, match="byte-order magic") as err:
        PcapReader(write(tmp_path, bad, "f.pcapng"))
    assert err.value.offset == 0


def test_pcapng_unsupported_linktype_raises_at_first_packet(tmp_path):
    head = shb() + idb(1) + idb(226) + epb(FRAMES[0], 0) + epb(FRAMES[1], 0)
    path = write(tmp_path, head + epb(FRAMES[2], 1) + epb(FRAMES[3], 0), "f.pcapng")
    burst = Burst()
    with PcapReader(path) as r:
        assert r.linktype == 1
        assert r.fill(burst) == 2
        with pytest.raises(PcapError, match=r"unsupported link type 226 \(IPNET\)") as err:
            r.fill(burst)
        assert err.value.offset == len(head)


def test_pcapng_sections_byte_orders_and_block_kinds(tmp_path):
    ts = 1_700_000_000_123_456
    data = (
        shb() + idb(1) + block(4, b"\x00\x00\x00\x00")     # NRB, skipped
        + epb(FRAMES[0], 0, ts)
        + block(5, bytes(8))                                  # ISB, skipped
        + block(0xBAD, bytes(12))                             # custom, skipped
        + block(3, struct.pack("<I", 60) + FRAMES[1])         # SPB
        + block(2, struct.pack("<HHIIII", 0, 0, ts >> 32, ts & 0xFFFFFFFF, 60, 60) + FRAMES[2])
        # A second, big-endian section: its interface ids start again at 0.
        + shb(">") + idb(1, tsresol=9, endian=">") + epb(FRAMES[3], 0, 5_000_000_007, ">")
        + shb() + idb(1, tsresol=0x80 | 20) + idb(1, tsresol=3, tsoffset=100)
        + epb(FRAMES[4], 0, (7 << 20) | (1 << 19)) + epb(FRAMES[0], 1, 1500)
    )
    ours = read_frames(write(tmp_path, data, "f.pcapng"))
    assert [f for f, _ in ours] == [FRAMES[0], FRAMES[1], FRAMES[2], FRAMES[3], FRAMES[4],
                                    FRAMES[0]]
    assert [t for _, t in ours] == [ts * 1000, 0, ts * 1000, 5_000_000_007, 7_500_000_000,
                                    101_500_000_000]


def test_spb_cut_to_snaplen(tmp_path):
    data = shb() + idb(1, snaplen=40) + block(3, struct.pack("<I", 60) + FRAMES[1])
    assert read_all(write(tmp_path, data, "f.pcapng")) == [FRAMES[1][:40]]


def sll(payload, proto=0x0800, addr=b"\x02\xaa\xbb\xcc\xdd\xee"):
    return struct.pack(">HHH8sH", 0, 1, len(addr), addr.ljust(8, b"\0"), proto) + payload


def sll2(payload, proto=0x86DD, addr=b"\x02\x11\x22\x33\x44\x55"):
    return struct.pack(">HHIHBB8s", proto, 0, 2, 1, 0, len(addr), addr.ljust(8, b"\0")) + payload


IP4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
IP6 = bytes(IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=1, dport=2))


@pytest.mark.parametrize("linktype, record, frame", [
    (113, sll(IP4), bytes(6) + b"\x02\xaa\xbb\xcc\xdd\xee\x08\x00" + IP4),
    (113, sll(IP4, addr=b"\x01\x02\x03\x04"), bytes(12) + b"\x08\x00" + IP4),
    (113, sll(b"", addr=b""), bytes(12) + b"\x08\x00"),
    (113, sll(b"")[:10], b""),      # link header cut off: an empty frame for the parser to drop
    (276, sll2(IP6), bytes(6) + b"\x02\x11\x22\x33\x44\x55\x86\xdd" + IP6),
    (101, IP4, bytes(12) + b"\x08\x00" + IP4),
    (101, IP6, bytes(12) + b"\x86\xdd" + IP6),
    (101, b"\x20\x00", bytes(12) + b"\x00\x00\x20\x00"),
    (12, IP6, bytes(12) + b"\x86\xdd" + IP6),
    (14, IP4, bytes(12) + b"\x08\x00" + IP4),
    (228, IP4, bytes(12) + b"\x08\x00" + IP4),
    (229, IP6, bytes(12) + b"\x86\xdd" + IP6),
])
def test_link_types_become_ethernet(tmp_path, linktype, record, frame):
    path = write(tmp_path, pcap_header(linktype) + pcap_record(record))
    burst = Burst()
    with PcapReader(path) as r:
        assert r.fill(burst) == 1
    assert burst.frame(0) == frame
    # The synthetic header sits in the headroom: the payload starts where Ethernet would.
    assert burst.meta(0)["data_off"] == (128 if frame == b"" else 114)
    # Same in pcapng.
    ng = write(tmp_path, shb() + idb(linktype) + epb(record), "f.pcapng")
    assert read_all(ng) == [frame]


def test_burst_boundaries(tmp_path):
    frames = [frame_n(i, 60 + i % 40) for i in range(1000)]
    path = write(tmp_path, pcap_header() + b"".join(
        pcap_record(f, sec=i, frac=i) for i, f in enumerate(frames)))
    ours = read_frames(path, capacity=7, slot_size=2176)
    assert [f for f, _ in ours] == frames
    assert [t for _, t in ours] == [i * 1_000_000_000 + i * 1000 for i in range(1000)]
    with PcapReader(path) as r:
        burst = Burst(7)
        sizes = []
        while n := r.fill(burst, port_in=3):
            sizes.append(n)
            assert {burst.meta(i)["port_in"] for i in range(n)} == {3}
        assert sizes == [7] * 142 + [6] and r.packets_read == 1000
        assert r.offset == path.stat().st_size


# --- writer -------------------------------------------------------------------------------

TS = [1_700_000_000_000_000_000 + i * 1_234_567 for i in range(5)]
WFRAMES = [frame_n(i, 60 + 37 * i) for i in range(5)]


def stamped_burst(tmp_path):
    """A burst holding WFRAMES with TS as their ts_ns, filled the way replay fills it."""
    src = write(tmp_path, pcap_header(magic=0xA1B23C4D) + b"".join(
        pcap_record(f, t // 10**9, t % 10**9) for f, t in zip(WFRAMES, TS)), "src.pcap")
    burst = Burst()
    with PcapReader(src) as r:
        assert r.fill(burst) == 5
    return burst


@pytest.mark.parametrize("fmt, nsec", [("pcap", False), ("pcap", True),
                                       ("pcapng", False), ("pcapng", True)])
def test_round_trip(tmp_path, fmt, nsec):
    burst = stamped_burst(tmp_path)
    want_ts = TS if nsec else [t // 1000 * 1000 for t in TS]
    path = tmp_path / f"out.{fmt}"
    with PcapWriter(path, format=fmt, nsec=nsec) as w:
        assert w.write(burst) == 5
        w.write_frame(WFRAMES[0], ts_ns=TS[0])
        assert w.packets_written == 6
    ours = read_frames(path)
    assert [f for f, _ in ours] == WFRAMES + WFRAMES[:1]
    assert [t for _, t in ours] == want_ts + want_ts[:1]
    with PcapReader(path) as r:
        assert r.nsec == nsec and r.linktype == 1
    theirs = scapy_all.rdpcap(str(path))
    assert [p.original for p in theirs] == WFRAMES + WFRAMES[:1]
    assert [scapy_ts_ns(p) for p in theirs] == want_ts + want_ts[:1]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_write_verdict_filter(tmp_path, fmt):
    burst = stamped_burst(tmp_path)
    burst.verdicts[:] = [1, 3, 1, 0, 2]     # forward, drop, forward, pending, local
    path = tmp_path / "fwd"
    with PcapWriter(path, format=fmt) as w:
        assert w.write(burst, verdict=1) == 2
        assert w.write(burst, verdict=4) == 0
        assert w.packets_written == 2
    assert read_all(path) == [WFRAMES[0], WFRAMES[2]]
    with PcapWriter(path, format=fmt) as w:   # several verdicts: forwarded and local
        assert w.write(burst, verdict=(1, 2)) == 3
    assert read_all(path) == [WFRAMES[0], WFRAMES[2], WFRAMES[4]]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_write_snaplen(tmp_path, fmt):
    path = tmp_path / "cut"
    with PcapWriter(path, format=fmt, snaplen=64) as w:
        w.write_frame(WFRAMES[4])
    [pkt] = scapy_all.rdpcap(str(path))
    assert pkt.original == WFRAMES[4][:64] and pkt.wirelen == len(WFRAMES[4])


def test_writer_misuse(tmp_path):
    with pytest.raises(ValueError, match="format"):
        PcapWriter(tmp_path / "x", format="erf")
    with pytest.raises(ValueError, match="snaplen"):
        PcapWriter(tmp_path / "x", snaplen=0)
    w = PcapWriter(tmp_path / "x")
    with pytest.raises(TypeError):
        w.write_frame(60)
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(Burst())
    r = PcapReader(tmp_path / "x")
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r.fill(Burst())


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_mutated_files_fail_cleanly(tmp_path, fmt):
    """Random byte flips and cuts of a valid file: frames or a PcapError, never anything else."""
    import random
    rng = random.Random(1234)
    path = tmp_path / "src"
    with PcapWriter(path, format=fmt) as w:
        for i, f in enumerate(WFRAMES):
            w.write_frame(f, ts_ns=TS[i])
    good = path.read_bytes()
    burst = Burst(4)
    for _ in range(300):
        data = bytearray(good[:rng.randrange(1, len(good) + 1)])
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(data)
        try:
            with PcapReader(path) as r:
                while r.fill(burst):
                    assert all(len(f) <= burst.max_frame for f in burst.frames())
                assert r.offset == len(data)
        except PcapError as e:
            assert e.path == str(path) and 0 <= e.offset < len(data)
