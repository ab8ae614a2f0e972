"""Hindsight targets for multi-solution tasks: score the CE against the valid solution nearest to what the
model is already heading for, not against one arbitrary solution of the input.

An 8x8 N-Queens board with two given queens has several completions, a sparse graph dozens of
colourings. The paper's ELBO scores each training example against the one solution the generator happened
to keep; the prior then averages over all the solutions it could not tell apart (the mean of several
boards is no board) and the KL is spent naming an arbitrary one. With the target chosen in hindsight,
among the valid solutions, as the one the prior's own sample already predicts best, each trajectory is
trained to complete the solution its noise led it towards: the noise selects a mode, the core completes
it. That is the behaviour the service relies on (many trajectories, distinct answers).

``candidates`` draws up to ``cap`` valid solutions of an input from the family's exact solver (the
generator's own target first); ``nearest`` picks, per row, the candidate of highest log-likelihood under
given logits. Families with one solution per input (Sudoku) or no verifier (MNIST) return the target
alone, so hindsight is exact there and costs nothing.
"""

from __future__ import annotations

import random

import torch

from model.tasks.base import Instance, Task


def candidates(task: Task, x: torch.Tensor, y: torch.Tensor, rng: random.Random, cap: int) -> torch.Tensor:
    """LongTensor[C, L, G_out], 1 <= C <= cap: ``y`` first, then up to cap - 1 other valid solutions
    of ``x``, a random subset (drawn from ``rng``) when there are more."""
    if cap <= 1 or task.name not in ("nqueens", "graph_coloring"):
        return y.unsqueeze(0)
    if task.name == "nqueens":
        from model.tasks.nqueens import COL0, all_solutions, board_size, placement_tokens, queens_of  # noqa: PLC0415

        # From the cached full list (an empty 12x12 board has 14,200 solutions): uniform, and cheaper
        # than a fresh search. Tokens are built only for the sampled few.
        n = board_size(x)
        given = queens_of(x).items()
        own = tuple(int(t) - COL0 for t in y.reshape(-1)[:n].tolist())
        others = [s for s in all_solutions(n) if s != own and all(s[r] == c for r, c in given)]
        if len(others) > cap - 1:
            others = rng.sample(others, cap - 1)
        extra = [placement_tokens(n, dict(enumerate(s))) for s in others]
    else:
        # A pool a few times larger than cap, then a sample: the solver enumerates in lexicographic
        # order, and the first cap alone would all share their first nodes' colours.
        key = y.reshape(-1).tolist()
        pool = task.solve(Instance(task.name, x), cap * 8)
        extra = [t for t in pool if t.reshape(-1).tolist() != key]
        if len(extra) > cap - 1:
            extra = rng.sample(extra, cap - 1)
    return torch.stack([y, *extra])


def pad_candidates(sets: list[torch.Tensor], cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-example candidate sets into ([B, cap, L, G] padded by repeating the first, count [B])."""
    out = []
    for c in sets:
        if c.shape[0] < cap:
            c = torch.cat((c, c[:1].expand(cap - c.shape[0], *c.shape[1:])))
        out.append(c)
    counts = torch.tensor([c.shape[0] for c in sets], dtype=torch.long)
    return torch.stack(out), counts


def nearest(
    logits: torch.Tensor, cands: torch.Tensor, counts: torch.Tensor, answer: torch.Tensor
) -> torch.Tensor:
    """Per row, the candidate with the highest log-likelihood under ``logits`` [B, L, G, V] over the answer
    positions ``answer`` bool [B, L, G]: LongTensor [B, L, G]. ``cands`` [B, C, L, G], ``counts`` [B]."""
    logp = torch.log_softmax(logits.detach().float(), dim=-1)  # [B, L, G, V]
    b, c = cands.shape[:2]
    picked = logp.unsqueeze(1).expand(b, c, *logp.shape[1:]).gather(-1, cands.unsqueeze(-1)).squeeze(-1)
    score = (picked * answer.unsqueeze(1)).flatten(2).sum(-1)  # [B, C]
    real = torch.arange(c, device=cands.device).unsqueeze(0) < counts.to(cands.device).unsqueeze(1)
    best = score.masked_fill(~real, float("-inf")).argmax(1)  # [B]
    return cands[torch.arange(b, device=cands.device), best]
