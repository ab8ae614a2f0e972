"""Graph colouring: up to 16 nodes, 2-4 colours, optional fixed colours for some nodes.

Tokens (L = 16 node slots; nodes 0..num_nodes-1 occupy the first slots, the rest are absent = PAD):
- input x[i] has 18 sub-tokens: sub j < 16 is the adjacency of node i to node j (0 absent node,
  1 no edge, 2 edge), sub 16 the fixed colour (0 absent node, 1 free, 2 + c fixed to colour c),
  sub 17 the number of colours k (token k; 0 for an absent node);
- output y[i] = 1 + colour of node i (0 for an absent node).

Deduplication (``canonical_key``): without fixed colours, colourings that differ only by a permutation of
the colour names count once: the key relabels colours by first appearance over nodes 0, 1, ... This is
how the paper builds its data sets and measures coverage ("keep canonical forms modulo colour
permutation"). With fixed colours the names matter (a fixed node pins its colour), so the key is the
labelled colouring. The exact solver still enumerates labelled colourings (so C_n with k colours has
(k-1)^n + (-1)^n (k-1) of them); ``count_canonical`` (model/tasks/coloring_search.py) counts modulo
permutation.

Generation: Erdos-Renyi graphs G(n, p) kept only when k-colourable with at least ``min_colorings``
canonical colourings (the paper keeps 3-colourable ER graphs with n = 8 or 10).
"""

from __future__ import annotations

import functools
import random
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from model.tasks.base import PAD, Instance, TaskInputError, TaskSpec
from model.tasks.coloring_search import canonical_colors, colorings
from model.tasks.datasets import GeneratedPairs
from model.tasks.fields import as_int, as_int_pairs, require
from model.tasks.tensors import check_batch, small_ints_key

MAX_NODES = 16
MIN_COLORS, MAX_COLORS = 2, 4
NO_EDGE, EDGE = 1, 2
FREE = 1  # sub-token 16 of a node without a fixed colour; 2 + c pins colour c
FIXED_SUB, K_SUB = MAX_NODES, MAX_NODES + 1
ENUM_CAP = 5000  # generate() counts canonical colourings up to this
SPEC = TaskSpec(seq_len=MAX_NODES, in_group=MAX_NODES + 2, in_vocab=6, out_group=1, out_vocab=5)


def graph_tokens(
    num_nodes: int, edges: list[tuple[int, int]], num_colors: int, fixed: dict[int, int] | None = None
) -> torch.Tensor:
    """LongTensor[16, 18] for a graph (edges already validated)."""
    x = torch.zeros(MAX_NODES, MAX_NODES + 2, dtype=torch.long)
    x[:num_nodes, :num_nodes] = NO_EDGE
    for u, v in edges:
        x[u, v] = x[v, u] = EDGE
    x[:num_nodes, FIXED_SUB] = FREE
    for node, colour in (fixed or {}).items():
        x[node, FIXED_SUB] = 2 + colour
    x[:num_nodes, K_SUB] = num_colors
    return x


def colors_tokens(colors: list[int] | tuple[int, ...]) -> torch.Tensor:
    """LongTensor[16, 1]: 1 + colour for the first len(colors) nodes, PAD after."""
    y = torch.zeros(MAX_NODES, 1, dtype=torch.long)
    if colors:
        y[: len(colors), 0] = torch.tensor(colors, dtype=torch.long) + 1
    return y


def decode_graph(x: torch.Tensor) -> tuple[int, list[int], int, dict[int, int]]:
    """(num_nodes, neighbour bitmask per node, num_colors, fixed colours) of one input x [16, 18]."""
    present = (x[:, FIXED_SUB] != PAD).tolist()
    n = sum(present)
    adj = (x[:n, :n] == EDGE).tolist()
    masks = [sum(1 << j for j in range(n) if adj[i][j]) for i in range(n)]
    k = int(x[0, K_SUB]) if n else 0
    fixed_tok = x[:n, FIXED_SUB].tolist()
    fixed = {i: t - 2 for i, t in enumerate(fixed_tok) if t >= 2}
    return n, masks, k, fixed


@functools.cache
def _node_index(device: torch.device) -> torch.Tensor:
    return torch.arange(MAX_NODES, device=device)


@functools.cache
def _legal_node_pairs(device: torch.device) -> torch.Tensor:
    """bool[56] over (fixed + 1) * 7 + (y + 1), tokens clamped (fixed to -1..6, y to -1..5)."""
    table = torch.zeros(56, dtype=torch.bool)
    legal = [(PAD, PAD)] + [(FREE, 1 + c) for c in range(MAX_COLORS)]
    legal += [(2 + c, 1 + c) for c in range(MAX_COLORS)]
    for f_tok, y_tok in legal:
        table[(f_tok + 1) * 7 + y_tok + 1] = True
    return table.to(device)


_EXAMPLE = {
    "task": "graph_coloring", "num_nodes": 5, "num_colors": 3,
    "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]], "fixed": {"0": 0}, "seed": 0,
}


NodeKey = Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]  # a node's number, as JSON object keys are


class GraphColoringRequest(BaseModel):
    """The /solve fields of a graph-colouring request (the service adds the common ones)."""

    task: Literal["graph_coloring"]
    num_nodes: StrictInt = Field(description="nodes 0..num_nodes-1, at most 16")
    edges: list[tuple[StrictInt, StrictInt]] = Field(description="undirected edges [u, v]")
    num_colors: StrictInt = Field(description="colours 0..num_colors-1, 2..4")
    fixed: dict[NodeKey, StrictInt] | None = Field(None, description="node -> colour it must have")
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})


# OpenAPI examples of POST /solve bodies
EXAMPLES: dict[str, dict[str, Any]] = {
    "graph_coloring": {
        "summary": "Graph colouring of a 5-cycle with 3 colours, node 0 fixed to colour 0",
        "value": _EXAMPLE,
    },
}


class GraphColoringTask(GeneratedPairs):
    name = "graph_coloring"
    spec = SPEC
    request_model = GraphColoringRequest
    openapi_examples = EXAMPLES

    # ---- codec -------------------------------------------------------------------------------------
    def parse(self, body: dict[str, Any]) -> Instance:
        n = as_int(require(body, "num_nodes"), "num_nodes", 1, MAX_NODES)
        k_raw = require(body, "num_colors")
        k = as_int(k_raw, "num_colors")
        if not MIN_COLORS <= k <= MAX_COLORS:
            raise TaskInputError(
                f"'num_colors' = {k} is not supported: use {MIN_COLORS}..{MAX_COLORS} colours", "num_colors"
            )
        edges: set[tuple[int, int]] = set()
        for i, (u, v) in enumerate(as_int_pairs(require(body, "edges"), "edges")):
            for node in (u, v):
                if not 0 <= node < n:
                    raise TaskInputError(
                        f"edges[{i}] = [{u}, {v}]: node {node} is out of range 0..{n - 1} (num_nodes = {n})",
                        "edges",
                    )
            if u == v:
                raise TaskInputError(f"edges[{i}] = [{u}, {v}] is a self-loop", "edges")
            edges.add((min(u, v), max(u, v)))
        fixed = self._parse_fixed(body.get("fixed"), n, k)
        for u, v in sorted(edges):
            if u in fixed and v in fixed and fixed[u] == fixed[v]:
                raise TaskInputError(
                    f"fixed colours conflict: nodes {u} and {v} share an edge and are both fixed to colour "
                    f"{fixed[u]}",
                    "fixed",
                )
        x = graph_tokens(n, sorted(edges), k, fixed)
        meta = {"num_nodes": n, "num_colors": k, "edges": sorted(edges), "fixed": fixed}
        return Instance(self.name, x, meta)

    @staticmethod
    def _parse_fixed(raw: Any, n: int, k: int) -> dict[int, int]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            kind = type(raw).__name__
            raise TaskInputError(f"'fixed' must be an object {{node: colour}}, got {kind}", "fixed")
        fixed: dict[int, int] = {}
        for key, colour in raw.items():
            node: Any = key
            if isinstance(key, str):
                try:
                    node = int(key)
                except ValueError:
                    raise TaskInputError(f"fixed: key {key!r} is not a node id", "fixed") from None
            node = as_int(node, "fixed node")
            if not 0 <= node < n:
                raise TaskInputError(
                    f"fixed: node {node} is out of range 0..{n - 1} (num_nodes = {n})", "fixed"
                )
            if node in fixed:
                raise TaskInputError(f"fixed: node {node} is given twice", "fixed")
            fixed[node] = as_int(colour, f"fixed[{node}]")
            if not 0 <= fixed[node] < k:
                raise TaskInputError(
                    f"fixed: node {node} has colour {fixed[node]}, but colours are 0..{k - 1} "
                    f"(num_colors = {k})",
                    "fixed",
                )
        return fixed

    def format(self, instance: Instance, y: torch.Tensor) -> dict[str, Any]:
        n = instance.meta.get("num_nodes") or int((instance.x[:, FIXED_SUB] != PAD).sum())
        return {"colors": [int(t) - 1 for t in y[:n, 0].tolist()]}

    def canonical_key(self, x: torch.Tensor, y: torch.Tensor) -> bytes:
        """Colours of the present nodes, relabelled by first appearance unless some colour is fixed."""
        present = x[:, FIXED_SUB] != PAD
        colors = y[present, 0].tolist()
        if not bool((x[:, FIXED_SUB] >= 2).any()):
            colors = [c + 1 for c in canonical_colors([c - 1 for c in colors])]
        return small_ints_key(colors)

    def answer_mask(self, x: torch.Tensor) -> torch.Tensor:
        return (x[..., FIXED_SUB] != PAD).unsqueeze(-1)

    # ---- verifier ----------------------------------------------------------------------------------
    def verify(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        check_batch(self.spec, y, x)
        yy = y[..., 0]  # [B, 16]
        fixed_tok = x[..., FIXED_SUB]
        present = fixed_tok != PAD
        n = present.sum(-1, keepdim=True)
        k = x[:, :1, K_SUB]  # [B, 1], from node 0
        # Per node, one lookup: absent -> PAD, free -> some colour, fixed c -> exactly colour c.
        code = (fixed_tok.clamp(-1, 6) + 1) * 7 + (yy.clamp(-1, 5) + 1)
        nodes_ok = (_legal_node_pairs(x.device)[code] & (yy <= k)).all(-1)
        # x must be well formed: nodes a prefix, one k in 2..4 on every present node, adjacency tokens
        # 1/2 between present nodes and PAD elsewhere, symmetric, no self-loops.
        adj = x[..., :MAX_NODES]
        pair = present[:, :, None] & present[:, None, :]
        graph_ok = (
            (present == (_node_index(x.device) < n)).all(-1)
            & (k[:, 0] >= MIN_COLORS)
            & (k[:, 0] <= MAX_COLORS)
            & (x[..., K_SUB] == k * present).all(-1)
            & (((adj != PAD) == pair) & (adj <= EDGE) & (adj == adj.transpose(1, 2))).flatten(1).all(-1)
            & (torch.diagonal(adj, dim1=1, dim2=2) != EDGE).all(-1)
        )
        conflict = ((adj == EDGE) & (yy[:, :, None] == yy[:, None, :])).flatten(1).any(-1)
        return nodes_ok & graph_ok & ~conflict

    # ---- solver ------------------------------------------------------------------------------------
    def solve(self, instance: Instance, cap: int) -> list[torch.Tensor]:
        """Up to ``cap`` proper colourings with labelled colours (permuted colourings are distinct)."""
        _, masks, k, fixed = decode_graph(instance.x)
        out: list[torch.Tensor] = []
        for colors in colorings(masks, k, fixed):
            if len(out) >= cap:
                break
            out.append(colors_tokens(colors))
        return out

    # ---- data --------------------------------------------------------------------------------------
    def generate(
        self,
        rng: random.Random,
        num_nodes: int | None = None,
        num_colors: int = 3,
        edge_prob: float | None = None,
        min_colorings: int = 2,
        max_colorings: int | None = None,
        fixed: int = 0,
        max_tries: int = 10_000,
    ) -> tuple[Instance, torch.Tensor]:
        """A random k-colourable Erdos-Renyi graph and one of its colourings.

        ``num_nodes``: default 8 or 10 (the paper's sizes). ``edge_prob``: default uniform in
        [0.25, 0.5] per graph. ``min_colorings``/``max_colorings``: bounds on the number of canonical
        colourings (modulo colour permutation). ``fixed``: how many nodes get their target colour pinned.
        """
        n = rng.choice((8, 10)) if num_nodes is None else num_nodes
        if not 1 <= n <= MAX_NODES or not MIN_COLORS <= num_colors <= MAX_COLORS:
            raise ValueError(
                f"need 1 <= num_nodes <= {MAX_NODES} and {MIN_COLORS} <= num_colors <= {MAX_COLORS}"
            )
        # Enumeration stops past max_colorings (or ENUM_CAP): sparse 16-node graphs have millions.
        cap = ENUM_CAP if max_colorings is None else max_colorings + 1
        for _ in range(max_tries):
            p = rng.uniform(0.25, 0.5) if edge_prob is None else edge_prob
            edges = [(u, v) for u in range(n) for v in range(u + 1, n) if rng.random() < p]
            masks = [0] * n
            for u, v in edges:
                masks[u] |= 1 << v
                masks[v] |= 1 << u
            canon: list[tuple[int, ...]] = []
            for colors in colorings(masks, num_colors, canonical=True):
                canon.append(colors)
                if len(canon) >= cap:
                    break
            count = len(canon)
            if count < min_colorings or (max_colorings is not None and count > max_colorings):
                continue
            base = canon[rng.randrange(count)]
            perm = list(range(num_colors))
            rng.shuffle(perm)
            target = [perm[c] for c in base]
            pinned = {v: target[v] for v in sorted(rng.sample(range(n), min(fixed, n)))}
            x = graph_tokens(n, edges, num_colors, pinned)
            meta = {
                "num_nodes": n,
                "num_colors": num_colors,
                "edges": edges,
                "fixed": pinned,
                "canonical_colorings": count,
            }
            return Instance(self.name, x, meta), colors_tokens(target)
        raise ValueError(
            f"no graph with {min_colorings}..{max_colorings} colourings found in {max_tries} tries"
        )

    def training_target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The trainer's target for (x, y): colours relabelled to appear in order 0, 1, 2, ... over nodes
        0, 1, ... when no node has a fixed colour. Colour names are arbitrary there, so a random labelled
        target makes every node's colour uniform: no network can predict it from x, and the training
        signal is noise. The canonical target is one per equivalence class, the classes
        ``canonical_key`` deduplicates by. With a fixed colour the labels are pinned: y is kept."""
        n_slots = x.shape[0]
        fixed = x[:, n_slots]
        if bool((fixed >= 2).any()):
            return y
        mapping: dict[int, int] = {}
        out = y.clone()
        for i in range(n_slots):
            tok = int(y[i, 0])
            if tok <= 0:
                continue
            mapping.setdefault(tok, 1 + len(mapping))
            out[i, 0] = mapping[tok]
        return out

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Relabel the nodes (within the first num_nodes slots) and permute the k colours."""
        n = int((x[:, FIXED_SUB] != PAD).sum())
        k = int(x[0, K_SUB]) if n else MIN_COLORS
        nodes = list(range(n))
        rng.shuffle(nodes)
        colors = list(range(k))
        rng.shuffle(colors)
        return self.relabel(x, y, nodes, colors)

    @staticmethod
    def relabel(
        x: torch.Tensor, y: torch.Tensor, nodes: list[int], colors: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Node i becomes node ``nodes[i]``; colour c becomes ``colors[c]`` (fixed colours too)."""
        n = len(nodes)
        order = list(range(MAX_NODES))
        for i, target in enumerate(nodes):
            order[target] = i  # new slot ``target`` takes old node i
        src = torch.tensor(order, dtype=torch.long)
        x2 = x[src]
        x2[:, :MAX_NODES] = x2[:, src]
        y2 = y[src].clone()
        # token 1 + c -> 1 + colors[c] on outputs, 2 + c -> 2 + colors[c] on fixed inputs.
        out_map = torch.tensor([PAD] + [1 + c for c in colors], dtype=torch.long)
        y2[:n, 0] = out_map[y2[:n, 0].clamp(0, len(colors))]
        fixed_map = torch.tensor([PAD, FREE] + [2 + c for c in colors], dtype=torch.long)
        x2[:n, FIXED_SUB] = fixed_map[x2[:n, FIXED_SUB].clamp(0, len(colors) + 1)]
        return x2, y2


TASK = GraphColoringTask()
