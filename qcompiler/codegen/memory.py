"""The workspace of a generated library: one arena, tensors placed by lifetime.

Each intermediate tensor lives from the node that writes it to the last node that reads it
(program outputs to the end). Tensors whose lifetimes overlap never share bytes; the
placement is greedy, largest first, at the lowest offset that fits. With `reuse=False`
every tensor keeps its own bytes (debug builds, where every tensor can be read back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

ALIGN = 64


def align(n: int, a: int = ALIGN) -> int:
    return -(-int(n) // a) * a


@dataclass
class Lifetime:
    name: str
    nbytes: int
    first: int
    last: int


def place(lifetimes: List[Lifetime], reuse: bool = True) -> Tuple[Dict[str, int], int]:
    """Offsets (bytes, ALIGN-aligned) of every tensor and the arena's size."""
    offsets: Dict[str, int] = {}
    if not reuse:
        at = 0
        for t in lifetimes:
            offsets[t.name] = at
            at += align(max(t.nbytes, 1))
        return offsets, at
    placed: List[Tuple[int, int, Lifetime]] = []  # (start, end, tensor)
    size = 0
    for t in sorted(lifetimes, key=lambda t: (-t.nbytes, t.first, t.name)):
        need = align(max(t.nbytes, 1))
        busy = sorted((s, e) for s, e, o in placed if not (o.last < t.first or t.last < o.first))
        at = 0
        for s, e in busy:
            if at + need <= s:
                break
            at = max(at, e)
        offsets[t.name] = at
        placed.append((at, at + need, t))
        size = max(size, at + need)
    return offsets, size
