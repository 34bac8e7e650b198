"""Route tables shaped like the Internet's, for tests and benchmarks of the LPM tables."""
from __future__ import annotations

import numpy as np

__all__ = ["global_v4", "global_v6"]


def global_v4(rng, n):
    """A global-table-like mix: ~60% /24, then /22, /23, /21, /20, /16 ..., ~2% /25-/32."""
    lens = np.array([8, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                     25, 26, 27, 28, 29, 30, 31, 32])
    w = np.array([0.01, 0.05, 0.1, 0.2, 1.3, 0.7, 1.2, 2.5, 4.5, 5.0, 9.5, 10.0, 61.0,
                  0.4, 0.4, 0.3, 0.3, 0.3, 0.2, 0.1, 0.4])
    keys = np.zeros(0, np.uint64)
    while keys.size < n:
        d = rng.choice(lens, 2 * n, p=w / w.sum()).astype(np.uint64)
        a = rng.integers(1 << 24, 224 << 24, 2 * n, dtype=np.uint64)
        a &= ~((np.uint64(1) << (np.uint64(32) - d)) - np.uint64(1))
        keys = np.unique(np.concatenate([keys, (a << np.uint64(6)) | d]))
    keys = rng.permutation(keys)[:n]
    return (keys >> np.uint64(6)).astype(np.uint32), (keys & np.uint64(63)).astype(np.uint8)


def global_v6(rng, n):
    """Mostly /48 and /32../44 inside ~30k provider /32s, some /56-/64, /128 host routes and
    a few short aggregates."""
    firsts = np.concatenate([[0x2001], np.arange(0x2400, 0x2410), np.arange(0x2600, 0x2610),
                             np.arange(0x2800, 0x2804), np.arange(0x2A00, 0x2A10),
                             np.arange(0x2C0F, 0x2C10)]).astype(np.uint64)
    alloc = (rng.choice(firsts, 30000) << np.uint64(48)) | (
        rng.integers(0, 1 << 16, 30000, dtype=np.uint64) << np.uint64(32))
    lens = np.array([16, 20, 28, 29, 32, 36, 40, 44, 48, 56, 60, 64, 128])
    w = np.array([0.1, 0.2, 0.5, 1.5, 18, 3, 5, 6, 55, 3, 1, 4, 2.7])
    d = rng.choice(lens, n * 2, p=w / w.sum()).astype(np.uint64)
    hi = rng.choice(alloc, n * 2) | rng.integers(0, 1 << 32, n * 2, dtype=np.uint64)
    lo = np.where(d == 128, rng.integers(0, 1 << 63, n * 2, dtype=np.uint64), np.uint64(0))
    hi &= ~((np.uint64(1) << (np.uint64(64) - np.minimum(d, np.uint64(64)))) - np.uint64(1))
    rows = np.unique(np.stack([hi, lo, d], axis=1), axis=0)
    rows = rng.permutation(rows)[:n]
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} distinct IPv6 prefixes drawn, {n} asked for")
    addrs = np.ascontiguousarray(rows[:, :2]).astype(">u8").view(np.uint8).reshape(-1, 16)
    return addrs, rows[:, 2].astype(np.uint8)
