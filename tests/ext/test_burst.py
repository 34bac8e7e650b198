"""Burst: frames in and out of fixed slots, metadata reset, numpy views."""
import numpy as np
import pytest

from dataplane.burst import COUNTERS, DROP_REASONS, VERDICT, VERDICTS, Burst


def test_append_frame_and_meta():
    b = Burst(4)
    assert b.append(b"\x01" * 60, port_in=3) and len(b) == 1
    m = b.meta(0)
    assert (m["len"], m["port_in"], m["nexthop"], m["verdict"], m["reason"]) == \
        (60, 3, -1, "pending", None)
    assert b.frame(0) == b"\x01" * 60
    with pytest.raises(IndexError):
        b.frame(1)


def test_full_burst_and_oversize_frame():
    b = Burst(2)
    assert b.extend([b"a" * 60] * 5) == 2 and not b.append(b"b" * 60)
    with pytest.raises(ValueError):
        Burst(1).append(bytes(b.max_frame + 1))
    with pytest.raises(ValueError):
        Burst(0)


def test_views_and_names():
    b = Burst(3)
    b.extend([bytes(60)] * 3)
    b.verdicts[:] = [VERDICT["forward"], VERDICT["drop"], VERDICT["local"]]
    assert [b.meta(i)["verdict"] for i in range(3)] == ["forward", "drop", "local"]
    assert VERDICTS[VERDICT["reject"]] == "reject"
    assert DROP_REASONS[0] == "none" and "truncated" in DROP_REASONS and "rx" in COUNTERS


def test_copy_from_resets_processing_state():
    src = Burst(2)
    src.extend([b"x" * 64, b"y" * 70])
    src.verdicts[:] = [3, 3]
    dst = Burst(2)
    dst.copy_from(src)
    assert dst.frames() == src.frames() and list(dst.verdicts) == [0, 0]


def test_load_and_store_arrays():
    frames = np.arange(10 * 64, dtype=np.uint8).reshape(10, 64)
    b = Burst(4)
    assert b.load_array(frames, 8, port_in=1, ts_ns=5) == 2
    assert b.frames() == [frames[8].tobytes(), frames[9].tobytes()]
    assert b.meta(1)["port_in"] == 1 and b.meta(1)["ts_ns"] == 5
    out = np.full((3, 70), 0xEE, dtype=np.uint8)
    assert b.store_array(out, 1) == 2
    assert (out[1, :64] == frames[8]).all() and not out[1, 64:].any()
    assert (out[0] == 0xEE).all()
    with pytest.raises(ValueError):
        b.load_array(np.zeros((1, b.max_frame + 1), dtype=np.uint8))
