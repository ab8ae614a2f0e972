"""DDP on CPU (gloo, 2 processes on 127.0.0.1): ranks see different data, yet keep identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.gram import tiny_config
from model.presets import TrainConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str, budget_s: float = 0.0) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from model.train import train

    tc = TrainConfig(
        name="graph_coloring", model=tiny_config("graph_coloring", n_sup=2), batch=4,
        max_steps=10**6 if budget_s else 2, time_budget_s=budget_s, decay_s=budget_s / 2,
        heldout_per_setting=1, ckpt_every_s=1e9, log_every=1, seed=0,
    )
    trainer = train(tc, Path(out_dir) / "run")
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    torch.save({"params": flat, "x": trainer.carry.x, "step": trainer.step}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_stay_in_sync_on_different_data(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(r0["x"], r1["x"]), "both ranks drew the same examples"
    torch.testing.assert_close(r0["params"], r1["params"])
    assert (tmp_path / "run" / "state.safetensors").exists()
    assert (tmp_path / "run" / "state.rank1.safetensors").exists()
    assert (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.timeout(120)
def test_a_time_budget_with_decay_ends_every_rank_at_one_step_with_the_same_weights(tmp_path: Path) -> None:
    """Ranks agree on the training time (the slowest rank's), so neither stops early and hangs the other,
    and the time-based learning-rate decay is the same on both."""
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), 1.5), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["step"] == r1["step"] > 2
    torch.testing.assert_close(r0["params"], r1["params"])
