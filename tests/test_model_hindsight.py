"""Hindsight targets: candidate solutions are valid and include the target; the nearest is the most likely."""

from __future__ import annotations

import random

import torch

from model import hindsight
from model.gram import tiny_model
from model.objective import GRAMObjective
from model.tasks.coloring import TASK as COLORING
from model.tasks.nqueens import TASK as NQUEENS


def test_nqueens_candidates_are_distinct_valid_completions_with_the_target_first() -> None:
    rng = random.Random(0)
    instance, y = NQUEENS.generate(rng, n=8, given=1)
    cands = hindsight.candidates(NQUEENS, instance.x, y, rng, cap=8)
    assert torch.equal(cands[0], y)
    assert 1 < cands.shape[0] <= 8
    xs = instance.x.unsqueeze(0).expand(cands.shape[0], -1, -1)
    assert bool(NQUEENS.verify(cands, xs).all())
    assert len({bytes(c.reshape(-1).tolist()) for c in cands}) == cands.shape[0]


def test_empty_board_candidates_sample_beyond_the_lexicographic_first() -> None:
    rng = random.Random(1)
    instance, y = NQUEENS.generate(rng, n=8, given=0)
    cands = hindsight.candidates(NQUEENS, instance.x, y, rng, cap=16)
    first_rows = {int(c[0, 0]) for c in cands}
    assert cands.shape[0] == 16 and len(first_rows) > 2


def test_coloring_candidates_are_valid() -> None:
    rng = random.Random(2)
    instance, y = COLORING.generate(rng, num_nodes=8, num_colors=3)
    cands = hindsight.candidates(COLORING, instance.x, y, rng, cap=12)
    xs = instance.x.unsqueeze(0).expand(cands.shape[0], -1, -1)
    assert cands.shape[0] == 12 and bool(COLORING.verify(cands, xs).all())


def test_nearest_picks_the_candidate_the_logits_favour_and_ignores_padding() -> None:
    cands = torch.tensor([[[[2], [3]], [[3], [2]], [[4], [4]]]])  # [B=1, C=3, L=2, G=1]
    logits = torch.full((1, 2, 1, 6), -5.0)
    logits[0, 0, 0, 4] = logits[0, 1, 0, 4] = 5.0  # favours the third candidate ...
    logits[0, 0, 0, 3] = logits[0, 1, 0, 2] = 4.0  # ... then the second
    answer = torch.ones(1, 2, 1, dtype=torch.bool)
    assert hindsight.nearest(logits, cands, torch.tensor([3]), answer).tolist() == [[[4], [4]]]
    assert hindsight.nearest(logits, cands, torch.tensor([2]), answer).tolist() == [[[3], [2]]]


def test_objective_scores_against_the_nearest_candidate() -> None:
    torch.manual_seed(0)
    model = tiny_model("nqueens", posterior="attn", kl_norm="answer").train()
    rng = random.Random(3)
    instance, y = NQUEENS.generate(rng, n=6, given=0)
    cands = hindsight.candidates(NQUEENS, instance.x, y, rng, cap=4)
    x = instance.x.unsqueeze(0)
    h, l = model.init_state(1)
    gen = torch.Generator().manual_seed(0)
    single = GRAMObjective(model, NQUEENS.verify)(x, y.unsqueeze(0), h, l, torch.Generator().manual_seed(0))
    padded, counts = hindsight.pad_candidates([cands], 4)
    multi = GRAMObjective(model, NQUEENS.verify)(x, y.unsqueeze(0), h, l, gen, padded, counts)
    # The min over candidates can only lower the prior's CE; the loss stays finite and differentiable.
    assert torch.isfinite(multi.loss) and multi.loss.requires_grad
    assert float(multi.token_acc) >= float(single.token_acc)
