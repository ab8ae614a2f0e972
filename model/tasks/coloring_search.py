"""Exact graph-colouring search on neighbour bitmasks (node i's neighbours are the set bits of masks[i]):
the solver, the generator's colouring counts and the canonical (colour-permutation-free) relabelling.
"""

from __future__ import annotations

from collections.abc import Iterator


def colorings(
    masks: list[int], k: int, fixed: dict[int, int] | None = None, canonical: bool = False
) -> Iterator[tuple[int, ...]]:
    """Proper colourings (colour per node) by backtracking in node order.

    ``canonical``: only colourings whose colours appear in order 0, 1, 2, ... over the nodes (one per
    class modulo colour permutation); only meaningful without fixed colours.
    """
    n = len(masks)
    fixed = fixed or {}
    colors = [-1] * n

    def assign(node: int, used_max: int) -> Iterator[tuple[int, ...]]:
        if node == n:
            yield tuple(colors)
            return
        taken = 0
        nbrs = masks[node]
        for j in range(node):
            if nbrs >> j & 1:
                taken |= 1 << colors[j]
        if node in fixed:
            options: range | list[int] = [fixed[node]]
        elif canonical:
            options = range(min(k, used_max + 2))
        else:
            options = range(k)
        for c in options:
            if taken >> c & 1:
                continue
            # A later fixed neighbour must still be able to take its colour.
            if any(nbrs >> j & 1 and fixed[j] == c for j in fixed if j > node):
                continue
            colors[node] = c
            yield from assign(node + 1, max(used_max, c))
        colors[node] = -1

    yield from assign(0, -1)


def count_canonical(masks: list[int], k: int, cap: int | None = None) -> int:
    """Number of colourings modulo colour permutation (stops at ``cap``)."""
    count = 0
    for _ in colorings(masks, k, canonical=True):
        count += 1
        if cap is not None and count >= cap:
            break
    return count


def canonical_colors(colors: list[int]) -> list[int]:
    """Relabel colours by first appearance: [2, 0, 2, 1] -> [0, 1, 0, 2]."""
    relabel: dict[int, int] = {}
    return [relabel.setdefault(c, len(relabel)) for c in colors]
