"""Graph colouring: solver counts, verifier (accepts solver output, rejects each violation), codec."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.tasks.base import TaskInputError
from model.tasks.coloring import TASK, colors_tokens, decode_graph, graph_tokens
from model.tasks.coloring_search import count_canonical

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def verify_one(y: torch.Tensor, x: torch.Tensor) -> bool:
    return bool(TASK.verify(y[None], x[None])[0])


def cycle(n: int, k: int) -> dict:
    return {"num_nodes": n, "num_colors": k, "edges": [[i, (i + 1) % n] for i in range(n)]}


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8])
def test_cycle_colouring_counts_match_the_chromatic_polynomial(n: int, k: int) -> None:
    instance = TASK.parse(cycle(n, k))
    assert len(TASK.solve(instance, cap=100_000)) == (k - 1) ** n + (-1) ** n * (k - 1)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, n=st.integers(1, 6), k=st.integers(2, 4), p=st.floats(0.0, 1.0), fixed=st.integers(0, 2))
def test_solver_matches_brute_force_and_verifier_accepts_all(
    seed: int, n: int, k: int, p: float, fixed: int
) -> None:
    rng = random.Random(seed)
    edges = [[u, v] for u in range(n) for v in range(u + 1, n) if rng.random() < p]
    pins = {str(v): rng.randrange(k) for v in rng.sample(range(n), min(fixed, n))}
    try:
        instance = TASK.parse({"num_nodes": n, "num_colors": k, "edges": edges, "fixed": pins})
    except TaskInputError:
        return  # adjacent nodes pinned to one colour: rejected up front (tested separately)
    brute = [
        cols
        for cols in itertools.product(range(k), repeat=n)
        if all(cols[u] != cols[v] for u, v in edges) and all(cols[int(v)] == c for v, c in pins.items())
    ]
    solutions = TASK.solve(instance, cap=10_000)
    assert sorted(TASK.format(instance, y)["colors"] for y in solutions) == sorted(list(c) for c in brute)
    if solutions:
        ys = torch.stack(solutions)
        assert TASK.verify(ys, instance.x.expand(len(ys), -1, -1)).all()
    keys = {TASK.canonical_key(instance.x, y) for y in solutions}
    if not pins:
        _, masks, _, _ = decode_graph(instance.x)
        assert len(keys) == count_canonical(masks, k)
    else:
        assert len(keys) == len(solutions)


def test_canonical_key_ignores_colour_names_only_without_fixed_colours() -> None:
    free = TASK.parse({"num_nodes": 3, "num_colors": 3, "edges": [[0, 1], [1, 2]]})
    a, b = colors_tokens([0, 1, 0]), colors_tokens([2, 0, 2])
    assert TASK.canonical_key(free.x, a) == TASK.canonical_key(free.x, b)
    assert TASK.canonical_key(free.x, a) != TASK.canonical_key(free.x, colors_tokens([0, 1, 2]))
    pinned = TASK.parse({"num_nodes": 3, "num_colors": 3, "edges": [[0, 1], [1, 2]], "fixed": {"1": 1}})
    c, d = colors_tokens([0, 1, 0]), colors_tokens([2, 1, 2])
    assert TASK.canonical_key(pinned.x, c) != TASK.canonical_key(pinned.x, d)


def base_pair() -> tuple[torch.Tensor, torch.Tensor]:
    body = {"num_nodes": 5, "num_colors": 3, "edges": [[0, 1], [1, 2], [2, 3], [3, 4]], "fixed": {"0": 2}}
    instance = TASK.parse(body)
    y = colors_tokens([2, 0, 1, 0, 1])
    assert verify_one(y, instance.x)
    return instance.x, y


def test_rejects_each_violation_kind() -> None:
    x, y = base_pair()
    conflict = colors_tokens([2, 0, 0, 1, 0])  # edge 1-2 monochromatic
    changed_fixed = colors_tokens([1, 0, 1, 0, 1])
    too_many_colours = colors_tokens([2, 0, 1, 3, 1])  # colour 3 with k = 3
    pad_on_node = y.clone()
    pad_on_node[4, 0] = 0
    token_on_absent = y.clone()
    token_on_absent[7, 0] = 1
    for bad in (conflict, changed_fixed, too_many_colours, pad_on_node, token_on_absent):
        assert not verify_one(bad, x)
    assert TASK.verify(torch.stack([y, conflict]), torch.stack([x, x])).tolist() == [True, False]


def test_rejects_malformed_input_graph() -> None:
    x, y = base_pair()
    asymmetric = x.clone()
    asymmetric[0, 4] = 2
    gap = x.clone()
    gap[2] = 0  # a hole in the node prefix
    bad_k = x.clone()
    bad_k[:5, 17] = 5
    for bad in (asymmetric, gap, bad_k):
        assert not verify_one(y, bad)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, fixed=st.integers(0, 3))
def test_augment_maps_solutions_to_solutions(seed: int, fixed: int) -> None:
    rng = random.Random(seed)
    n, k = rng.choice([6, 8, 10, 16]), rng.choice([3, 4])
    instance, y = TASK.generate(rng, num_nodes=n, num_colors=k, fixed=fixed)
    for _ in range(3):
        x2, y2 = TASK.augment(instance.x, y, rng)
        assert verify_one(y2, x2)
        assert int((x2[:, :16] == 2).sum()) == int((instance.x[:, :16] == 2).sum())  # same edge count
        assert int((x2[:, 16] >= 2).sum()) == fixed
    # every solution of x maps to a solution of x' under the same relabelling
    nodes, colors = list(range(instance.meta["num_nodes"])), list(range(instance.meta["num_colors"]))
    rng.shuffle(nodes)
    rng.shuffle(colors)
    for other in TASK.solve(instance, cap=30):
        x2, y2 = TASK.relabel(instance.x, other, nodes, colors)
        assert verify_one(y2, x2)


def test_generator_is_deterministic_and_multi_solution() -> None:
    a = TASK.generate(random.Random(11))
    b = TASK.generate(random.Random(11))
    assert torch.equal(a[0].x, b[0].x) and torch.equal(a[1], b[1])
    rng = random.Random(2)
    for _ in range(20):
        instance, y = TASK.generate(rng)
        assert instance.meta["num_nodes"] in (8, 10) and instance.meta["num_colors"] == 3
        assert instance.meta["canonical_colorings"] >= 2
        assert verify_one(y, instance.x)
    instance, _ = TASK.generate(rng, num_nodes=10, min_colorings=3, max_colorings=5)
    assert 3 <= len({TASK.canonical_key(instance.x, s) for s in TASK.solve(instance, 10_000)}) <= 5


def test_format_and_answer_mask() -> None:
    x, y = base_pair()
    instance = TASK.parse({"num_nodes": 5, "num_colors": 3, "edges": [], "fixed": {0: 2}})
    assert TASK.format(instance, y) == {"colors": [2, 0, 1, 0, 1]}
    assert TASK.answer_mask(x)[:, 0].tolist() == [True] * 5 + [False] * 11
    assert torch.equal(graph_tokens(5, [(0, 1), (1, 2), (2, 3), (3, 4)], 3, {0: 2}), x)


G4 = {"num_nodes": 4, "num_colors": 3, "edges": []}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"num_colors": 3, "edges": []}, "missing required field 'num_nodes'"),
        ({"num_nodes": 4, "num_colors": 3}, "missing required field 'edges'"),
        ({"num_nodes": 17, "num_colors": 3, "edges": []}, "'num_nodes' = 17 is out of range 1..16"),
        ({"num_nodes": 4, "num_colors": 5, "edges": []}, "'num_colors' = 5 is not supported: use 2..4"),
        ({"num_nodes": 4, "num_colors": 1, "edges": []}, "'num_colors' = 1 is not supported"),
        ({**G4, "edges": [[0, 1], [2, 4]]}, r"edges\[1\] = \[2, 4\]: node 4 is out of range 0..3"),
        ({**G4, "edges": [[-1, 2]]}, "node -1 is out of range"),
        ({**G4, "edges": [[2, 2]]}, r"edges\[0\] = \[2, 2\] is a self-loop"),
        ({**G4, "edges": [[0, "1"]]}, r"'edges\[0\]\[1\]' must be an integer"),
        ({**G4, "fixed": {"a": 1}}, "fixed: key 'a' is not a node id"),
        ({**G4, "fixed": {"9": 1}}, "fixed: node 9 is out of range 0..3"),
        ({**G4, "fixed": {"1": 3}}, "node 1 has colour 3, but colours are 0..2"),
        ({**G4, "fixed": {"1": 1, 1: 2}}, "node 1 is given twice"),
        ({**G4, "fixed": [1]}, "'fixed' must be an object"),
        (
            {**G4, "edges": [[1, 2]], "fixed": {"1": 0, "2": 0}},
            "nodes 1 and 2 share an edge and are both fixed to colour 0",
        ),
    ],
)
def test_parse_errors_name_the_problem(body: dict, message: str) -> None:
    with pytest.raises(TaskInputError, match=message):
        TASK.parse(body)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, node=st.integers(0, 15), token=st.integers(-1, 6), fixed=st.integers(0, 2))
def test_verdict_on_a_changed_colour_matches_the_solver(seed: int, node: int, token: int, fixed: int) -> None:
    """Changing one node's token gives a colouring the verifier accepts iff the solver enumerates it."""
    instance, y = TASK.generate(random.Random(seed), num_nodes=6, fixed=fixed)
    bad = y.clone()
    bad[node, 0] = token
    solutions = {bytes(s.reshape(-1).tolist()) for s in TASK.solve(instance, cap=10_000)}
    expected = token >= 0 and bytes(bad.reshape(-1).tolist()) in solutions
    assert verify_one(bad, instance.x) == expected


def test_training_target_relabels_free_colourings_and_keeps_pinned_ones() -> None:
    body = {"num_nodes": 5, "num_colors": 3, "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]]}
    free = TASK.parse(body)
    solutions = TASK.solve(free, cap=100)
    targets = [TASK.training_target(free.x, y) for y in solutions]
    for y, t in zip(solutions, targets, strict=True):
        assert verify_one(t, free.x)
        assert TASK.canonical_key(free.x, t) == TASK.canonical_key(free.x, y)
        colours = TASK.format(free, t)["colors"]
        assert colours[0] == 0 and max(colours[:2]) == 1  # colours appear in order 0, 1, 2 over nodes
    assert len({bytes(t.flatten().tolist()) for t in targets}) == len({TASK.canonical_key(free.x, y)
                                                                        for y in solutions})
    pinned = TASK.parse({**body, "fixed": {"0": 2}})
    for y in TASK.solve(pinned, cap=100):
        assert torch.equal(TASK.training_target(pinned.x, y), y)
