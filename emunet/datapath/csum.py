"""One's complement sums for the offload path (emunet.datapath.gso, gso6). Pure.

Checksums use `int.from_bytes(...) % 0xFFFF`: 2**16 = 1 (mod 0xFFFF), so a big-endian number
is congruent to the sum of its 16-bit words, i.e. the RFC 1071 one's complement sum, at C
speed (measured 2.4x faster than summing a memoryview cast to 16-bit words).
"""

from __future__ import annotations


def ones(data: bytes | bytearray | memoryview) -> int:
    """A value congruent (mod 0xFFFF) to the RFC 1071 sum of `data` (zero-padded if odd)."""
    x = int.from_bytes(data, "big")
    return x << 8 if len(data) & 1 else x


# 2**k = 1 (mod 0xFFFF) for k a multiple of 16: adding a number's high and low k-bit halves
# keeps it congruent; four halvings (shift, mask, add: simple digit loops) before the one
# division measured 1.55 -> 0.86 us for a 1398-byte segment.
_HALVES = tuple((k, (1 << k) - 1) for k in (6144, 3072, 1536, 768))


def mod_ffff(y: int) -> int:
    """y % 0xFFFF, faster for numbers of a few thousand bits."""
    for k, m in _HALVES:
        y = (y >> k) + (y & m)
    return y % 0xFFFF


def fold(total: int) -> int:
    """The Internet checksum (~sum) of words summing to `total` (mod 0xFFFF)."""
    r = total % 0xFFFF
    return 0xFFFF - r if r else 0
