"""The conntrack state file (issue 12 item 5): private and atomic on write, never followed
through a symlink, validated entry by entry on read; a foreign, truncated or corrupted file is a
StateFileError and loads nothing."""
import os
import stat
import struct
import zlib

import pytest

from dataplane import conntrack as ct

S = 1_000_000_000
T0 = 1_000 * S
HEADER = struct.Struct("<8sHHHQI")
ENTRY, WIN = 128, 64
STATE_OFF = 40 + 40 + 8 + 16 + 8 + 4 + 4          # ct_entry.state


def table(n=3):
    t = ct.Conntrack(64)
    for k in range(n):
        i = t.create({"src": "10.0.0.1", "dst": "10.96.0.10", "sport": 1000 + k, "dport": 80,
                      "proto": 6},
                     {"src": "10.244.1.5", "dst": "10.0.0.1", "sport": 8080, "dport": 1000 + k,
                      "proto": 6}, now_ns=T0)
        t.update(i, ct.CT_DIR_ORIG, ct.TCP_SYN, 60, T0, seq=1, win=1000)
        t.update(i, ct.CT_DIR_REPLY, ct.TCP_SYN | ct.TCP_ACK, 60, T0, seq=9, ack=2, win=1000)
        t.update(i, ct.CT_DIR_ORIG, ct.TCP_ACK, 52, T0, seq=2, ack=10, win=1000)
    return t


def rewrite(path, mutate):
    """Change the records with mutate(bytearray) and fix the checksum, as an attacker could."""
    raw = bytearray(path.read_bytes())
    body = raw[HEADER.size:]
    mutate(body)
    magic, version, esize, wsize, count, _ = HEADER.unpack_from(raw)
    path.write_bytes(HEADER.pack(magic, version, esize, wsize, count, zlib.crc32(body)) + body)


def test_written_private_and_atomically(tmp_path):
    path = tmp_path / "ct.state"
    old = os.umask(0)
    try:
        assert table().save(path) == 3
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["ct.state"]      # no temp file left
    fresh = ct.Conntrack(64)
    assert fresh.restore(str(path), T0) == 3
    assert fresh.restore_report == {"loaded": 3, "expired": 0, "invalid": 0, "conflict": 0}


def test_a_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "ct.state"
    path.symlink_to(victim)
    table().save(path)
    assert victim.read_text() == "keep me"
    assert not path.is_symlink() and ct.Conntrack(64).restore(str(path), T0) == 3


@pytest.mark.parametrize("damage,message", [
    (lambda raw: b"", "not a conntrack state file"),
    (lambda raw: b"PK\x03\x04" + raw[4:], "not a conntrack state file"),
    (lambda raw: raw[:-1], "truncated"),
    (lambda raw: raw[:HEADER.size + 10], "truncated"),
    (lambda raw: raw + b"\0" * (ENTRY + WIN), "truncated"),
    (lambda raw: raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:], "checksum"),
    (lambda raw: raw[:8] + b"\x01\x00" + raw[10:], "version 1"),
])
def test_foreign_truncated_or_corrupted_files_load_nothing(tmp_path, damage, message):
    path = tmp_path / "ct.state"
    table().save(path)
    path.write_bytes(damage(path.read_bytes()))
    fresh = ct.Conntrack(64)
    with pytest.raises(ct.StateFileError, match=message):
        fresh.restore(str(path), T0)
    assert len(fresh) == 0


@pytest.mark.parametrize("field,value", [
    (STATE_OFF, 200),                          # TCP state out of range: was an OOB read
    (STATE_OFF + 1, 0x80),                     # unknown flag bit
    (STATE_OFF + 2, 0x3f),                     # last-packet class out of range
    (37, 5),                                   # orig family neither 4 nor 6
    (38, 1),                                   # tuple pad not zero
    (36, 17),                                  # orig proto differs from reply's
    (4, 1),                                    # IPv4 address with junk in the upper words
    (ENTRY + 16, 200),                         # window scale beyond 14
])
def test_bad_entries_are_skipped_and_counted(tmp_path, field, value):
    path = tmp_path / "ct.state"
    table().save(path)

    def poke(body):
        body[ENTRY + WIN + field] = value       # the second of three records

    rewrite(path, poke)
    fresh = ct.Conntrack(64)
    assert fresh.restore(str(path), T0) == 2
    assert fresh.restore_report["invalid"] == 1
    assert len(fresh.entries()) == 2


def test_far_future_expiry_is_capped(tmp_path):
    path = tmp_path / "ct.state"
    table(1).save(path)
    rewrite(path, lambda body: body.__setitem__(slice(80, 88), struct.pack("<Q", 1 << 63)))
    fresh = ct.Conntrack(64)
    assert fresh.restore(str(path), T0) == 1
    longest = max(ct.DEFAULT_TIMEOUTS.values()) * S
    assert fresh.entries()[0]["expires_ns"] == T0 + longest
